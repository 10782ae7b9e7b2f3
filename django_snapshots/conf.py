"""Turn the ``SNAPSHOTS["STORAGE"]`` setting into a storage stack.

The setting is either a storage object (any stack, built in ``settings.py``)
or data in the shape of Django's ``STORAGES``, with the wrappers listed
outermost first, as the stack reads:

.. code-block:: python

    SNAPSHOTS = {
        "STORAGE": {
            "BACKEND": "django_snapshots.storage.LocalFileSystemBackend",
            "OPTIONS": {"location": "/srv/snapshots"},
            "WRAPPERS": [
                "django_snapshots.storage.Logging",
                {"WRAPPER": "django_snapshots.storage.Retry", "OPTIONS": {"attempts": 5}},
                "django_snapshots.storage.Checksum",
            ],
        }
    }

Without the setting, the stack is ``Checksum(LocalFileSystemBackend(<BASE_DIR
or the current directory>/snapshots))``.  :func:`get_storage` builds the stack
once and rebuilds it when the setting changes; a misconfiguration raises
:class:`InvalidStorageSettingError`, which names the entry at fault and how
to fix it, and which the system checks report as ``snapshots.E0xx`` (or as
the warning ``snapshots.W002`` when the backend could not reach its storage
while being built).  A wrapper in ``WRAPPERS`` may be given as its class, and
a relative ``location`` of a ``LocalFileSystemBackend`` is resolved against
``BASE_DIR``.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, TypeGuard

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from django_snapshots.exceptions import (
    SnapshotError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage.protocols import SnapshotStorage

__all__ = ["DEFAULT_DIRECTORY", "InvalidStorageSettingError", "get_storage"]

#: Name of the directory, under ``BASE_DIR`` or the current directory, that
#: the default storage uses.
DEFAULT_DIRECTORY = "snapshots"

_SETTING = 'SNAPSHOTS["STORAGE"]'
_SNAPSHOTS_KEYS = frozenset({"STORAGE"})
_STORAGE_KEYS = frozenset({"BACKEND", "OPTIONS", "WRAPPERS"})
_WRAPPER_KEYS = frozenset({"WRAPPER", "OPTIONS"})
_EXAMPLE_BACKEND = "django_snapshots.storage.LocalFileSystemBackend"
_EXAMPLE_WRAPPER = "django_snapshots.storage.Checksum"


class InvalidStorageSettingError(SnapshotError, ImproperlyConfigured):
    """The ``SNAPSHOTS`` setting does not describe a usable storage stack.

    ``str(error)`` names the entry at fault and says how to fix it; *id* is
    the system check id that reports the same problem (``"snapshots.E003"``)
    and *hint* the fix alone.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, *, hint: str, id: str) -> None:
        super().__init__(f"{message}. {hint}")
        self.message = message
        self.hint = hint
        self.id = id


def get_storage() -> SnapshotStorage:
    """Return the storage stack configured by ``SNAPSHOTS["STORAGE"]``.

    The stack is built on the first call and shared afterwards (by every
    thread); it is rebuilt after the ``SNAPSHOTS`` or ``BASE_DIR`` setting
    changes (``override_settings`` in tests, for instance)::

        >>> from django.test import override_settings
        >>> from django_snapshots.storage import MemoryBackend
        >>> with override_settings(SNAPSHOTS={"STORAGE": MemoryBackend()}):
        ...     get_storage()
        MemoryBackend()

    Raises :class:`InvalidStorageSettingError` (an ``ImproperlyConfigured``)
    when the setting is wrong, every time it is called until it is fixed.

    .. versionadded:: 0.1
    """
    storage = _cache.storage
    if storage is not None:
        return storage
    with _cache.lock:
        if _cache.storage is None:
            _cache.storage = _build_from_settings()
        return _cache.storage


class _Cache:
    def __init__(self) -> None:
        # Reentrant: a backend whose constructor calls get_storage() fails loudly
        # (recursion) instead of deadlocking.
        self.lock = threading.RLock()
        self.storage: SnapshotStorage | None = None


_cache = _Cache()


def _reset_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    # BASE_DIR decides where the default storage lives.
    if setting in ("SNAPSHOTS", "BASE_DIR"):
        with _cache.lock:
            _cache.storage = None


# Connected here rather than in the app's ready(): a cached stack must follow
# the setting even in a project that calls get_storage() without installing
# the app.
setting_changed.connect(_reset_on_setting_change, dispatch_uid="django_snapshots.conf")


