"""The key and prefix rules, checked against an independent statement of them."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from django_snapshots import SnapshotStoragePathError
from django_snapshots.storage.keys import (
    FORBIDDEN_CHARACTERS,
    MAX_KEY_BYTES,
    validate_dir_prefix,
    validate_key,
    validate_prefix,
    validate_sync_prefixes,
)


def is_valid_key(key: object) -> bool:
    """The key rules, restated plainly for comparison."""
    if not isinstance(key, str) or not key:
        return False
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    if size > MAX_KEY_BYTES:
        return False
    if any(_is_forbidden(char) for char in key):
        return False
    return all(segment not in ("", ".", "..") for segment in key.split("/"))


def _is_forbidden(char: str) -> bool:
    """Controls, format characters but the joiners, line separators, Hangul
    fillers, backslash."""
    category = unicodedata.category(char)
    return (
        category == "Cc"
        or (category == "Cf" and char not in "\u200c\u200d")
        or category in ("Zl", "Zp")
        or char in "\u115f\u1160\u3164\uffa0\\"
    )


def accepts(validate: object, value: object) -> bool:
    try:
        result = validate(value)  # type: ignore[operator]
    except SnapshotStoragePathError:
        return False
    assert result is value
    return True


# Characters that matter to the rules, mixed with ordinary ones.
_TRICKY = st.sampled_from(
    ["a", "b", "Z", "0", ".", "/", "\\", "-", " ", "~", "\x00", "\t", "\n", "\x1f", "\x7f",
     "\x80", "\x85", "\x9f", "\xa0", "\u00e9", "\u2028", "\u2029", "\u202e", "\u2066",
     "\u200f", "\u202f", "\U0001f389", "\ud800"]
)  # fmt: skip
_ANY_TEXT = st.one_of(st.lists(_TRICKY, max_size=12).map("".join), st.text(max_size=30))

_SEGMENT_CHARS = st.characters(
    blacklist_categories=["Cs"], blacklist_characters="/\\\x7f", min_codepoint=0x20
).filter(lambda char: not _is_forbidden(char))
_SEGMENT = st.text(_SEGMENT_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
_VALID_KEY = (
    st.lists(_SEGMENT, min_size=1, max_size=6)
    .map("/".join)
    .filter(lambda k: len(k.encode()) <= MAX_KEY_BYTES)
)
# Short enough that a "/" can always be appended.
_SHORT_KEY = st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join)


@given(_VALID_KEY)
@example("db/2026-11-26.dump")
@example(".hidden/...")
@example("a..b/.c/c.")
def test_valid_keys_round_trip_unchanged(key: str) -> None:
    assert validate_key(key) is key


@given(_ANY_TEXT)
@example("")
@example("/")
@example("a//b")
@example("a/")
@example("/a")
@example("a\\b")
@example("a/./b")
@example("a/../b")
@example("\ud800")
def test_validate_key_agrees_with_the_rules(text: str) -> None:
    assert accepts(validate_key, text) == is_valid_key(text)


@given(st.lists(_SEGMENT, max_size=4), st.lists(_SEGMENT, max_size=4), st.sampled_from([".", ".."]))
def test_dot_segments_anywhere_are_rejected(before: list[str], after: list[str], dot: str) -> None:
    key = "/".join([*before, dot, *after])
    with pytest.raises(SnapshotStoragePathError, match=f"segment '{dot}' is not allowed"):
        validate_key(key)


@given(
    _VALID_KEY,
    st.integers(min_value=0),
    st.sampled_from(sorted(FORBIDDEN_CHARACTERS)),
)
def test_control_characters_and_backslashes_are_rejected_anywhere(
    key: str, position: int, char: str
) -> None:
    position %= len(key) + 1
    with pytest.raises(SnapshotStoragePathError, match="is not allowed"):
        validate_key(key[:position] + char + key[position:])


@pytest.mark.parametrize(
    "char", ["\x85", "\x80", "\x9b", "\u2028", "\u2029", "\u202e", "\u2066", "\u2069", "\u200f"]
)
def test_keys_that_would_print_as_two_lines_or_reordered_are_refused(char: str) -> None:
    # U+0085 is a line break for str.splitlines, U+009B a terminal's CSI, and
    # U+202E shows "exe.txt" as "txt.exe": none may reach an operator's screen.
    key = f"db/a{char}b.dump"
    with pytest.raises(SnapshotStoragePathError, match=r"character .* is not allowed"):
        validate_key(key)
    with pytest.raises(SnapshotStoragePathError, match=r"character .* is not allowed"):
        validate_prefix(f"db/a{char}")


def test_the_forbidden_characters_are_exactly_the_ones_that_do_not_print() -> None:
    # Every format character this Python knows (but the joiners scripts and
    # emoji need) is refused, and nothing that prints is.
    for point in range(0x110000):
        char = chr(point)
        if unicodedata.category(char) == "Cs":
            continue
        if char in FORBIDDEN_CHARACTERS:
            # Unassigned in older Unicode versions: format characters later.
            assert _is_forbidden(char) or unicodedata.category(char) == "Cn", hex(point)
        else:
            assert not _is_forbidden(char), hex(point)
    for char in ("\xa0", "\u00e9", "\u202f", "\u200d", "\u200c", "\u2800"):
        assert validate_key(f"a{char}b")


@pytest.mark.parametrize(
    "char", ["\u200b", "\u2060", "\ufeff", "\U000e0041", "\u00ad", "\u3164", "\u180e"]
)
def test_keys_that_would_print_like_another_key_are_refused(char: str) -> None:
    # "db.dump" and "db\u200b.dump" would be two keys that print alike.
    with pytest.raises(SnapshotStoragePathError, match=f"U\\+{ord(char):04X}"):
        validate_key(f"db{char}.dump")


@given(_VALID_KEY, st.sampled_from(["/{}", "{}/", "{}//x", "x//{}", "//{}"]))
def test_leading_trailing_and_double_slashes_are_rejected(key: str, shape: str) -> None:
    with pytest.raises(SnapshotStoragePathError):
        validate_key(shape.format(key))


def test_key_length_is_counted_in_utf8_bytes() -> None:
    assert validate_key("x" * MAX_KEY_BYTES)
    assert validate_key("\u00e9" * (MAX_KEY_BYTES // 2))
    with pytest.raises(SnapshotStoragePathError, match="1025 UTF-8 bytes long, more than 1024"):
        validate_key("x" * (MAX_KEY_BYTES + 1))
    with pytest.raises(SnapshotStoragePathError, match="1026 UTF-8 bytes"):
        validate_key("\u00e9" * (MAX_KEY_BYTES // 2 + 1))


@pytest.mark.parametrize("value", [None, b"db/x", 3, ["a"]])
def test_non_text_keys_and_prefixes_are_rejected_as_path_errors(value: object) -> None:
    with pytest.raises(SnapshotStoragePathError, match="must be a str"):
        validate_key(value)
    with pytest.raises(SnapshotStoragePathError, match="must be a str"):
        validate_prefix(value)


def test_errors_name_the_key_and_the_rule_and_are_value_errors() -> None:
    with pytest.raises(ValueError, match=r"^invalid key '\.\./x': segment '\.\.' is not allowed$"):
        validate_key("../x")
    with pytest.raises(
        ValueError, match=r"^invalid key 'a\\nb': character U\+000A '\\n' is not allowed$"
    ):
        validate_key("a\nb")
    with pytest.raises(ValueError, match=r"^invalid prefix '/': must not start with '/'$"):
        validate_prefix("/")


def test_error_messages_stay_short_for_huge_keys() -> None:
    with pytest.raises(SnapshotStoragePathError) as raised:
        validate_key("\\" * 1_000_000)
    assert len(str(raised.value)) < 300


@given(_ANY_TEXT)
@example("snap")
@example("snap/")
@example("a/..")
@example("..")
@example("../")
@example("a//")
@example("./")
def test_a_prefix_is_valid_when_empty_or_when_it_could_start_a_key(prefix: str) -> None:
    assert accepts(validate_prefix, prefix) == (prefix == "" or is_valid_key(prefix + "x"))


@given(_ANY_TEXT)
@example("a/")
@example("a")
@example("")
@example("/")
def test_a_directory_prefix_is_a_non_empty_valid_prefix_ending_in_slash(prefix: str) -> None:
    expected = prefix.endswith("/") and is_valid_key(prefix + "x")
    assert accepts(validate_dir_prefix, prefix) == expected


@given(_SHORT_KEY, _SHORT_KEY)
@example("a", "a/b")
@example("a", "a")
@example("a", "ab")
def test_sync_prefixes_must_not_overlap(first: str, second: str) -> None:
    src, dst = first + "/", second + "/"
    if src.startswith(dst) or dst.startswith(src):
        with pytest.raises(SnapshotStoragePathError, match="overlap"):
            validate_sync_prefixes(src, dst)
    else:
        assert validate_sync_prefixes(src, dst) == (src, dst)


@pytest.mark.parametrize(("src", "dst"), [("a", "b/"), ("a/", "b"), ("", "b/"), ("../", "b/")])
def test_sync_prefixes_must_both_be_directory_prefixes(src: str, dst: str) -> None:
    with pytest.raises(SnapshotStoragePathError):
        validate_sync_prefixes(src, dst)
