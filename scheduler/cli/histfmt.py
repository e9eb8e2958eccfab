"""`labq history`'s columns, as sacct names them (`--format JobID,JobName%30,State`), and its
three outputs: a table sized to the terminal, Slurm's `|`-separated lines (`--parsable`, like
sacct -p; `--parsable2` without the last `|`) and JSON. Standard library and rich only."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scheduler.cli.common import Col, plain
from scheduler.wire import PRIVATE_FIELDS

if TYPE_CHECKING:
    from scheduler.cli.common import Cell

Record = dict[str, Any]


def stamp(value: Any) -> str:
    """A Unix time as sacct shows it, local: 2026-09-01T10:00:00 (`Unknown` if unset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(float(value))) if value \
        else "Unknown"


def clock(seconds: Any) -> str:
    """A duration as sacct shows it: [D-]HH:MM:SS."""
    if seconds is None:
        return ""
    whole = max(0, int(round(float(seconds))))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}" if days \
        else f"{hours:02d}:{minutes:02d}:{secs:02d}"


def size(value: Any) -> str:
    """Bytes as a short binary size: 512K, 3.2G."""
    if value is None:
        return ""
    amount = float(value)
    for unit in ("", "K", "M", "G", "T"):
        if amount < 1024 or unit == "T":
            return f"{amount:.0f}{unit}" if unit in ("", "K") else f"{amount:.1f}{unit}"
        amount /= 1024
    return ""


def elapsed(job: Record) -> float | None:
    started, ended = job.get("started_at"), job.get("ended_at")
    return float(ended) - float(started) if started is not None and ended is not None \
        else None


def _hours(value: Any) -> str:
    return "" if value is None else f"{float(value) / 3600:.2f}"


def _nodes(job: Record) -> str:
    parts = job.get("parts") or []
    if len(parts) > 1:
        return ",".join(str(part[0]) for part in parts)
    return str(job.get("node") or "None")


@dataclass(frozen=True)
class Column:
    """One `--format` column: its header, what it shows of a job, the job field it comes
    from where that may be private, and how it sits in the table."""

    header: str
    value: Callable[[Record], str]
    field: str = ""
    col: Col | None = None


def _field(name: str, empty: str = "") -> Callable[[Record], str]:
    return lambda job: empty if job.get(name) in (None, "") else str(job[name])


_NAME_COL, _RIGHT = Col("JobName", cut=8), Col("", right=True)
COLUMNS: dict[str, Column] = {c.header.lower(): c for c in (
    Column("JobID", _field("id")),
    Column("JobName", _field("name"), col=_NAME_COL),
    Column("User", _field("user"), col=Col("User", cut=6)),
    Column("Account", _field("account"), col=Col("Account", cut=6)),
    Column("State", _field("state")),
    Column("Reason", _field("reason", "None"), col=Col("Reason", cut=6, drop=2)),
    Column("ExitCode", _field("exit_code"), "exit_code", _RIGHT),
    Column("Submit", lambda j: stamp(j.get("submitted_at"))),
    Column("Start", lambda j: stamp(j.get("started_at"))),
    Column("End", lambda j: stamp(j.get("ended_at"))),
    Column("Elapsed", lambda j: clock(elapsed(j)), col=_RIGHT),
    Column("Timelimit", lambda j: clock(j.get("time_limit_s")), col=_RIGHT),
    Column("GPUs", _field("gpus"), col=_RIGHT),
    Column("GPUType", _field("gpu_type")),
    Column("NNodes", _field("nodes"), col=_RIGHT),
    Column("NodeList", _nodes, col=Col("NodeList", cut=6)),
    Column("QOS", _field("qos")),
    Column("GPUHours", lambda j: _hours(j.get("gpu_seconds")), "gpu_seconds", _RIGHT),
    Column("Billed", lambda j: _hours(j.get("billed")), "billed", _RIGHT),
    Column("TotalCPU", lambda j: clock(j.get("cpu_seconds")), "cpu_seconds", _RIGHT),
    Column("MaxRSS", lambda j: size(j.get("memory_peak_bytes")), "memory_peak_bytes", _RIGHT),
    Column("WorkDir", _field("workdir"), "workdir", Col("WorkDir", cut=8, drop=1)),
    Column("ArrayJobID", _field("array_job")),
    Column("ArrayTaskID", _field("array_task")),
    Column("Restarts", _field("restarts", "0"), col=_RIGHT),
)}
# Other names sacct users type for the same columns.
ALIASES = {"name": "jobname", "jobidraw": "jobid", "nodes": "nodelist", "node": "nodelist",
           "cputime": "totalcpu", "mempeak": "maxrss", "allocgpus": "gpus", "ngpus": "gpus",
           "timelimitraw": "timelimit", "billing": "billed"}
DEFAULT_FORMAT = "JobID,JobName,User,Account,State,ExitCode,GPUs,NodeList,End,Elapsed,GPUHours"


class FormatError(ValueError):
    """A `--format` that names no known column; the message lists them."""


def parse_format(text: str) -> list[tuple[Column, int]]:
    """`JobID,JobName%30,...` as columns, each with the width asked (`%30`; 0: as wide as its
    cells)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, width = part.partition("%")
        key = ALIASES.get(name.lower(), name.lower())
        if key not in COLUMNS:
            raise FormatError(f"--format: no column {plain(name)!r}; the columns are "
                              f"{', '.join(c.header for c in COLUMNS.values())}")
        if width and not (width.isdigit() and 0 < int(width) <= 1000):
            raise FormatError(f"--format {plain(part)!r}: the width after % is a number, 1 "
                              "to 1000")
        out.append((COLUMNS[key], int(width or 0)))
    if not out:
        raise FormatError("--format: give columns, e.g. JobID,JobName,State,Elapsed")
    return out


def cell(column: Column, job: Record) -> str:
    """What `column` shows of `job`: `(private)` where the API hid its field from the caller."""
    if column.field in PRIVATE_FIELDS and job.get("private") and job.get(column.field) is None:
        return "(private)"
    return column.value(job)


def parsable(columns: list[tuple[Column, int]], jobs: list[Record], header: bool,
             trailing: bool) -> list[str]:
    """Slurm's `|`-separated lines: sacct -p (`trailing`: each line ends in `|`) or -P."""
    end = "|" if trailing else ""
    lines = ["|".join(c.header for c, _ in columns) + end] if header else []
    lines += ["|".join(plain(cell(c, job)).replace("|", "\\|") for c, _ in columns) + end
              for job in jobs]
    return lines


def table(columns: list[tuple[Column, int]], jobs: list[Record]) -> tuple[list[Col],
                                                                        list[list[Cell]]]:
    """The columns and rows of `print_table`: a `%N` width cuts a column's cells to N."""
    cols = []
    for column, _ in columns:
        base = column.col or Col(column.header)
        cols.append(Col(column.header, base.cut, base.right, base.drop))
    rows: list[list[Cell]] = []
    for job in jobs:
        row: list[Cell] = []
        for column, width in columns:
            text = cell(column, job)
            row.append(text[:width] if width else text)
        rows.append(row)
    return cols, rows


def id_order(job_id: Any) -> tuple[int, int, str]:
    """Jobs in id order, an array's tasks by index after it: 9, 17, 17_2, 17_10."""
    text = str(job_id)
    head, _, index = text.partition("_")
    return (int(head) if head.isdigit() else 1 << 62,
            int(index) + 1 if index.isdigit() else 0, text)