def _build_from_settings() -> SnapshotStorage:
    snapshots = getattr(settings, "SNAPSHOTS", None)
    if snapshots is None:
        return _default_storage()
    if not isinstance(snapshots, Mapping):
        raise InvalidStorageSettingError(
            f"SNAPSHOTS must be a dict, not {type(snapshots).__name__}",
            hint='Write SNAPSHOTS = {"STORAGE": ...}, or remove SNAPSHOTS to use the default.',
            id="snapshots.E001",
        )
    unknown = sorted(map(repr, set(snapshots) - _SNAPSHOTS_KEYS))
    if unknown:
        raise InvalidStorageSettingError(
            f"SNAPSHOTS has unknown key(s) {', '.join(unknown)}",
            hint='The only key is "STORAGE"; check the spelling.',
            id="snapshots.E001",
        )
    if "STORAGE" not in snapshots:
        return _default_storage()
    return _build_storage(snapshots["STORAGE"])


def _default_storage() -> SnapshotStorage:
    from django_snapshots.storage import Checksum, LocalFileSystemBackend

    base = getattr(settings, "BASE_DIR", None) or Path.cwd()
    return Checksum(LocalFileSystemBackend(Path(base) / DEFAULT_DIRECTORY))


def _build_storage(value: object) -> SnapshotStorage:
    if _is_storage(value):
        return value
    if isinstance(value, type):
        raise InvalidStorageSettingError(
            f"{_SETTING} is the class {value.__name__}, not a storage object",
            hint=f"Create the storage, e.g. {value.__name__}(...), or give data such as "
            f'{{"BACKEND": "{value.__module__}.{value.__qualname__}", "OPTIONS": {{...}}}}.',
            id="snapshots.E002",
        )
    if not isinstance(value, Mapping):
        raise InvalidStorageSettingError(
            f"{_SETTING} must be a storage (read, write, list, delete, exists) or a dict, "
            f"not a {type(value).__name__!r} object",
            hint=f'Give a storage object, or a dict such as {{"BACKEND": "{_EXAMPLE_BACKEND}", '
            '"OPTIONS": {...}}.',
            id="snapshots.E002",
        )
    unknown = sorted(map(repr, set(value) - _STORAGE_KEYS))
    if unknown:
        raise InvalidStorageSettingError(
            f"{_SETTING} has unknown key(s) {', '.join(unknown)}",
            hint='The keys are "BACKEND", "OPTIONS" and "WRAPPERS"; check the spelling.',
            id="snapshots.E003",
        )
    backend = value.get("BACKEND")
    if not isinstance(backend, str) or not backend:
        raise InvalidStorageSettingError(
            f'{_SETTING}["BACKEND"] must be the dotted path of a storage class, '
            f"not {_describe(backend)}",
            hint=f'For example "BACKEND": "{_EXAMPLE_BACKEND}".',
            id="snapshots.E003",
        )
    options = _options(value, f'{_SETTING}["OPTIONS"]', id="snapshots.E003")
    wrappers = value.get("WRAPPERS", [])
    if not isinstance(wrappers, (list, tuple)):
        raise InvalidStorageSettingError(
            f'{_SETTING}["WRAPPERS"] must be a list, not {type(wrappers).__name__}',
            hint=f'List the wrappers outermost first, e.g. "WRAPPERS": ["{_EXAMPLE_WRAPPER}"].',
            id="snapshots.E003",
        )
    entries = [_wrapper_entry(entry, index) for index, entry in enumerate(wrappers)]

    storage = _construct(
        backend,
        options,
        where=f'{_SETTING}["BACKEND"]',
        args=(),
        kind="backend",
        ids=("snapshots.E004", "snapshots.E005", "snapshots.E006"),
    )
    # Listed outermost first, so the innermost wrapper is applied first.
    for index, (path, wrapper_options) in reversed(list(enumerate(entries))):
        storage = _construct(
            path,
            wrapper_options,
            where=f'{_SETTING}["WRAPPERS"][{index}]',
            args=(storage,),
            kind="wrapper",
            ids=("snapshots.E008", "snapshots.E009", "snapshots.E010"),
        )
    return storage


