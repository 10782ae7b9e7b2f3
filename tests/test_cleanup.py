"""The arguments every ``cleanup`` takes (``parse_duration``,
``check_older_than``, ``check_cleanup_arguments``): what is accepted, and
that anything else is refused with the documented exception before any
I/O."""

from __future__ import annotations

from datetime import timedelta

import pytest

from django_snapshots.storage.cleanup import check_older_than, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
    ],
)
def test_a_duration_is_whole_numbers_with_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["99999999999w", "9" * 30 + "s", "1000000000d"])
def test_a_duration_too_long_for_a_timedelta_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["\uff12\uff14h", "\u0662\u0664h", "2\u00b2h"])
def test_a_duration_is_spelled_with_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [1e20, 10**20, 10**9 * 86400, 1e300])
def test_an_age_too_long_for_a_timedelta_is_a_value_error(seconds: float) -> None:
    with pytest.raises(ValueError, match="too long"):
        check_older_than(seconds)


@pytest.mark.parametrize("seconds", [-1e-7, -1e-300, -(10**-9)])
def test_a_negative_age_is_refused_even_when_it_rounds_to_zero(seconds: float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        check_older_than(seconds)


@pytest.mark.parametrize("seconds", [0, 0.0, -0.0])
def test_an_age_of_zero_is_accepted(seconds: float) -> None:
    assert check_older_than(seconds) == timedelta(0)
