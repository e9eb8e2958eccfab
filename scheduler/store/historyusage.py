"""The usage hash's per-day fields as a report over a range of UTC days (pure, no I/O):
`day:{unix day}:{account}|{user}` holds the billed units charged that day and
`dgpu:{unix day}:{account}|{user}` the GPU-seconds (both written by the charge in
lua/_common.lua, the same amounts added to each job's `billed` and `gpu_seconds`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass
class UsageRow:
    """One association's usage over the report's days."""

    account: str
    user: str
    gpu_seconds: float = 0.0
    billed: float = 0.0


_KINDS = {"day": "billed", "dgpu": "gpu_seconds"}


def usage_rows(raw: Mapping[str, str], first_day: int, last_day: int) -> list[UsageRow]:
    """Each (account, user) with usage on UTC days `first_day`..`last_day` (unix day numbers,
    both included): its GPU-seconds and billed units, in account then user order."""
    rows: dict[tuple[str, str], UsageRow] = {}
    for name, value in raw.items():
        kind, _, rest = name.partition(":")
        metric = _KINDS.get(kind)
        if metric is None:
            continue
        day_text, _, assoc = rest.partition(":")
        if not day_text.lstrip("-").isdigit() or not first_day <= int(day_text) <= last_day:
            continue
        account, _, user = assoc.partition("|")
        try:
            amount = float(value)
        except ValueError:
            continue
        row = rows.setdefault((account, user), UsageRow(account, user))
        setattr(row, metric, getattr(row, metric) + amount)
    return [rows[key] for key in sorted(rows)]
