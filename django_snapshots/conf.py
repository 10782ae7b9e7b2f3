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

``Encrypt`` takes two options of its own in settings data, beside its
``recipients`` and ``identities`` (lists of keys, as strings):
``recipients_file`` and ``identities_file``, the path of a recipients file
(``age -R``) or of an identity file (``age -i``), or a list of paths.  A
relative path is resolved against ``BASE_DIR``, and the files are read when
the stack is built.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, TypeGuard, cast

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

__all__ = ["DEFAULT_DIRECTORY", "InvalidStorageSettingError", "build_storage", "get_storage"]

#: Name of the directory, under ``BASE_DIR`` or the current directory, that
#: the default storage uses.
DEFAULT_DIRECTORY = "snapshots"

_SETTING = 'SNAPSHOTS["STORAGE"]'
_SNAPSHOTS_KEYS = frozenset({"STORAGE"})
_STORAGE_KEYS = frozenset({"BACKEND", "OPTIONS", "WRAPPERS"})
_WRAPPER_KEYS = frozenset({"WRAPPER", "OPTIONS"})
_EXAMPLE_BACKEND = "django_snapshots.storage.LocalFileSystemBackend"
_EXAMPLE_WRAPPER = "django_snapshots.storage.Checksum"
# Options of Encrypt in settings data only: the files whose keys join the
# option named beside them.
_KEY_FILE_OPTIONS = {"recipients_file": "recipients", "identities_file": "identities"}
_EXAMPLE_KEY_FILES = {"recipients_file": "backup.pub", "identities_file": "backup-key.txt"}


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
            identity_files: list[KeyFile] = []
            _cache.storage = _build_from_settings(identity_files)
            _cache.identity_files = tuple(identity_files)
        return _cache.storage


@dataclass(frozen=True)
class KeyFile:
    """A key file an ``Encrypt`` layer of the setting was built with: *where*
    names the setting entry, *path* the file it read."""

    where: str
    path: Path


def identity_files() -> tuple[KeyFile, ...]:
    """Return the identity files that the stack of ``SNAPSHOTS["STORAGE"]``,
    given as data, read its secret keys from (building the stack if needed).

    Raises :class:`InvalidStorageSettingError` as :func:`get_storage` does.
    """
    with _cache.lock:
        get_storage()
        return _cache.identity_files


class _Cache:
    def __init__(self) -> None:
        # Reentrant: a backend whose constructor calls get_storage() fails loudly
        # (recursion) instead of deadlocking.
        self.lock = threading.RLock()
        self.storage: SnapshotStorage | None = None
        self.identity_files: tuple[KeyFile, ...] = ()


_cache = _Cache()


def _reset_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    # BASE_DIR decides where the default storage lives.
    if setting in ("SNAPSHOTS", "BASE_DIR"):
        with _cache.lock:
            _cache.storage = None
            _cache.identity_files = ()


# Connected here rather than in the app's ready(): a cached stack must follow
# the setting even in a project that calls get_storage() without installing
# the app.
setting_changed.connect(_reset_on_setting_change, dispatch_uid="django_snapshots.conf")


def build_storage(value: object, *, setting: str = _SETTING) -> SnapshotStorage:
    """Return the stack that *value* describes, as ``SNAPSHOTS["STORAGE"]``
    takes it: a storage object (returned as it is) or its data, a dict of
    ``BACKEND``, ``OPTIONS`` and ``WRAPPERS``::

        >>> build_storage({
        ...     "BACKEND": "django_snapshots.storage.MemoryBackend",
        ...     "WRAPPERS": ["django_snapshots.storage.Checksum"],
        ... })
        Checksum(MemoryBackend(), algorithm='sha256')

    Nothing is cached: each call builds a new stack.  Raises
    :class:`InvalidStorageSettingError` when *value* is wrong, with a
    message that names *setting* as the place it came from.

    .. versionadded:: 0.1
    """
    try:
        return _build_storage(value, [])
    except InvalidStorageSettingError as exc:
        if setting == _SETTING:
            raise
        raise InvalidStorageSettingError(
            exc.message.replace(_SETTING, setting, 1), hint=exc.hint, id=exc.id
        ) from exc