def _wrapper_entry(entry: object, index: int) -> tuple[str | type, Mapping[str, Any]]:
    where = f'{_SETTING}["WRAPPERS"][{index}]'
    if _is_wrapper_name(entry):
        return entry, {}
    if isinstance(entry, Mapping):
        unknown = sorted(map(repr, set(entry) - _WRAPPER_KEYS))
        path = entry.get("WRAPPER")
        if not unknown and _is_wrapper_name(path):
            return path, _options(entry, f'{where}["OPTIONS"]', id="snapshots.E007")
        problem = (
            f"has unknown key(s) {', '.join(unknown)}"
            if unknown
            else 'needs "WRAPPER", the dotted path of a wrapper class or the class, '
            f"not {_describe(path)}"
        )
    elif isinstance(entry, str):
        problem = "is an empty string, not the dotted path of a wrapper class"
    else:
        problem = (
            "must be a dotted path, a wrapper class or a dict, "
            f"not a {type(entry).__name__!r} object"
        )
    raise InvalidStorageSettingError(
        f"{where} {problem}",
        hint=f'Write a wrapper as a dotted path ("{_EXAMPLE_WRAPPER}"), as the class itself, '
        f'or as {{"WRAPPER": "{_EXAMPLE_WRAPPER}", "OPTIONS": {{...}}}}.',
        id="snapshots.E007",
    )


def _is_wrapper_name(value: object) -> TypeGuard[str | type]:
    return isinstance(value, type) or (isinstance(value, str) and bool(value))


def _options(entry: Mapping[str, Any], where: str, *, id: str) -> Mapping[str, Any]:
    options = entry.get("OPTIONS", {})
    hint = 'For example "OPTIONS": {"location": "/srv/snapshots"}.'
    if not isinstance(options, Mapping):
        raise InvalidStorageSettingError(
            f"{where} must be a dict of keyword arguments, not {type(options).__name__}",
            hint=hint,
            id=id,
        )
    for position, name in enumerate(options, 1):
        if not isinstance(name, str):
            # The type and the position, never the name itself: a misplaced
            # value (a password given as a key) would be echoed.
            raise InvalidStorageSettingError(
                f"{where} has an option name of type {type(name).__name__} (entry {position}); "
                "option names are keyword argument names and must be strings",
                hint=hint,
                id=id,
            )
    return options


def _construct(
    path: str | type,
    options: Mapping[str, Any],
    *,
    where: str,
    args: tuple[SnapshotStorage, ...],
    kind: str,
    ids: tuple[str, str, str],
) -> SnapshotStorage:
    import_id, type_id, call_id = ids
    if isinstance(path, type):
        factory: object = path
        path = f"{path.__module__}.{path.__qualname__}"
    else:
        try:
            factory = import_string(path)
        except ImportError as exc:
            raise InvalidStorageSettingError(
                f"{where}: cannot import {path!r} ({exc})",
                hint=f"Give the full dotted path of a {kind} class and check that its package "
                "is installed.",
                id=import_id,
            ) from exc
    if not callable(factory):
        raise InvalidStorageSettingError(
            f"{where}: {path!r} names a {type(factory).__name__!r} object, not a {kind} class",
            hint=f"Give the dotted path of a {kind} class.",
            id=type_id,
        )
    if kind == "backend" and _is_wrapper_class(factory):
        raise InvalidStorageSettingError(
            f"{where}: {path!r} is a wrapper class, not a backend; a wrapper goes in "
            '"WRAPPERS", over the backend that stores the objects',
            hint=f'For example "BACKEND": "{_EXAMPLE_BACKEND}", "WRAPPERS": ["{path}"].',
            id=type_id,
        )
    options = _resolve_location(factory, options)
    try:
        storage = factory(*args, **options)
    except SnapshotStoragePathError as exc:
        raise InvalidStorageSettingError(
            f"{where}: {path!r} rejected its OPTIONS: {exc}",
            hint="Fix the key or prefix in OPTIONS to follow the key rules "
            "(segments separated by '/', no '..', no leading '/').",
            id="snapshots.E011",
        ) from exc
    except Exception as exc:
        raise _construction_error(
            exc, factory, path, options, where=where, args=args, kind=kind, ids=(type_id, call_id)
        ) from exc
    if not _is_storage(storage):
        raise InvalidStorageSettingError(
            f"{where}: {path!r} built a {type(storage).__name__}, which is not a storage "
            "(read, write, list, delete, exists)",
            hint=f"Give the dotted path of a {kind} class of django_snapshots.storage or of "
            "your own that implements the SnapshotStorage protocol.",
            id=type_id,
        )
    return storage


