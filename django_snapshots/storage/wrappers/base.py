"""The tier-preserving proxy machinery every wrapper is built on.

A wrapper is written as two classes: the basic-tier class intercepts the five
:class:`~django_snapshots.SnapshotStorage` methods, and its advanced-tier twin
(declared with ``tier="advanced"``) adds the five
:class:`~django_snapshots.AdvancedSnapshotStorage` methods:

.. code-block:: python

    class Audit(StorageWrapper):
        def read(self, path): ...
        ...                                  # write, list, delete, exists

    class AdvancedAudit(Audit, tier="advanced"):
        def stream_read(self, path): ...
        ...                                  # stream_write, atomic_move, ...

Calling ``Audit(storage)`` then returns an ``AdvancedAudit`` exactly when
*storage* passes ``isinstance(storage, AdvancedSnapshotStorage)``, and a plain
``Audit`` otherwise, so ``requires_advanced_storage`` tells the truth through
any stack.  The machinery guarantees, for every wrapper:

- a proxy never forwards a protocol method it does not define itself: a
  missing method is absent (``hasattr`` is ``False``), never a silent
  bypass of the wrapper to the storage underneath;
- a basic-tier proxy has no advanced attribute at all, even when the wrapped
  object happens to have one;
- data attributes pass through to the wrapped storage, and so do methods
  declared with :func:`passes_through`, with their keys mapped by the
  wrapper; any other method of the wrapped storage is absent, because it
  could take a key that skips the wrapper's mapping; ``__wrapped__`` is the
  wrapped storage;
- ``repr`` shows the whole stack, e.g. ``Logging(Prefix(MemoryBackend(), 'a'))``;
- ``type(proxy)`` and ``proxy.__class__`` agree, so protocol checks look at
  what the proxy offers, not at what the wrapped object offers;
- ``verify(key)`` works on every stack that holds a ``Checksum`` layer: it
  reads the object through every layer above that layer, so the read is
  audited, retried and traced like any other, without ever decoding content
  (see :meth:`StorageWrapper.verify`).

Wrapper instances hold configuration only, never per-call state, so one stack
can serve many threads.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeGuard, TypeVar, cast

import wrapt

from django_snapshots.exceptions import (
    SnapshotError,
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage.cleanup import (
    DEFAULT_OLDER_THAN,
    Leftover,
    _cleanup_of,
    check_cleanup_arguments,
)
from django_snapshots.storage.keys import _show, validate_key, validate_prefix
from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage
from django_snapshots.storage.streams import iter_chunks

__all__ = [
    "ADVANCED_METHODS",
    "BASIC_METHODS",
    "StorageWrapper",
    "missing_intercepts",
    "passes_through",
    "validate_key_through",
]

BASIC_METHODS = ("read", "write", "list", "delete", "exists")
ADVANCED_METHODS = ("stream_read", "stream_write", "atomic_move", "recursive_list", "sync")
_PROTOCOL_METHODS = frozenset(BASIC_METHODS + ADVANCED_METHODS)
_PASSES_THROUGH = "__snapshots_passes_through__"

_Method = TypeVar("_Method", bound=Callable[..., Any])


class _PassThrough(NamedTuple):
    keys: tuple[str, ...]
    prefixes: tuple[str, ...]


def passes_through(
    *, keys: Iterable[str] = (), prefixes: Iterable[str] = ()
) -> Callable[[_Method], _Method]:
    """Declare a method that a storage or a wrapper offers beyond the
    protocol, so that wrappers above it pass it on.

    Name its parameters that take a key in *keys* and those that take a list
    prefix in *prefixes*: every wrapper the call goes through maps them as it
    maps the keys of its own operations (``Prefix`` scopes them, ``Checksum``
    refuses its sidecars' names), before any I/O.  A method of the storage
    below that is not declared is not reachable through a wrapper at all
    (:class:`AttributeError`), so no method can bypass a wrapper's key
    mapping by accident:

    .. code-block:: python

        import io

        from django_snapshots.storage import MemoryBackend, Prefix, passes_through


        class AuditedBackend(MemoryBackend):
            @passes_through(keys=("path",))
            def size(self, path: str) -> int:
                with cast(SnapshotStorage, self).read(path) as stream:
                    return len(stream.read())


        shared = AuditedBackend()
        shared.write("acme/db.dump", io.BytesIO(b"dump"))
        assert Prefix(shared, "acme").size("db.dump") == 4

    ``Prefix(shared, "acme").size("db.dump")`` measures ``acme/db.dump``.
    Its return value passes back unchanged, so a declared method must not
    return keys.  Data attributes (``location``, ``remote``) pass through
    undeclared.

    .. versionadded:: 0.1
    """
    declared = _PassThrough(tuple(keys), tuple(prefixes))
    for name in declared.keys + declared.prefixes:
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"passes_through() needs parameter names, got {name!r}")

    def declare(method: _Method) -> _Method:
        parameters = inspect.signature(method).parameters
        unknown = [n for n in declared.keys + declared.prefixes if n not in parameters]
        if unknown:
            raise TypeError(
                f"passes_through(): {method.__qualname__} has no parameter "
                f"{', '.join(map(repr, unknown))}"
            )
        setattr(method, _PASSES_THROUGH, declared)
        return method

    return declare


if TYPE_CHECKING:
    _Proxy = object
else:

    class _Proxy(wrapt.BaseObjectProxy):
        # wrapt reports the wrapped object's class as ``__class__``; a storage
        # wrapper must answer for itself, or an advanced wrapped object would
        # make a tier-masking proxy pass the advanced protocol check.  Kept in
        # its own class body: a ``__class__`` attribute cannot share a body
        # with zero-argument ``super()``.
        @property
        def __class__(self):
            return type(self)

    # wrapt forwards Python's operators to the wrapped object through the
    # type's slots, where __getattr__ never sees them: ``key in stack``,
    # ``stack[key]``, ``del stack[key]`` or ``with stack as s`` would reach
    # the storage below with no key mapping (another tenant's objects).  A
    # wrapper supports none of them.
    _REFUSED_OPERATORS = (
        "__abs__", "__add__", "__aenter__", "__aexit__", "__and__", "__bytes__", "__ceil__",
        "__complex__", "__contains__", "__delitem__", "__divmod__", "__enter__", "__exit__",
        "__float__", "__floor__", "__floordiv__", "__getitem__", "__iadd__", "__iand__",
        "__ifloordiv__", "__ilshift__", "__imatmul__", "__imod__", "__imul__", "__index__",
        "__int__", "__invert__", "__ior__", "__ipow__", "__irshift__", "__isub__",
        "__itruediv__", "__ixor__", "__len__", "__lshift__", "__matmul__", "__mod__",
        "__mul__", "__neg__", "__or__", "__pos__", "__pow__", "__radd__", "__rand__",
        "__rdivmod__", "__reversed__", "__rfloordiv__", "__rlshift__", "__rmatmul__",
        "__rmod__", "__rmul__", "__ror__", "__round__", "__rpow__", "__rrshift__",
        "__rshift__", "__rsub__", "__rtruediv__", "__rxor__", "__setitem__", "__sub__",
        "__truediv__", "__trunc__", "__xor__",
    )  # fmt: skip

    def _refuse(name: str) -> Any:
        def refused(self: Any, *args: Any) -> Any:
            raise TypeError(
                f"{type(self).__name__} does not support {name}: a storage wrapper offers the "
                "storage protocol only, so that every key goes through its key mapping"
            )

        refused.__name__ = name
        return refused

    for _name in _REFUSED_OPERATORS:
        setattr(_Proxy, _name, _refuse(_name))
    del _name


class StorageWrapper(_Proxy):
    """Base class of every storage wrapper (a :mod:`wrapt` object proxy).

    Subclasses define the five basic protocol methods; their advanced twin,
    declared as ``class AdvancedX(X, tier="advanced")``, defines the other
    five.  ``X(storage)`` picks the tier from *storage*.  A wrapper without an
    advanced twin always yields basic-tier proxies, masking what it cannot
    intercept.  Override :meth:`_repr_options` to show options in ``repr``.

    .. versionadded:: 0.1
    """

    __wrapped__: SnapshotStorage

    #: Whether the bytes this wrapper's ``read`` hands out differ from those
    #: of the storage below, as ``Encrypt``'s and ``Compress``'s do.  While
    #: :meth:`verify` reads through such a wrapper, its ``read`` and
    #: ``stream_read`` hand out the bytes below as they are, keys mapped, so
    #: that a verification never needs a key and never decodes anything.
    #: ``False`` (the default) for wrappers that pass the bytes on unchanged
    #: (``Logging``, ``Retry``, ``Prefix``, ``Telemetry``).
    changes_content: ClassVar[bool] = False

    # True for the Checksum layer, whose reads record the digest they checked
    # for verify().
    _checks_digests: ClassVar[bool] = False

    _basic_tier: ClassVar[type[StorageWrapper]]
    _advanced_tier: ClassVar[type[StorageWrapper] | None] = None
    _is_advanced_tier: ClassVar[bool] = False

    def __init_subclass__(cls, *, tier: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.changes_content:
            _raw_while_verifying(cls)
        parent = cls.__mro__[1]
        if tier is None:
            # A subclass keeps the tier of its first base: a subclass of an
            # advanced twin is advanced-only, never a basic class that
            # inherits advanced methods it cannot serve.
            tier = "advanced" if _is_advanced_class(parent) else "basic"
        if tier == "advanced":
            if not (isinstance(parent, type) and issubclass(parent, StorageWrapper)):
                raise TypeError(f"{cls.__name__}: the first base must be its basic-tier wrapper")
            cls._is_advanced_tier = True
            if _is_advanced_class(parent):
                # A subclass of an advanced twin: advanced-only, and nobody's
                # twin, so declaring it never changes what another class builds.
                cls._basic_tier = parent._basic_tier
                cls._advanced_tier = None
                return
            declared = parent.__dict__.get("_advanced_tier")
            if declared is not None and not declared.__dict__.get("_derived_tier", False):
                raise TypeError(
                    f"{cls.__name__}: {parent.__name__} already has its advanced twin "
                    f"{declared.__name__}; subclass {parent.__name__} to change it"
                )
            cls._basic_tier = parent
            parent._advanced_tier = cls
        elif tier == "basic":
            if _is_advanced_class(parent):
                raise TypeError(
                    f"{cls.__name__}: a subclass of the advanced-tier {parent.__name__} cannot "
                    f"be basic; subclass {parent._basic_tier.__name__} instead, whose advanced "
                    "twin is derived for it"
                )
            cls._basic_tier = cls
            cls._is_advanced_tier = False
            inherited = parent.__dict__.get("_advanced_tier") if isinstance(parent, type) else None
            # A plain subclass of a wrapper keeps its parent's advanced tier:
            # derive the twin so that Sub(advanced) is advanced too, unless
            # the subclass changed a basic method that an inherited advanced
            # method would bypass: it is then of the basic tier until it
            # declares a twin that overrides those advanced methods too.
            cls._advanced_tier = None
            if inherited is not None:
                namespace = {
                    "__module__": cls.__module__,
                    "__qualname__": f"Advanced{cls.__qualname__}",
                    "_derived_tier": True,
                }
                twin = type(cls)(  # type: ignore[misc]
                    f"Advanced{cls.__name__}", (cls, inherited), namespace, tier="advanced"
                )
                if missing_intercepts(twin):
                    cls._advanced_tier = None
        else:
            raise TypeError(f"{cls.__name__}: tier must be 'basic' or 'advanced', not {tier!r}")

    def __new__(cls, storage: SnapshotStorage, /, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(storage, SnapshotStorage):
            raise TypeError(
                f"{cls._basic_tier.__name__}() needs a SnapshotStorage (read, write, list, "
                f"delete, exists), got {type(storage).__name__}"
            )
        advanced = isinstance(storage, AdvancedSnapshotStorage)
        if cls._is_advanced_tier:
            if not advanced:
                hint = (
                    f"call {cls._basic_tier.__name__}() to get the right tier"
                    if cls._basic_tier._advanced_tier is cls
                    else f"subclass {cls._basic_tier.__name__} rather than its advanced twin "
                    "to get a wrapper of either tier"
                )
                raise TypeError(
                    f"{cls.__name__}() needs an AdvancedSnapshotStorage, got {storage!r}; {hint}"
                )
            target = cls
        else:
            target = (cls.__dict__.get("_advanced_tier") if advanced else None) or cls
        missing = missing_intercepts(target)
        if missing:
            raise TypeError(
                f"{target.__name__} does not intercept {', '.join(missing)}: a wrapper must "
                "define every protocol method of its tier, or calls would bypass it (an "
                "advanced method must also be overridden where the basic methods it does the "
                "work of are: stream_read for read, stream_write for write, recursive_list for "
                "list, atomic_move and sync for read, write and delete)"
            )
        return super().__new__(target)

    def __init__(self, storage: SnapshotStorage, /) -> None:
        super().__init__(storage)  # type: ignore[call-arg]

    def verify(self, path: str) -> str:
        """Read *path* whole through this stack and return the hex digest
        that the stack's ``Checksum`` layer checked it against, or raise
        :class:`~django_snapshots.SnapshotIntegrityError` if it does not
        match its sidecar or has none (whatever ``strict`` says).

        The object is read through every layer above the ``Checksum`` layer,
        with keys mapped as for ``read`` (``Prefix``), so a verification is
        a read like any other: ``Logging`` logs it as a ``read`` entry,
        ``Retry`` resumes it after a failure midway, ``Telemetry`` traces
        it.  A layer that changes content (:attr:`changes_content`:
        ``Encrypt``, ``Compress``) passes the stored bytes on as they are,
        so a verification needs no key and decodes nothing: it checks what
        ``sha256sum -c`` checks.  A stack without a ``Checksum`` layer
        raises :class:`~django_snapshots.SnapshotStorageCapabilityError`
        before any I/O, and so does a bad key.

        .. versionadded:: 0.1
        """
        above, checksum = _layers_above_checksum(self, path)
        key = path
        for layer in above:
            key = layer._self_storage_key(key)
        verification = _Verification(frozenset(map(id, above)), checksum, key)
        token = _VERIFICATION.set(verification)
        try:
            with cast(SnapshotStorage, self).read(path) as stream:
                for _ in iter_chunks(stream):
                    pass
        finally:
            _VERIFICATION.reset(token)
        if verification.digest is None:
            raise SnapshotError(
                f"cannot verify {_show(path)}: the read through {self!r} did not reach "
                "its Checksum layer's check"
            )
        return verification.digest

    def cleanup(
        self,
        prefix: str = "",
        *,
        older_than: timedelta | float = DEFAULT_OLDER_THAN,
        dry_run: bool = False,
    ) -> list[Leftover]:
        """Remove what crashed writes left under *prefix* in the storage at
        the bottom of this stack, if nobody wrote to it for *older_than*,
        and return what was removed (with *dry_run*, remove nothing and
        return what would be); see :mod:`django_snapshots.storage.cleanup`.

        The call goes down through every layer with *prefix* mapped as for
        ``list`` (``Prefix`` confines it to the tenant's own leftovers) and
        the leftovers come back named as this stack names things (relative
        to the tenant's root).  Keys are never touched.  A stack whose
        bottom storage has no ``cleanup`` (it leaves no leftovers it knows
        of) raises :class:`~django_snapshots.SnapshotStorageCapabilityError`
        before any I/O, and so do a bad prefix or a bad *older_than*.

        .. versionadded:: 0.1
        """
        _, older_than, dry_run = check_cleanup_arguments(prefix, older_than, dry_run)
        below = self._self_storage_prefix(prefix)
        root = self._self_storage_prefix("")
        storage = self.__wrapped__
        leftovers = _cleanup_of(storage, self)(below, older_than=older_than, dry_run=dry_run)
        for leftover in leftovers:
            # The storage below is trusted with nothing: a name outside what
            # was asked for would tell a tenant of another tenant's uploads.
            if not (isinstance(leftover, Leftover) and leftover.name.startswith(below)):
                raise SnapshotStorageError(
                    f"{storage!r} reported a leftover outside prefix {below!r}: "
                    f"{_show(getattr(leftover, 'name', leftover))}"
                )
        return [leftover._replace(name=leftover.name[len(root) :]) for leftover in leftovers]

    if not TYPE_CHECKING:
        # Hidden from type checkers: they would take a __getattr__ as
        # providing every protocol method, so a wrapper of a basic storage
        # would type as advanced.

        def __getattr__(self, name: str) -> Any:
            # Reached only when the proxy's class lacks *name*.  A protocol method
            # the wrapper does not define must not leak through to the wrapped
            # storage: that would bypass the wrapper (unlogged, unscoped).
            if name in _PROTOCOL_METHODS:
                raise AttributeError(
                    f"{self._basic_tier.__name__} proxy of the "
                    f"{'advanced' if self._is_advanced_tier else 'basic'} tier has no {name!r}"
                )
            value = getattr(self.__wrapped__, name)
            if not callable(value):
                if _is_plain(value):
                    return value
                # An object (a Django Storage, a client) offers methods that
                # take keys of its own, out of reach of this wrapper's mapping.
                raise AttributeError(
                    f"{self._basic_tier.__name__} does not pass {name!r} of "
                    f"{type(self.__wrapped__).__name__} through: it is a "
                    f"{type(value).__name__}, whose methods would reach the storage without "
                    "this wrapper's key mapping; only plain values (text, numbers, paths) "
                    f"pass through; take it from the storage itself ({name!r} of .__wrapped__)"
                )
            # A method of the storage below may take keys: called as it is, it
            # would skip this wrapper's key mapping (another tenant's object,
            # a sidecar's name).  Only declared methods pass, keys mapped.
            declared = getattr(value, _PASSES_THROUGH, None)
            if not isinstance(declared, _PassThrough):
                raise AttributeError(
                    f"{self._basic_tier.__name__} does not pass the method {name!r} of "
                    f"{type(self.__wrapped__).__name__} through: only methods declared with "
                    "@passes_through are reached through wrappers, with their keys mapped; "
                    f"call it on the storage itself ({name!r} of .__wrapped__) if that is safe"
                )
            return _mapped(self, value, declared)

    def __dir__(self) -> list[str]:
        own = set(dir(type(self)))
        inner = {
            name
            for name in set(dir(self.__wrapped__)) - _PROTOCOL_METHODS - own
            if _passes(self.__wrapped__, name)
        }
        return sorted(own | inner)

    def __repr__(self) -> str:
        options = "".join(f", {option}" for option in self._repr_options())
        return f"{self._basic_tier.__name__}({self.__wrapped__!r}{options})"

    def __str__(self) -> str:
        # wrapt would show the wrapped storage alone, hiding every wrapper
        # from print() and f-strings.
        return self.__repr__()

    def __format__(self, format_spec: str) -> str:
        return format(self.__repr__(), format_spec)

    # A wrapper is itself: two stacks over one storage (two tenants) are
    # different objects, never equal and never one key of a cache.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __hash__(self) -> int:
        return object.__hash__(self)

    def __bool__(self) -> bool:
        return True

    def __lt__(self, other: object) -> bool:
        return NotImplemented

    __le__ = __gt__ = __ge__ = __lt__

    def __setattr__(self, name: str, value: Any) -> None:
        # wrapt would set any other attribute on the wrapped storage, which
        # other stacks (other tenants) share.
        if name.startswith("_self_") or (name == "__wrapped__" and not _has_wrapped(self)):
            super().__setattr__(name, value)
            return
        raise AttributeError(
            f"cannot set {name!r} on {self._basic_tier.__name__}: a wrapper holds its "
            "options only, and the storage below may be shared; set it on the storage itself"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete {name!r} from {self._basic_tier.__name__}")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(f"cannot pickle {self!r}: build the stack in each process instead")

    def _self_storage_key(self, key: str) -> str:
        """Return the key the wrapped storage receives for *key*, or raise
        :class:`~django_snapshots.SnapshotStoragePathError`; wrappers that
        rewrite keys (``Prefix``) or reserve some (``Checksum``) override it."""
        return validate_key(key)

    def _self_storage_prefix(self, prefix: str) -> str:
        """Return the list prefix the wrapped storage receives for *prefix*,
        or raise :class:`~django_snapshots.SnapshotStoragePathError`;
        wrappers that rewrite keys override it with :meth:`_self_storage_key`."""
        return validate_prefix(prefix)

    def _repr_options(self) -> list[str]:
        """Return the wrapper's options as ``repr`` fragments (no secrets)."""
        return []


class _Verification:
    """One call of :meth:`StorageWrapper.verify`: the layers it reads
    through (by ``id``), the Checksum layer and the key it checks there, and
    the digest that layer checked, once it has."""

    __slots__ = ("checksum", "digest", "key", "layers")

    def __init__(self, layers: frozenset[int], checksum: StorageWrapper, key: str) -> None:
        self.layers = layers
        self.checksum = checksum
        self.key = key
        self.digest: str | None = None


# The verification under way in this thread or task, if any: layers that
# change content hand out the bytes below as they are, and the Checksum layer
# records what it checked.
_VERIFICATION: contextvars.ContextVar[_Verification | None] = contextvars.ContextVar(
    "django_snapshots_verification", default=None
)


def _verification_for(checksum: StorageWrapper, key: str) -> _Verification | None:
    """The verification under way whose read reaches *checksum* for *key*, if any."""
    verification = _VERIFICATION.get()
    if verification is None or verification.checksum is not checksum or verification.key != key:
        return None
    return verification


def _layers_above_checksum(
    storage: StorageWrapper, path: str
) -> tuple[list[StorageWrapper], StorageWrapper]:
    """The layers of *storage* above its Checksum layer, outermost first,
    and that layer; or raise if it has none."""
    above: list[StorageWrapper] = []
    layer: object = storage
    while isinstance(layer, StorageWrapper):
        if layer._checks_digests:
            return above, layer
        above.append(layer)
        layer = layer.__wrapped__
    raise SnapshotStorageCapabilityError(
        f"cannot verify {_show(path)}: {storage!r} has no Checksum layer, so nothing records "
        "the digests to verify against; add django_snapshots.storage.Checksum to the stack"
    )


def _raw_while_verifying(cls: type[StorageWrapper]) -> None:
    """Make the ``read`` and ``stream_read`` of *cls*, its own or inherited,
    hand out the bytes of the storage below, keys mapped, while a
    verification reads through it: *cls* changes content, which a
    verification never decodes."""
    for name in ("read", "stream_read"):
        method = getattr(cls, name, None)
        if method is not None and not getattr(method, _RAW_WHILE_VERIFYING, False):
            raw = _raw_read(method, name)
            if name not in cls.__dict__:
                # Still the method of the class that defined it, for the
                # intercept check: ownership is what that check compares.
                setattr(raw, _INHERITED, True)
            setattr(cls, name, raw)


_RAW_WHILE_VERIFYING = "__snapshots_raw_while_verifying__"
_INHERITED = "__snapshots_inherited__"


def _raw_read(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """*method*, the ``read`` or ``stream_read`` (*name*) of a wrapper that
    changes content, reading the storage below directly while a
    verification goes through that wrapper."""

    @functools.wraps(method)
    def read(self: StorageWrapper, path: str) -> Any:
        verification = _VERIFICATION.get()
        if verification is not None and id(self) in verification.layers:
            return getattr(self.__wrapped__, name)(self._self_storage_key(path))
        return method(self, path)

    setattr(read, _RAW_WHILE_VERIFYING, True)
    return read


def _is_advanced_class(cls: object) -> TypeGuard[type[StorageWrapper]]:
    """Tell whether *cls* is a wrapper class of the advanced tier."""
    return isinstance(cls, type) and bool(cls.__dict__.get("_is_advanced_tier", False))


def validate_key_through(storage: object, key: str) -> str:
    """Check, before any I/O, that *key* can be stored through the stack
    *storage*: each wrapper's key mapping is applied down the stack, and the
    key the bottom storage would receive must obey the key rules.  Returns
    that bottom key.

    A layer that stores extra keys of its own (``Checksum``'s sidecars) uses
    it to refuse a key up front rather than after its data was written.  A
    bottom storage may hold shorter keys than the key rules allow, declared
    by an attribute ``max_key_bytes`` (an object store under a URL prefix),
    and may limit the length of each ``/``-separated segment by
    an attribute ``max_segment_bytes`` (an int; ``None`` or absent means no
    limit beyond the key rules), such as a file system's 255-byte names: a
    longer segment is refused here too.

    .. versionadded:: 0.1
    """
    while isinstance(storage, StorageWrapper):
        key = storage._self_storage_key(key)
        storage = storage.__wrapped__
    validate_key(key)
    room = getattr(storage, "max_key_bytes", None)
    if isinstance(room, int) and len(key) * 4 > room and len(key.encode()) > room:
        raise SnapshotStoragePathError(
            f"invalid key {_show(key)}: is {len(key.encode())} UTF-8 bytes long, more than "
            f"the {room} that {type(storage).__name__} holds"
        )
    limit = getattr(storage, "max_segment_bytes", None)
    if isinstance(limit, int) and len(key) * 4 > limit:
        for segment in key.split("/"):
            size = len(segment.encode())
            if size > limit:
                raise SnapshotStoragePathError(
                    f"invalid key {_show(key)}: segment {_show(segment)} is {size} UTF-8 bytes "
                    f"long, more than the {limit} that {type(storage).__name__} stores in one name"
                )
    return key


def missing_intercepts(wrapper: object) -> list[str]:
    """Return the protocol methods of *wrapper*'s tier that its wrapper class
    does not define itself; an empty list means every method is intercepted.

    *wrapper* is a wrapper proxy or a wrapper class.  Wrappers cannot be
    instantiated while this list is non-empty.

    .. versionadded:: 0.1
    """
    cls = wrapper if isinstance(wrapper, type) else type(wrapper)
    if not issubclass(cls, StorageWrapper):
        raise TypeError(f"{wrapper!r} is not a StorageWrapper")
    names = BASIC_METHODS + (ADVANCED_METHODS if cls._is_advanced_tier else ())
    missing = []
    for name in names:
        owner = _owner(cls, name)
        if owner is None or not issubclass(owner, StorageWrapper) or owner is StorageWrapper:
            missing.append(name)
            continue
        # An advanced method inherited from a class that a subclass's
        # override of a basic method is hidden from would bypass it (a
        # read-only subclass whose stream_write still writes).
        basic_owners = (_owner(cls, basic) for basic in _COUNTERPARTS.get(name, ()))
        if any(not issubclass(owner, b) for b in basic_owners if b is not None):
            missing.append(name)
    return missing


# The basic methods each advanced method does the work of: an override of
# one of these must be matched by an override of the advanced method.
_COUNTERPARTS = {
    "stream_read": ("read",),
    "stream_write": ("write",),
    "recursive_list": ("list",),
    "atomic_move": ("read", "write", "delete"),
    "sync": ("read", "write", "list", "delete"),
}


def _owner(cls: type, name: str) -> type | None:
    """The class in *cls*'s MRO whose body defines *name* (an inherited
    method made raw while verifying stays its definer's)."""
    return next(
        (
            k
            for k in cls.__mro__
            if name in vars(k) and not getattr(vars(k)[name], _INHERITED, False)
        ),
        None,
    )


def _mapped(wrapper: StorageWrapper, method: Callable[..., Any], declared: _PassThrough) -> Any:
    """*method* of the storage below *wrapper*, with the key and prefix
    arguments *declared* mapped by *wrapper* before the call."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for name in declared.keys:
            if name in bound.arguments:
                bound.arguments[name] = wrapper._self_storage_key(bound.arguments[name])
        for name in declared.prefixes:
            if name in bound.arguments:
                bound.arguments[name] = wrapper._self_storage_prefix(bound.arguments[name])
        return method(*bound.args, **bound.kwargs)

    setattr(call, _PASSES_THROUGH, declared)
    return call


_PLAIN = (str, bytes, int, float, complex, bool, type(None), PurePath)


def _is_plain(value: object) -> bool:
    """Tell whether *value* is data that cannot act on a storage."""
    if isinstance(value, (tuple, frozenset)):
        return all(_is_plain(item) for item in value)
    return isinstance(value, _PLAIN)


def _has_wrapped(proxy: object) -> bool:
    try:
        object.__getattribute__(proxy, "__wrapped__")
    except (AttributeError, ValueError):
        return False
    return True


def _passes(storage: object, name: str) -> bool:
    """Tell whether a wrapper passes the attribute *name* of *storage* through."""
    try:
        value = getattr(storage, name)
    except AttributeError:
        return False
    if not callable(value):
        return _is_plain(value)
    return isinstance(getattr(value, _PASSES_THROUGH, None), _PassThrough)
