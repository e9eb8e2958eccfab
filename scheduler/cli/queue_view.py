"""`labq queue`'s table: short reason codes and columns narrowed to the terminal, never the
REASON column (pure: rows in, a rich Table out)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from scheduler.cli.common import markup, plain
from scheduler.timeparse import format_duration

if TYPE_CHECKING:
    from rich.table import Table


def age(job: dict[str, Any], now: float) -> str:
    if job["state"] in ("RUNNING", "STARTING", "PREEMPTED") and job.get("started_at"):
        return format_duration(now - job["started_at"])
    if job.get("ended_at"):
        return format_duration((job["ended_at"] or now) - (job["started_at"] or job["ended_at"]))
    return format_duration(now - job["submitted_at"])


def _where(job: dict[str, Any]) -> str:
    if not job.get("node"):
        return "-"
    return f"{job['node']}:{','.join(str(i) for i in job['gpu_indices'])}"


def when(stamp: float | None) -> str:
    """A local time, with the date only when it is not today; '-' if unknown."""
    if not stamp:
        return "-"
    fmt = "%H:%M:%S" if time.strftime("%F") == time.strftime("%F", time.localtime(stamp)) \
        else "%F %H:%M"
    return time.strftime(fmt, time.localtime(stamp))


def _reason_code(job: dict[str, Any]) -> str:
    """The short code of why a job waits or ended (`Priority`, `NonZeroExitCode`); `labq show`
    has the words."""
    reasons = job.get("reasons") if job["state"] in ("PENDING", "HELD") else None
    text = reasons[0]["code"] if reasons else job.get("reason") or ""
    return str(text).split(":", 1)[0].split(" ", 1)[0]


# Columns `labq queue` narrows (with an ellipsis) when a row is wider than the terminal, and
# the narrowest each may become; the others, REASON among them, are never cut.
_SHRINKABLE = {"NAME": 6, "NODE:GPUS": 5, "ACCOUNT": 5, "USER": 4, "GPUS": 3, "START": 5}


def _fit(headers: list[str], rows: list[list[str]], width: int) -> dict[str, int]:
    """Widths for the shrinkable columns so a row (one space between columns) fits `width`:
    the widest is narrowed first, one cell at a time."""
    from rich.cells import cell_len

    widths = [max(cell_len(text) for text in (header, *(row[i] for row in rows)))
              for i, header in enumerate(headers)]
    over = sum(widths) + len(headers) - 1 - width
    fitted: dict[str, int] = {}
    while over > 0:
        narrowable = [i for i, h in enumerate(headers)
                      if h in _SHRINKABLE and widths[i] > _SHRINKABLE[h]]
        if not narrowable:
            break
        index = max(narrowable, key=lambda i: (widths[i], -i))
        widths[index] -= 1
        fitted[headers[index]] = widths[index]
        over -= 1
    return fitted


def queue_table(jobs: list[dict[str, Any]], now: float, with_start: bool,
                width: int) -> Table:
    """`labq queue`'s table: one line per job, at most `width` cells wide where the terminal
    allows, REASON a short code that is never cut."""
    from rich.table import Table

    headers = ["JOBID", "NAME", "USER", "ACCOUNT", "STATE", "GPUS", "NODE:GPUS", "TIME",
               *(["START"] if with_start else []), "REASON"]
    rows = []
    for job in jobs:
        gpus = f"{job['gpus']}{':' + job['gpu_type'] if job.get('gpu_type') else ''}"
        waiting = job["state"] in ("PENDING", "HELD")
        start = [when(job.get("est_start") if waiting else None)] if with_start else []
        cells = [job["id"], job["name"] or "-", job["user"], job["account"], job["state"],
                 gpus, _where(job), age(job, now), *start, _reason_code(job)]
        rows.append([plain(cell) for cell in cells])
    fitted = _fit(headers, rows, width)
    table = Table(box=None, header_style="bold", padding=(0, 1, 0, 0), pad_edge=False)
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ellipsis", width=fitted.get(header))
    for row in rows:
        table.add_row(*(markup(cell) for cell in row))
    return table