def _construction_error(
    exc: Exception,
    factory: Any,
    path: str,
    options: Mapping[str, Any],
    *,
    where: str,
    args: tuple[SnapshotStorage, ...],
    kind: str,
    ids: tuple[str, str],
) -> InvalidStorageSettingError:
    """Say why *factory* could not be built: options it does not take, a
    wrapper stacked where it refuses to be, a storage that cannot be reached
    now, or values it rejected.  The message never echoes OPTIONS (they may
    hold credentials); the class's own error names the option at fault."""
    type_id, call_id = ids
    error = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (SnapshotStorageError, OSError)):
        # Not the configuration: the place it names is not there now (an
        # unmounted disk, a network down).  A warning, so that a missing mount
        # does not stop every management command.
        return InvalidStorageSettingError(
            f"{where}: {path!r} cannot reach its storage now: {error}",
            hint=UNREACHABLE_HINT,
            id="snapshots.W002",
        )
    takes = _takes(factory, args, options)
    if takes is False:
        if kind == "wrapper" and _is_storage_class(factory) and not _is_wrapper_class(factory):
            return InvalidStorageSettingError(
                f"{where}: {path!r} is a backend class, not a wrapper ({error})",
                hint='Give the backend as "BACKEND"; "WRAPPERS" lists only wrappers.',
                id=type_id,
            )
        return InvalidStorageSettingError(
            f"{where}: {path!r} could not be built from its OPTIONS: {error}",
            hint=f"Fix OPTIONS to match the {kind}'s keyword arguments.",
            id=call_id,
        )
    if args and takes and _builds_alone(factory, options):
        # The options fit, and the wrapper takes them over an empty store of
        # its own: it refused the stack below it.
        return InvalidStorageSettingError(
            f"{where}: {path!r} refused the stack below it: {error}",
            hint="Fix the order or the list of WRAPPERS (each is listed once, outermost "
            "first); the message above says which layers conflict.",
            id=call_id,
        )
    return InvalidStorageSettingError(
        f"{where}: {path!r} rejected a value in its OPTIONS: {error}",
        hint=f"Fix the value of the option the message names; see the {kind}'s documentation.",
        id=call_id,
    )


UNREACHABLE_HINT = (
    "If the storage lives on a mount (NFS, SMB, an external disk), check that it is mounted; "
    "check that the user running Django may read and write there, and that the network is "
    "up.  Commands that use the storage fail until it is reachable; silence snapshots.W002 "
    "only if that is expected on this machine."
)


def _takes(factory: Any, args: tuple[Any, ...], options: Mapping[str, Any]) -> bool | None:
    """Tell whether *factory* accepts these arguments, by its signature
    alone; ``None`` when the signature cannot be read."""
    try:
        if isinstance(factory, type):
            # Wrapper classes are proxy types whose own signature cannot be
            # read; their __init__ says what they take.  (getattr: mypy
            # refuses __init__ read from a class.)
            init = getattr(factory, "__init__")  # noqa: B009
            inspect.signature(init, follow_wrapped=False).bind(None, *args, **options)
        else:
            inspect.signature(factory).bind(*args, **options)
    except TypeError:
        return False
    except ValueError:
        return None
    return True


def _builds_alone(factory: Any, options: Mapping[str, Any]) -> bool:
    from django_snapshots.storage.memory import MemoryBackend

    try:
        factory(MemoryBackend(), **options)
    except Exception:
        return False
    return True


def _resolve_location(factory: object, options: Mapping[str, Any]) -> Mapping[str, Any]:
    """Anchor a relative ``location`` of a LocalFileSystemBackend at
    ``BASE_DIR``, so that it does not follow the current directory."""
    from django_snapshots.storage.local import LocalFileSystemBackend

    location = options.get("location")
    base = getattr(settings, "BASE_DIR", None)
    if (
        base is None
        or not (isinstance(factory, type) and issubclass(factory, LocalFileSystemBackend))
        or not isinstance(location, (str, PurePath))
        or not str(location)
        or os.path.isabs(location)
    ):
        return options
    return {**options, "location": Path(base) / location}


def _is_wrapper_class(value: object) -> bool:
    from django_snapshots.storage.wrappers.base import StorageWrapper

    return isinstance(value, type) and issubclass(value, StorageWrapper)


def _is_storage_class(value: object) -> bool:
    return isinstance(value, type) and all(
        callable(getattr(value, name, None))
        for name in ("read", "write", "list", "delete", "exists")
    )


def _describe(value: object) -> str:
    """Say what *value* is without showing it (a misplaced value may be a secret)."""
    if value is None:
        return "None (missing)"
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if isinstance(value, str):
        return "an empty string"
    return f"a {type(value).__name__!r} object"


def _is_storage(value: object) -> TypeGuard[SnapshotStorage]:
    # A class passes the protocol check too (it has the methods, unbound).
    return not isinstance(value, type) and isinstance(value, SnapshotStorage)
