"""System checks for the ``SNAPSHOTS`` setting, run by ``manage.py check``.

Each misconfiguration that :func:`~django_snapshots.get_storage` would raise
is reported as an error with its own id and a hint, without touching the
storage (so without any network access):

==================  ===========================================================
``snapshots.E001``  ``SNAPSHOTS`` is not a dict, or has an unknown key
``snapshots.E002``  ``SNAPSHOTS["STORAGE"]`` is neither a storage nor a dict
``snapshots.E003``  the ``STORAGE`` dict is malformed (keys, ``BACKEND``,
                    ``OPTIONS`` or ``WRAPPERS`` of the wrong type)
``snapshots.E004``  ``BACKEND`` cannot be imported
``snapshots.E005``  ``BACKEND`` is not a storage class
``snapshots.E006``  ``BACKEND`` rejected its ``OPTIONS``
``snapshots.E007``  a ``WRAPPERS`` entry is malformed
``snapshots.E008``  a wrapper cannot be imported
``snapshots.E009``  a wrapper is not a storage wrapper
``snapshots.E010``  a wrapper rejected its ``OPTIONS``
``snapshots.E011``  an invalid key or prefix in ``OPTIONS`` (``Prefix``)
``snapshots.E012``  a ``DjangoStorageBackend`` names an alias that
                    ``settings.STORAGES`` does not define
``snapshots.W001``  the stack has no ``Checksum`` layer
``snapshots.W002``  the storage cannot be reached now: a local location that
                    is not a directory, not writable, or whose parent is
                    missing (an unmounted disk), or a backend that failed to
                    reach its storage while being built
``snapshots.E101``  (``check --deploy`` only) a write, read, verify, list and
                    delete round trip on the storage failed
==================  ===========================================================

Only the deploy check performs I/O on the storage: it writes a small probe
object under ``.snapshots-probe/``, reads it back and deletes it.  The
others only look: ``snapshots.W002`` stats a local location and its parent,
and creates nothing.  A storage that cannot be reached is a warning, not an
error, so that an unmounted backup disk never stops ``migrate`` or any other
management command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Warning, register

from django_snapshots._inspect import find_checksum_layer, layers, probe_storage, short_repr
from django_snapshots.conf import UNREACHABLE_HINT, InvalidStorageSettingError, get_storage
from django_snapshots.storage.django_storage import DjangoStorageBackend
from django_snapshots.storage.local import LocalFileSystemBackend

__all__ = ["check_storage_round_trip", "check_storage_setting"]

_TAG = "snapshots"


@register(_TAG)
def check_storage_setting(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Report a misconfigured ``SNAPSHOTS`` setting, and a stack without a
    ``Checksum`` layer, without any I/O.

    .. versionadded:: 0.1
    """
    if not _selected(app_configs):
        return []
    try:
        storage = get_storage()
    except InvalidStorageSettingError as exc:
        level = Warning if exc.id.startswith("snapshots.W") else Error
        return [level(exc.message, hint=exc.hint, id=exc.id)]
    messages: list[CheckMessage] = []
    for layer in layers(storage):
        messages.extend(_layer_problems(layer))
    if find_checksum_layer(storage) is None:
        messages.append(
            Warning(
                f"the storage {short_repr(storage)} has no Checksum layer: corrupt backups "
                "would be read back without an error, and `snapshots verify` cannot run",
                hint="Add django_snapshots.storage.Checksum to the stack, or silence "
                "snapshots.W001 if integrity is checked elsewhere.",
                id="snapshots.W001",
            )
        )
    return messages


@register(_TAG, deploy=True)
def check_storage_round_trip(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Write, read back, verify, list and delete a probe object through the
    configured stack (``manage.py check --deploy`` only).

    .. versionadded:: 0.1
    """
    if not _selected(app_configs):
        return []
    try:
        storage = get_storage()
    except InvalidStorageSettingError:
        return []  # reported by check_storage_setting
    with contextlib.closing(probe_storage(storage)) as steps:
        failed = next((step for step in steps if step.error), None)
    if failed is None:
        return []
    return [
        Error(
            f"the storage {short_repr(storage)} failed a round trip at {failed.name}: "
            f"{failed.error}",
            hint="Run `manage.py snapshots check` for details; check the storage's location, "
            "credentials and permissions.",
            id="snapshots.E101",
        )
    ]


def _layer_problems(layer: object) -> list[CheckMessage]:
    """What is wrong with one layer of the stack, found by looking (``stat``,
    the settings), never by using the storage."""
    if isinstance(layer, LocalFileSystemBackend):
        reason = layer._unreachable()
        if reason is not None:
            return [
                Warning(
                    f"the storage location {layer.location!r} cannot be used now: {reason}",
                    hint=UNREACHABLE_HINT,
                    id="snapshots.W002",
                )
            ]
    elif isinstance(layer, DjangoStorageBackend):
        problem = layer._alias_problem()
        if problem is not None:
            return [
                Error(
                    f"{layer!r}: {problem}",
                    hint="Give DjangoStorageBackend the alias of a storage defined in "
                    "settings.STORAGES (check the spelling), or add it there.",
                    id="snapshots.E012",
                )
            ]
    return []


def _selected(app_configs: Sequence[AppConfig] | None) -> bool:
    return app_configs is None or any(c.name == "django_snapshots" for c in app_configs)
