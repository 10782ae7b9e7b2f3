"""The key and prefix rules, checked against an independent statement of them."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from django_snapshots import SnapshotStoragePathError
from django_snapshots.storage.keys import (
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
    if any(ord(char) < 0x20 or char in "\x7f\\" for char in key):
        return False
    return all(segment not in ("", ".", "..") for segment in key.split("/"))


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
     "\x80", "\u00e9", "\u2028", "\U0001f389", "\ud800"]
)  # fmt: skip
_ANY_TEXT = st.one_of(st.lists(_TRICKY, max_size=12).map("".join), st.text(max_size=30))

_SEGMENT_CHARS = st.characters(
    blacklist_categories=["Cs"], blacklist_characters="/\\\x7f", min_codepoint=0x20
)
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
    st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f", "\\"]),
)
def test_control_characters_and_backslashes_are_rejected_anywhere(
    key: str, position: int, char: str
) -> None:
    position %= len(key) + 1
    with pytest.raises(SnapshotStoragePathError, match="is not allowed"):
        validate_key(key[:position] + char + key[position:])


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
    with pytest.raises(ValueError, match=r"^invalid key 'a\\nb': character '\\n' is not allowed$"):
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
