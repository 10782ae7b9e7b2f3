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
- every other attribute passes through to the wrapped storage, and
  ``__wrapped__`` is the wrapped storage;
- ``repr`` shows the whole stack, e.g. ``Logging(Prefix(MemoryBackend(), 'a'))``;
- ``type(proxy)`` and ``proxy.__class__`` agree, so protocol checks look at
  what the proxy offers, not at what the wrapped object offers.

Wrapper instances hold configuration only, never per-call state, so one stack
can serve many threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import wrapt

from django_snapshots.storage.keys import validate_key
from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage

__all__ = [
    "ADVANCED_METHODS",
    "BASIC_METHODS",
    "StorageWrapper",
    "missing_intercepts",
    "validate_key_through",
]

BASIC_METHODS = ("read", "write", "list", "delete", "exists")
ADVANCED_METHODS = ("stream_read", "stream_write", "atomic_move", "recursive_list", "sync")
_PROTOCOL_METHODS = frozenset(BASIC_METHODS + ADVANCED_METHODS)

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

    _basic_tier: ClassVar[type[StorageWrapper]]
    _advanced_tier: ClassVar[type[StorageWrapper] | None] = None
    _is_advanced_tier: ClassVar[bool] = False

    def __init_subclass__(cls, *, tier: str = "basic", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if tier == "advanced":
            basic = cls.__mro__[1]
            if not (isinstance(basic, type) and issubclass(basic, StorageWrapper)):
                raise TypeError(f"{cls.__name__}: the first base must be its basic-tier wrapper")
            cls._is_advanced_tier = True
            cls._basic_tier = basic._basic_tier
            cls._basic_tier._advanced_tier = cls
        elif tier == "basic":
            cls._basic_tier = cls
            cls._is_advanced_tier = False
            parent_advanced = cls.__mro__[1].__dict__.get("_advanced_tier")
            # A plain subclass of a wrapper keeps its parent's advanced tier:
            # derive the twin so that Sub(advanced) is advanced too.
            cls._advanced_tier = None
            if parent_advanced is not None:
                namespace = {
                    "__module__": cls.__module__,
                    "__qualname__": f"Advanced{cls.__qualname__}",
                }
                type(cls)(  # type: ignore[misc]
                    f"Advanced{cls.__name__}", (cls, parent_advanced), namespace, tier="advanced"
                )
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
                raise TypeError(
                    f"{cls.__name__}() needs an AdvancedSnapshotStorage, got {storage!r}; "
                    f"call {cls._basic_tier.__name__}() to get the right tier"
                )
            target = cls
        else:
            target = (cls.__dict__.get("_advanced_tier") if advanced else None) or cls
        missing = missing_intercepts(target)
        if missing:
            raise TypeError(
                f"{target.__name__} does not intercept {', '.join(missing)}: a wrapper must "
                "define every protocol method of its tier, or calls would bypass it"
            )
        return super().__new__(target)

    def __init__(self, storage: SnapshotStorage, /) -> None:
        super().__init__(storage)  # type: ignore[call-arg]

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
            return getattr(self.__wrapped__, name)

    def __dir__(self) -> list[str]:
        own = set(dir(type(self)))
        inner = set(dir(self.__wrapped__)) - _PROTOCOL_METHODS
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

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(f"cannot pickle {self!r}: build the stack in each process instead")

    def _self_storage_key(self, key: str) -> str:
        """Return the key the wrapped storage receives for *key*, or raise
        :class:`~django_snapshots.SnapshotStoragePathError`; wrappers that
        rewrite keys (``Prefix``) override it."""
        return key

    def _repr_options(self) -> list[str]:
        """Return the wrapper's options as ``repr`` fragments (no secrets)."""
        return []


def validate_key_through(storage: object, key: str) -> str:
    """Check, before any I/O, that *key* can be stored through the stack
    *storage*: each wrapper's key mapping is applied down the stack, and the
    key the bottom storage would receive must obey the key rules.  Returns
    that bottom key.

    A layer that stores extra keys of its own (``Checksum``'s sidecars) uses
    it to refuse a key up front rather than after its data was written.

    .. versionadded:: 0.1
    """
    while isinstance(storage, StorageWrapper):
        key = storage._self_storage_key(key)
        storage = storage.__wrapped__
    return validate_key(key)


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
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or not issubclass(owner, StorageWrapper) or owner is StorageWrapper:
            missing.append(name)
    return missing
