"""Points in time as Slurm's sacct and sreport take them (`--starttime`, `--endtime`), read in
the local time zone: `2026-09-01`, `2026-09-01T10:00[:SS]`, `10:00` (today), `09/01[/26]`,
`now`, `now-7days`, `now-2hours`, `today`, `midnight`, `yesterday`, `noon`. Standard library
only: the CLI imports this."""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta

_UNITS = {"": 1, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
          "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hour": 3600, "hours": 3600,
          "d": 86400, "day": 86400, "days": 86400,
          "w": 604800, "week": 604800, "weeks": 604800}
_RELATIVE = re.compile(r"^now\s*(?:([+-])\s*([0-9]{1,9})\s*([a-z]*))?$")
_ISO = re.compile(r"^([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"
                  r"(?:[t ]([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?)?$")
_CLOCK = re.compile(r"^([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?$")
_US = re.compile(r"^([0-9]{1,2})/([0-9]{1,2})(?:/([0-9]{2}|[0-9]{4}))?$")
FORMS = ("2026-09-01, 2026-09-01T10:00, 10:00 (today), 09/01/26, now, now-7days, now-2hours, "
         "today, yesterday, midnight, noon")


class WhenError(ValueError):
    """A time that cannot be read; the message says which forms can."""


def parse_when(text: str, now: float | None = None) -> float:
    """`text` as a Unix time (seconds), local time where it names a day or a clock time."""
    now = time.time() if now is None else now
    raw = text.strip().lower()
    today = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    named = {"today": today, "midnight": today, "yesterday": today - timedelta(days=1),
             "tomorrow": today + timedelta(days=1), "noon": today.replace(hour=12)}
    if raw in named:
        return _local(named[raw])
    try:
        if (match := _RELATIVE.match(raw)) is not None:
            sign, count, unit = match.groups()
            if sign is None:
                return now
            if unit not in _UNITS:
                raise _bad(text, f"unknown unit {unit!r} (seconds, minutes, hours, days, weeks)")
            return now + (1 if sign == "+" else -1) * int(count) * _UNITS[unit]
        if (match := _ISO.match(raw)) is not None:
            year, month, day, hour, minute, sec = (int(g) if g else 0 for g in match.groups())
            return _local(datetime(year, month, day, hour, minute, sec))
        if (match := _CLOCK.match(raw)) is not None:
            hour, minute, sec = (int(g) if g else 0 for g in match.groups())
            return _local(today.replace(hour=hour, minute=minute, second=sec))
        if (match := _US.match(raw)) is not None:
            month_text, day_text, year_text = match.groups()
            year = today.year if year_text is None else int(year_text) + (
                2000 if len(year_text) == 2 else 0)
            return _local(datetime(year, int(month_text), int(day_text)))
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, WhenError):
            raise
        raise _bad(text, str(exc)) from None
    raise _bad(text)


def _local(moment: datetime | date) -> float:
    return datetime(moment.year, moment.month, moment.day,
                    *((moment.hour, moment.minute, moment.second)
                      if isinstance(moment, datetime) else (0, 0, 0))).timestamp()


def _bad(text: str, why: str = "") -> WhenError:
    shown = text if len(text) <= 40 else text[:40] + "..."
    return WhenError(f"cannot read the time {shown!r}{f' ({why})' if why else ''}: use e.g. "
                     f"{FORMS}")


def month_start(now: float | None = None) -> float:
    """Local midnight of the first day of this month."""
    moment = datetime.fromtimestamp(time.time() if now is None else now)
    return _local(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
