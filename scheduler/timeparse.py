"""Parsing of human time limits (`30s`, `10m`, `2h`, `1d`, `HH:MM:SS`, Slurm's `D-HH:MM`)."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SUFFIXED = re.compile(r"^\s*([0-9]{1,9}(?:\.[0-9]{1,6})?)\s*([smhd])\s*$", re.IGNORECASE)
_DIGITS = re.compile(r"^[0-9]{1,9}$")


class TimeLimitError(ValueError):
    """A time limit that cannot be understood."""


def parse_duration(text: str) -> int:
    """Return `text` as whole seconds (> 0).

    Accepts `30s`, `10m`, `2h`, `1d` and Slurm's six forms: `M` (a plain number is minutes),
    `M:SS`, `H:MM:SS`, `D-H`, `D-H:MM` and `D-H:MM:SS`. With a day field, the fields that
    follow are hours, then minutes, then seconds, so `1-12:30` is 36 h 30 min.
    """
    raw = text.strip()
    if not raw:
        raise TimeLimitError("empty time limit: use e.g. 30s, 10m, 2h, 1d or HH:MM:SS")
    seconds: float
    match = _SUFFIXED.match(raw)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    elif _DIGITS.match(raw):
        seconds = int(raw) * 60
    else:
        seconds = _parse_clock(raw)
    whole = int(round(seconds))
    if whole <= 0:
        raise TimeLimitError(f"time limit {text!r} must be at least one second")
    return whole


def _parse_clock(raw: str) -> int:
    if "-" in raw:
        day_text, clock = raw.split("-", 1)
        if not _DIGITS.match(day_text):
            raise _bad(raw)
        hours, minutes, secs = _fields(raw, clock, (1, 3))
        hours += int(day_text) * 24
    else:
        hours, minutes, secs = _fields(raw, raw, (2, 3))
        if raw.count(":") == 1:  # M:SS, as Slurm: the two fields are minutes and seconds
            hours, minutes, secs = 0, hours, minutes
    if minutes >= 60 or secs >= 60:
        raise _bad(raw)
    return hours * 3600 + minutes * 60 + secs


def _fields(raw: str, clock: str, counts: tuple[int, int]) -> tuple[int, int, int]:
    """`clock`'s colon-separated fields as (first, second, third), missing ones 0."""
    parts = clock.split(":")
    if not counts[0] <= len(parts) <= counts[1] or not all(_DIGITS.match(p) for p in parts):
        raise _bad(raw)
    numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
    return numbers[0], numbers[1], numbers[2]


def _bad(raw: str) -> TimeLimitError:
    return TimeLimitError(
        f"cannot read time limit {raw!r}: use e.g. 30s, 10m, 2h, 1d, HH:MM:SS, D-HH or D-HH:MM:SS"
    )


def _dhms(total: int) -> tuple[int, int, int, int]:
    days, rest = divmod(max(0, total), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return days, hours, minutes, secs


def format_duration(seconds: float | None) -> str:
    """Short human form: `45s`, `12:03`, `3:04:05`, `2-03:04:05`."""
    if seconds is None:
        return "-"
    days, hours, minutes, secs = _dhms(int(seconds))
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    if minutes:
        return f"{minutes}:{secs:02d}"
    return f"{secs}s"


def readable_duration(seconds: float | None) -> str:
    """A duration for a person: `45s`, `12m 03s`, `1h 00m`, `2d 03h 04m`; `-` if unknown."""
    if seconds is None:
        return "-"
    days, hours, minutes, secs = _dhms(round(seconds))
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
