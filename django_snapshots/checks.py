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
``snapshots.W001``  the stack has no ``Checksum`` layer
``snapshots.E101``  (``check --deploy`` only) a write, read, verify, list and
                    delete round trip on the storage failed
==================  ===========================================================

Only the deploy check performs I/O: it writes a small probe object under
``.snapshots-probe/``, reads it back and deletes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Warning, register

from django_snapshots._inspect import find_checksum_layer, probe_storage, short_repr
from django_snapshots.conf import InvalidStorageSettingError, get_storage

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
        return [Error(exc.message, hint=exc.hint, id=exc.id)]
    if find_checksum_layer(storage) is None:
        return [
            Warning(
                f"the storage {short_repr(storage)} has no Checksum layer: corrupt backups "
                "would be read back without an error, and `snapshots verify` cannot run",
                hint="Add django_snapshots.storage.Checksum to the stack, or silence "
                "snapshots.W001 if integrity is checked elsewhere.",
                id="snapshots.W001",
            )
        ]
    return []


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


def _selected(app_configs: Sequence[AppConfig] | None) -> bool:
    return app_configs is None or any(c.name == "django_snapshots" for c in app_configs)
