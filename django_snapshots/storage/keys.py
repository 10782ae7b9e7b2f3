"""Key and prefix rules shared by every built-in backend and by ``Prefix``.

A *key* names one stored object: a non-empty string of at most 1024 UTF-8
bytes made of ``/``-separated segments.  Every segment is non-empty and is
neither ``.`` nor ``..``; no backslash and no control character appears
anywhere: not the C0 and C1 controls (below U+0020, U+007F to U+009F), not
the line and paragraph separators (U+2028, U+2029), not the Unicode format
characters (zero-width spaces, the soft hyphen, the byte order mark, the
bidirectional marks, embeddings, overrides and isolates, which reorder what
a terminal shows; only the zero-width joiner and non-joiner that scripts and
emoji need are allowed) and not the Hangul fillers, which print as blanks
(:data:`FORBIDDEN_CHARACTERS` holds them all).  So a key can never climb
out of a directory, be mistaken for an absolute path, smuggle a second line
into a listing, or print as something it is not::

    >>> validate_key("db/2026-11-26.dump")
    'db/2026-11-26.dump'
    >>> try:
    ...     validate_key("../etc/passwd")
    ... except SnapshotStoragePathError as exc:
    ...     print(exc)
    invalid key '../etc/passwd': segment '..' is not allowed

A *list prefix* filters keys by plain string comparison; it is valid when it
is ``""`` or when ``prefix + "x"`` would be a valid key (``"snap"``,
``"snap/"`` and ``"a/.."`` are valid filters, ``"../"`` is not).

Every rule is checked before any I/O, and a broken rule raises
:class:`~django_snapshots.exceptions.SnapshotStoragePathError` naming the key
and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from django_snapshots.exceptions import SnapshotStoragePathError

__all__ = [
    "FORBIDDEN_CHARACTERS",
    "MAX_KEY_BYTES",
    "validate_dir_prefix",
    "validate_key",
    "validate_prefix",
    "validate_sync_prefixes",
]

MAX_KEY_BYTES = 1024

# Code point ranges no key may contain, because they print as nothing or
# act on the terminal rather than print: the C0 controls, DEL and the C1
# controls; the Unicode format characters (general category Cf: soft hyphen,
# zero-width spaces, the bidirectional marks, embeddings, overrides and
# isolates, word joiners, the byte order mark, tag characters...), except
# the zero-width non-joiner and joiner (U+200C, U+200D) that Persian, Indic
# scripts and emoji sequences need; the line and paragraph separators; and
# the Hangul fillers, which print as blanks.
_FORBIDDEN_RANGES = (
    (0x00, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2),
    (0x115F, 0x1160), (0x180E, 0x180E), (0x200B, 0x200B), (0x200E, 0x200F),
    (0x2028, 0x2029), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F),
    (0x3164, 0x3164), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)  # fmt: skip

#: Every character a key may not contain: the backslash, and each character
#: that controls a terminal or reorders text rather than printing.
FORBIDDEN_CHARACTERS = frozenset(
    "\\" + "".join(chr(c) for low, high in _FORBIDDEN_RANGES for c in range(low, high + 1))
)
_FORBIDDEN_CLASS = "".join(rf"\U{low:08x}-\U{high:08x}" for low, high in _FORBIDDEN_RANGES) + r"\\"
_FORBIDDEN = re.compile(f"[{_FORBIDDEN_CLASS}]")
# The whole set of rules but the length in one expression: segments of
# allowed characters that are not "." or "..", joined by single slashes.  Keys
# are checked at every layer of a stack, so the common valid case must be
# cheap; anything it refuses goes through _check_key for the precise message.
_SEGMENT = rf"(?!\.\.?(?:/|\Z))[^{_FORBIDDEN_CLASS}/]+"
_VALID_KEY = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")


def validate_key(key: object) -> str:
    """Return *key* unchanged if it obeys the key rules, else raise.

    .. versionadded:: 0.1
    """
    # ASCII only: one byte per character, and no lone surrogate to encode.
    if (
        type(key) is str
        and key.isascii()
        and len(key) <= MAX_KEY_BYTES
        and _VALID_KEY.fullmatch(key)
    ):
        return key
    _check_key(key, what="key", shown=key)
    return key  # type: ignore[return-value]  # _check_key proved it is a str


def validate_prefix(prefix: object) -> str:
    """Return *prefix* unchanged if it is a valid list prefix, else raise.

    ``""`` lists everything; otherwise ``prefix + "x"`` must be a valid key.

    .. versionadded:: 0.1
    """
    if not isinstance(prefix, str):
        raise SnapshotStoragePathError(
            f"invalid prefix {_show(prefix)}: must be a str, not {type(prefix).__name__}"
        )
    if prefix:
        _check_key(prefix + "x", what="prefix", shown=prefix)
    return prefix


def validate_dir_prefix(prefix: object) -> str:
    """Return *prefix* if it is a directory-like prefix (non-empty, ending in
    ``/``, and a valid list prefix), else raise.

    .. versionadded:: 0.1
    """
    validate_prefix(prefix)
    assert isinstance(prefix, str)
    if not prefix or not prefix.endswith("/"):
        raise SnapshotStoragePathError(
            f"invalid directory prefix {_show(prefix)}: must be non-empty and end with '/'"
        )
    return prefix


def validate_sync_prefixes(src_prefix: object, dst_prefix: object) -> tuple[str, str]:
    """Validate the two prefixes of a ``sync``: both directory-like and
    neither inside the other.

    .. versionadded:: 0.1
    """
    src = validate_dir_prefix(src_prefix)
    dst = validate_dir_prefix(dst_prefix)
    if src.startswith(dst) or dst.startswith(src):
        raise SnapshotStoragePathError(
            f"sync prefixes {_show(src)} and {_show(dst)} overlap: neither may start with the other"
        )
    return src, dst


def _is_key(name: str) -> bool:
    try:
        validate_key(name)
    except SnapshotStoragePathError:
        return False
    return True


def _parents(key: str) -> Iterator[str]:
    """Yield the directory prefixes of *key*, without their trailing ``/``."""
    index = key.find("/")
    while index != -1:
        yield key[:index]
        index = key.find("/", index + 1)


def _check_key(key: object, *, what: str, shown: object) -> None:
    def fail(rule: str) -> SnapshotStoragePathError:
        return SnapshotStoragePathError(f"invalid {what} {_show(shown)}: {rule}")

    if not isinstance(key, str):
        raise fail(f"must be a str, not {type(key).__name__}")
    if not key:
        raise fail("must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise fail("is not valid UTF-8 (lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise fail(f"is {size} UTF-8 bytes long, more than {MAX_KEY_BYTES}")
    bad = _FORBIDDEN.search(key)
    if bad:
        raise fail(f"character U+{ord(bad.group()):04X} {bad.group()!r} is not allowed")
    if key.startswith("/"):
        raise fail("must not start with '/'")
    if key.endswith("/"):
        raise fail("must not end with '/'")
    for segment in key.split("/"):
        if not segment:
            raise fail("empty segment ('//') is not allowed")
        if segment in (".", ".."):
            raise fail(f"segment {segment!r} is not allowed")


def _show(value: object) -> str:
    # Keys come from users and tenants: quote them, escape control
    # characters, and keep hostile megabyte-long strings out of logs.
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