def _build_from_settings(identity_files: list[KeyFile]) -> SnapshotStorage:
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
    return _build_storage(snapshots["STORAGE"], identity_files)


def _default_storage() -> SnapshotStorage:
    from django_snapshots.storage import Checksum, LocalFileSystemBackend

    base = getattr(settings, "BASE_DIR", None) or Path.cwd()
    return Checksum(LocalFileSystemBackend(Path(base) / DEFAULT_DIRECTORY))


def _build_storage(value: object, identity_files: list[KeyFile]) -> SnapshotStorage:
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
            identity_files=identity_files,
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
        # The type and the position, never the name itself: a misplaced
        # value (a password or a secret key given as a key) would be echoed.
        if not isinstance(name, str):
            raise InvalidStorageSettingError(
                f"{where} has an option name of type {type(name).__name__} (entry {position}); "
                "option names are keyword argument names and must be strings",
                hint=hint,
                id=id,
            )
        if not name.isidentifier():
            raise InvalidStorageSettingError(
                f"{where} has an option name that is not a keyword argument name (entry "
                f"{position}); option names are identifiers such as location or prefix",
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
    identity_files: list[KeyFile] | None = None,
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
    encrypt = _is_encrypt_class(factory)
    files: dict[str, list[KeyFile]] = {"recipients": [], "identities": []}
    if encrypt:
        options = _encrypt_options(options, where=where, files=files)
    try:
        storage = factory(*args, **options)
    except SnapshotStoragePathError as exc:
        raise InvalidStorageSettingError(
            f"{where}: {path!r} rejected its OPTIONS: {exc}",
            hint="Fix the key or prefix in OPTIONS to follow the key rules "
            "(segments separated by '/', no '..', no leading '/').",
            id="snapshots.E011",
        ) from exc
    except ImportError as exc:
        # An optional dependency of the class (pyrage for Encrypt, the zstd
        # codec for Compress), imported when it is built.
        raise InvalidStorageSettingError(
            f"{where}: {path!r} needs a package that is not installed: {exc}",
            hint="Install the package (or the django-snapshots extra) that the message names.",
            id=import_id,
        ) from exc
    except Exception as exc:
        if encrypt and (key_error := _key_error(exc, factory, args, options, where, files)):
            raise key_error from exc
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
    if identity_files is not None:
        identity_files.extend(files["identities"])
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


def _encrypt_options(
    options: Mapping[str, Any], *, where: str, files: dict[str, list[KeyFile]]
) -> Mapping[str, Any]:
    """Turn the options of an ``Encrypt`` entry into its keyword arguments:
    the paths of ``recipients_file`` and ``identities_file`` join
    ``recipients`` and ``identities`` (after the keys, whose positions in
    Encrypt's messages then match the setting), and every path is anchored
    at ``BASE_DIR``.  *files* receives each path, by the option it joins.
    Refuses a stack with no key at all before any file is read."""
    base = getattr(settings, "BASE_DIR", None)
    anchor = Path(base) if base is not None else Path.cwd()
    arguments = dict(options)
    for file_option, option in _KEY_FILE_OPTIONS.items():
        at = f'{where}["OPTIONS"]'
        paths = _key_file_paths(arguments.pop(file_option, None), file_option, at)
        entries = arguments.get(option, [])
        if isinstance(entries, (str, bytes, os.PathLike)) or not isinstance(entries, Iterable):
            continue  # Encrypt says what it takes
        resolved: list[object] = []
        for position, entry in enumerate(cast(Iterable[object], entries)):
            if isinstance(entry, os.PathLike):
                entry = anchor / os.fspath(entry)
                files[option].append(KeyFile(f'{at}["{option}"][{position}]', entry))
            resolved.append(entry)
        for shown, path in paths:
            files[option].append(KeyFile(shown, anchor / path))
            resolved.append(anchor / path)
        if resolved or option in arguments:
            arguments[option] = resolved
    keys = ("recipients", "identities")
    # With a misspelt option, Encrypt's own error names it.
    if set(arguments) <= set(keys) and not any(arguments.get(name) for name in keys):
        raise InvalidStorageSettingError(
            f"{where}: Encrypt has neither recipients nor identities, so it could neither "
            "write nor read",
            hint='Give "recipients" (public keys, age1...) or "recipients_file" to write, '
            'and "identities" (secret keys) or "identities_file" where backups are restored; '
            "`snapshots keygen -o FILE` makes a key.",
            id="snapshots.E013",
        )
    return arguments


def _key_file_paths(
    value: object, option: str, at: str
) -> list[tuple[str, str | os.PathLike[str]]]:
    """The paths of the *option* ``recipients_file`` or ``identities_file``
    of the OPTIONS *at*, each with the entry that names it; a misplaced value
    is described, never shown (it may be a secret key)."""
    where = f'{at}["{option}"]'
    if value is None:
        return []
    single = not isinstance(value, (list, tuple))
    entries = list(value) if isinstance(value, (list, tuple)) else [value]
    paths = []
    for position, entry in enumerate(entries):
        shown = where if single else f"{where}[{position}]"
        if isinstance(entry, (str, os.PathLike)) and _looks_like_a_key(os.fspath(entry)):
            option_of_keys = _KEY_FILE_OPTIONS[option]
            raise InvalidStorageSettingError(
                f"{shown} is a key, not the path of a file",
                hint=f'Give keys in "{option_of_keys}", a list of strings, and the path of a '
                f'file of keys in "{option}".',
                id="snapshots.E010",
            )
        if not isinstance(entry, (str, os.PathLike)) or not os.fspath(entry):
            raise InvalidStorageSettingError(
                f"{shown} must be the path of a file, or a list of paths, not {_describe(entry)}",
                hint=f'For example "{option}": "{_EXAMPLE_KEY_FILES[option]}" (relative to '
                "BASE_DIR), or a list of such paths.",
                id="snapshots.E010",
            )
        paths.append((shown, entry))
    return paths


def _looks_like_a_key(text: str | bytes) -> bool:
    """Tell whether *text*, given as a path, is rather a key (or the content
    of a key file), which an error about a missing file would quote."""
    if isinstance(text, bytes):
        return False
    head = text.strip().upper()
    return "\n" in text.strip() or head.startswith(
        ("AGE-SECRET-KEY-", "AGE-PLUGIN-", "AGE1", "SSH-", "-----BEGIN")
    )


def _key_error(
    exc: Exception,
    factory: Any,
    args: tuple[SnapshotStorage, ...],
    options: Mapping[str, Any],
    where: str,
    files: dict[str, list[KeyFile]],
) -> InvalidStorageSettingError | None:
    """Say which key or key file ``Encrypt`` refused, or ``None`` when the
    failure is not about its keys.  Encrypt's own messages name the entry
    by its position and never quote a key."""
    if isinstance(exc, OSError):
        paths = {os.fspath(file.path): kind for kind, found in files.items() for file in found}
        name = os.fspath(exc.filename) if exc.filename is not None else ""
        kind = {"recipients": "recipients file", "identities": "identity file"}.get(
            paths.get(name, ""), "key file"
        )
        return InvalidStorageSettingError(
            f"{where}: Encrypt cannot read its {kind} {name!r}: {exc.strerror or exc}",
            hint="Check the path (a relative one is resolved against BASE_DIR) and that the "
            "user running Django may read the file; `snapshots keygen -o FILE` makes an "
            "identity file.",
            id="snapshots.E015",
        )
    if isinstance(exc, (ValueError, TypeError)) and _takes(factory, args, options) is not False:
        return InvalidStorageSettingError(
            f"{where}: Encrypt rejected a key in its OPTIONS: {exc}",
            hint='Give "recipients" as a list of public keys (age1..., ssh-ed25519 ..., '
            'ssh-rsa ...) and "identities" as a list of secret keys (AGE-SECRET-KEY-1...), '
            'and files as "recipients_file" and "identities_file".',
            id="snapshots.E014",
        )
    return None


def _is_encrypt_class(value: object) -> bool:
    from django_snapshots.storage.wrappers.encrypt import Encrypt

    return isinstance(value, type) and issubclass(value, Encrypt)


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
