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
``snapshots.E013``  an ``Encrypt`` layer has neither recipients nor identities
``snapshots.E014``  an ``Encrypt`` layer was given a malformed key (the
                    message names its position, never the key)
``snapshots.E015``  an identity or recipients file of ``Encrypt`` is missing
                    or cannot be read
``snapshots.W001``  the stack has no ``Checksum`` layer
``snapshots.W002``  the storage cannot be reached now: a local location that
                    is not a directory, not writable, or whose parent is
                    missing (an unmounted disk), or a backend that failed to
                    reach its storage while being built
``snapshots.W003``  an ``Encrypt`` layer holds identities only: the stack
                    restores backups but cannot write them
``snapshots.W004``  an identity file (a secret key) may be read or changed by
                    users other than its owner (its mode has bits in ``0o077``)
``snapshots.W005``  ``Compress`` sits below ``Encrypt``, so it compresses
                    ciphertext, for no gain
``snapshots.E101``  (``check --deploy`` only) a write, read, verify, list and
                    delete round trip on the storage failed
==================  ===========================================================

Only the deploy check performs I/O on the storage: it writes a small probe
object under ``.snapshots-probe/``, reads it back and deletes it.  The
others only look: ``snapshots.W002`` stats a local location and its parent,
``snapshots.W004`` the identity files, and nothing is created.  No message
quotes a key.  A storage that cannot be reached is a warning, not an
error, so that an unmounted backup disk never stops ``migrate`` or any other
management command.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Warning, register

from django_snapshots._inspect import find_checksum_layer, layers, probe_storage, short_repr
from django_snapshots.conf import (
    UNREACHABLE_HINT,
    InvalidStorageSettingError,
    KeyFile,
    get_storage,
    identity_files,
)
from django_snapshots.storage.django_storage import DjangoStorageBackend
from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.protocols import SnapshotStorage
from django_snapshots.storage.wrappers.compress import Compress
from django_snapshots.storage.wrappers.encrypt import Encrypt

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
    messages.extend(_order_problems(storage))
    for key_file in identity_files():
        messages.extend(_identity_file_problems(key_file))
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
    elif isinstance(layer, Encrypt):
        if not layer._self_recipients:
            return [
                Warning(
                    f"the Encrypt layer {short_repr(layer)} holds identities only: the stack "
                    "can read and restore backups, but every write fails",
                    hint='Give it "recipients" (the public keys, age1...) or "recipients_file" '
                    "to write backups; on a machine that only restores, silence "
                    "snapshots.W003.",
                    id="snapshots.W003",
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


def _order_problems(storage: SnapshotStorage) -> list[CheckMessage]:
    """What is wrong with the order of the layers of *storage*."""
    encrypt = None
    for layer in layers(storage):
        if isinstance(layer, Encrypt):
            encrypt = encrypt or layer
        elif isinstance(layer, Compress) and encrypt is not None:
            return [
                Warning(
                    "Compress sits below Encrypt in the storage stack, so it compresses "
                    "ciphertext, which does not compress: objects are stored as large as "
                    "without it, and the time is spent for nothing",
                    hint="List Compress above Encrypt in WRAPPERS (outermost first), so that "
                    "the stack is Compress(Encrypt(...)): data is compressed, then encrypted.",
                    id="snapshots.W005",
                )
            ]
    return []


def _identity_file_problems(key_file: KeyFile) -> list[CheckMessage]:
    """Warn when other users than its owner may read or change an identity
    file; a file that went away since the stack was built is not this
    check's business."""
    try:
        mode = stat.S_IMODE(os.stat(key_file.path).st_mode)
    except OSError:
        return []
    if not mode & 0o077:
        return []
    return [
        Warning(
            f"{key_file.where}: the identity file {os.fspath(key_file.path)!r} holds a secret "
            f"key, and users other than its owner may read or change it (mode {mode:04o})",
            hint=f"Restrict it to its owner: chmod 600 {shlex.quote(os.fspath(key_file.path))}",
            id="snapshots.W004",
        )
    ]


def _selected(app_configs: Sequence[AppConfig] | None) -> bool:
    return app_configs is None or any(c.name == "django_snapshots" for c in app_configs)
