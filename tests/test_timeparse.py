"""Human time limits: `parse_duration` and `format_duration`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.timeparse import TimeLimitError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("30s", 30, id="seconds"),
        pytest.param("10m", 600, id="minutes"),
        pytest.param("2h", 7200, id="hours"),
        pytest.param("1d", 86400, id="days"),
        pytest.param("90", 5400, id="plain-number-is-minutes"),
        pytest.param("1:30:00", 5400, id="h-mm-ss"),
        pytest.param("2-00:00:00", 172800, id="d-hh-mm-ss"),
        pytest.param("05:30", 330, id="mm-ss"),
        pytest.param("1-02:03:04", 86400 + 7200 + 180 + 4, id="d-hh-mm-ss-all-fields"),
        pytest.param("1.5h", 5400, id="fractional-hours"),
        pytest.param("2H", 7200, id="upper-case-unit"),
        pytest.param("  45 m ", 2700, id="surrounding-spaces"),
        pytest.param("00:01", 1, id="one-second-clock"),
    ],
)
def test_parse_duration_accepts(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


# Slurm's six --time forms, read as sbatch reads them ("days-hours", "days-hours:minutes", ...).
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("30", 30 * 60, id="minutes"),
        pytest.param("30:15", 30 * 60 + 15, id="minutes:seconds"),
        pytest.param("2:30:15", 2 * 3600 + 30 * 60 + 15, id="hours:minutes:seconds"),
        pytest.param("1-12", 36 * 3600, id="days-hours"),
        pytest.param("1-12:30", 36 * 3600 + 30 * 60, id="days-hours:minutes"),
        pytest.param("1-12:30:15", 36 * 3600 + 30 * 60 + 15, id="days-hours:minutes:seconds"),
        pytest.param("2-0", 2 * 86400, id="days-zero-hours"),
        pytest.param("0-1", 3600, id="zero-days-one-hour"),
        pytest.param("0-0:01", 60, id="zero-days-one-minute"),
        pytest.param("3-05", 3 * 86400 + 5 * 3600, id="days-padded-hours"),
    ],
)
def test_parse_duration_reads_slurm_forms_as_slurm(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("abc", id="word"),
        pytest.param("10x", id="unknown-unit"),
        pytest.param("-5m", id="negative-suffixed"),
        pytest.param("-5", id="negative-plain"),
        pytest.param("0", id="zero-minutes"),
        pytest.param("0s", id="zero-seconds"),
        pytest.param("00:00", id="zero-clock"),
        pytest.param("0-00:00:00", id="zero-days-clock"),
        pytest.param("1:60:00", id="minutes-out-of-range"),
        pytest.param("1:00:60", id="seconds-out-of-range"),
        pytest.param("1:2:3:4", id="too-many-clock-parts"),
        pytest.param("1-", id="days-without-hours"),
        pytest.param("-12", id="hours-without-days"),
        pytest.param("1-12:60", id="days-hours-minutes-out-of-range"),
        pytest.param("1-1:2:3:4", id="days-with-too-many-clock-parts"),
        pytest.param("1-2-3", id="two-day-fields"),
        pytest.param("0-0", id="zero-days-hours"),
        pytest.param("x-01:00:00", id="non-numeric-days"),
        pytest.param("1d2h", id="compound-units"),
        pytest.param("1:aa", id="non-numeric-clock"),
        pytest.param("1e3s", id="exponent"),
        pytest.param("inf", id="infinity-word"),
        pytest.param(":30", id="missing-minutes"),
    ],
)
def test_parse_duration_rejects_with_time_limit_error(text: str) -> None:
    with pytest.raises(TimeLimitError) as info:
        parse_duration(text)
    message = str(info.value)
    assert "\n" not in message
    assert "time limit" in message


def test_parse_duration_error_names_the_bad_text_and_shows_good_forms() -> None:
    with pytest.raises(TimeLimitError, match=r"'1:99:00'.*30s, 10m, 2h, 1d"):
        parse_duration("1:99:00")


def test_parse_duration_never_returns_zero_for_sub_half_second() -> None:
    with pytest.raises(TimeLimitError):
        parse_duration("0.4s")


def test_parse_duration_huge_number_raises_time_limit_error() -> None:
    with pytest.raises(TimeLimitError):
        parse_duration("9" * 400 + "s")


def test_parse_duration_superscript_digit_raises_time_limit_error() -> None:
    with pytest.raises(TimeLimitError):
        parse_duration("²")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(None, "-", id="none"),
        pytest.param(0, "0s", id="zero"),
        pytest.param(-5, "0s", id="negative-clamped"),
        pytest.param(45, "45s", id="seconds"),
        pytest.param(59.9, "59s", id="fraction-truncated"),
        pytest.param(60, "1:00", id="one-minute"),
        pytest.param(723, "12:03", id="minutes-seconds"),
        pytest.param(3600, "1:00:00", id="one-hour"),
        pytest.param(3 * 3600 + 4 * 60 + 5, "3:04:05", id="hours"),
        pytest.param(86400, "1-00:00:00", id="one-day"),
        pytest.param(2 * 86400 + 3 * 3600 + 4 * 60 + 5, "2-03:04:05", id="days"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=1, max_value=400 * 86400))
def test_format_then_parse_round_trips(seconds: int) -> None:
    # Every form format_duration writes ("45s", "M:SS", "H:MM:SS", "D-HH:MM:SS") parses back.
    assert parse_duration(format_duration(seconds)) == seconds
