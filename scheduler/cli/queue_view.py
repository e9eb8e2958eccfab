"""`labq queue`'s table and `labq show`'s lines: pure functions of the API's job records.

`queue_table` fits the terminal (`common.fitted_table`): names are cut with an ellipsis, ids,
states, times and the REASON code never. Its columns are chosen with `-o/--format` (`FIELDS`:
names such as `id,user,state`, or squeue's `%i %u %T`); its rows filtered with `-t/--state`
(`parse_states`) and `-j/--jobs` (`parse_ids`, `job_matches`)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from scheduler.cli.common import Col, Named, fitted_table, plain
from scheduler.model import GPU_HOLDING_STATES, TERMINAL_STATES, WAITING_STATES, JobState
from scheduler.timeparse import format_duration, readable_duration
from scheduler.wire import PRIVATE_FIELDS

if TYPE_CHECKING:
    from rich.table import Table

    from scheduler.cli.common import Cell

Job = dict[str, Any]  # a job record as GET /v1/jobs answers it (scheduler.wire.JOB_FIELDS)
WAITING = WAITING_STATES  # (the lifecycle is declared once, in scheduler.model)
TERMINAL = TERMINAL_STATES


def age(job: Job, now: float) -> str:
    """Run time (running or ended jobs) or time waited (waiting ones), as squeue's TIME."""
    if job["state"] in GPU_HOLDING_STATES and job.get("started_at"):
        return format_duration(now - job["started_at"])
    if job.get("ended_at"):
        return format_duration((job["ended_at"] or now) - (job["started_at"] or job["ended_at"]))
    return format_duration(now - job["submitted_at"])


readable = readable_duration  # (a duration for a person; the views' name for it)


def when(stamp: float | None, now: float | None = None) -> str:
    """A local time, with the date only when it is not today; '-' if unknown."""
    if not stamp:
        return "-"
    today = time.strftime("%F", time.localtime(now))
    fmt = "%H:%M:%S" if today == time.strftime("%F", time.localtime(stamp)) else "%F %H:%M"
    return time.strftime(fmt, time.localtime(stamp))


def when_short(stamp: float | None, now: float) -> str:
    """A local time in at most 12 cells, for a table: `14:05:09` today, `Tue 14:05` within
    six days, `Jun 03 14:05` this year, else the date."""
    if not stamp:
        return "-"
    local, today = time.localtime(stamp), time.localtime(now)
    if local[:3] == today[:3]:
        return time.strftime("%H:%M:%S", local)
    if abs(stamp - now) < 6 * 86400:
        return time.strftime("%a %H:%M", local)
    return time.strftime("%b %d %H:%M" if local.tm_year == today.tm_year else "%F", local)


def ranges(indices: list[int]) -> str:
    """GPU indices as few cells as they need: `0,1`, `0-3`, `0-2,5`."""
    out: list[str] = []
    run: list[int] = []
    for index in [*sorted(indices), None]:
        if run and (index is None or index != run[-1] + 1):
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
            run = []
        if index is not None:
            run.append(index)
    return ",".join(out)


def _reason_code(job: Job) -> str:
    """The short code of why a job waits or ended (`Priority`, `NonZeroExitCode`); `labq show`
    has the words."""
    reasons = job.get("reasons") if job["state"] in WAITING else None
    text = reasons[0]["code"] if reasons else job.get("reason") or ""
    return str(text).split(":", 1)[0].split(" ", 1)[0]


# ---------------------------------------------------------------------------- states


# Slurm's short state codes (squeue -t), as labq's states. PD is pending or held, as in Slurm,
# where a held job is pending with a hold reason.
SHORT_STATES: dict[str, tuple[str, ...]] = {
    "PD": (JobState.PENDING, JobState.HELD), "CF": (JobState.STARTING,),
    "R": (JobState.RUNNING,), "CD": (JobState.SUCCEEDED,), "F": (JobState.FAILED,),
    "CA": (JobState.CANCELLED,), "TO": (JobState.TIMEOUT,), "PR": (JobState.PREEMPTED,),
}
STATES: tuple[str, ...] = tuple(JobState)
_ALIASES = {"COMPLETED": (JobState.SUCCEEDED,), "ALL": STATES}


def short_state(state: str) -> str:
    """The Slurm code of a labq state (`PD`, `R`); HELD is `PD` as in Slurm."""
    return next((code for code, states in SHORT_STATES.items() if state in states), state)


def parse_states(text: str) -> set[str]:
    """`-t/--state`: a comma list of states, full (`pending`) or Slurm's codes (`PD`, `R`,
    `CA`, `F`, `TO`, `CD`, `CF`, `PR`), any case; `all`. Raises ValueError naming the
    unknown one."""
    wanted: set[str] = set()
    for word in (w.strip().upper() for w in text.split(",")):
        if not word:
            continue
        states = (word,) if word in STATES else SHORT_STATES.get(word) or _ALIASES.get(word)
        if not states:
            raise ValueError(f"--state {word}: not a state; use {','.join(STATES)}, Slurm's "
                             f"{','.join(SHORT_STATES)}, or all")
        wanted.update(states)
    if not wanted:
        raise ValueError("--state: give one or more states, e.g. PENDING,RUNNING or PD,R")
    return wanted


# ---------------------------------------------------------------------------- job ids

_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")


def parse_ids(text: str) -> set[str]:
    """`-j/--jobs`: a comma list of job ids (`17`, an array's task `17_5`). Raises ValueError
    for anything else."""
    ids = {word.strip() for word in text.split(",") if word.strip()}
    bad = sorted(i for i in ids if not _ID.match(i))
    if bad or not ids:
        what = ",".join(bad) if bad else repr(text)
        raise ValueError(f"--jobs {what}: give job ids such as 17 or 17_5, comma-separated")
    return ids


def in_tasks(index: int, tasks: str) -> bool:
    """Whether an array's `tasks` (`4-99`, `1,3,5-7`, `0-20:2`) hold `index`."""
    for part in tasks.split("%", 1)[0].split(","):
        span, _, step_text = part.partition(":")
        first, _, last = span.partition("-")
        try:
            low, high = int(first), int(last or first)
            step = int(step_text or 1)
        except ValueError:
            continue
        if low <= index <= high and (index - low) % max(1, step) == 0:
            return True
    return False


def job_matches(job: Job, ids: set[str]) -> bool:
    """Whether `job` is one of `ids`: itself, a task of an array asked for by the array's id,
    or the waiting line of an array (`17_[4-99%8]`) that holds an asked-for task."""
    if job["id"] in ids:
        return True
    array = job.get("array_job") or ""
    if not array:
        return False
    if array in ids:
        return True
    tasks = str(job.get("array_tasks") or "")
    asked = (want.split("_", 1) for want in ids if "_" in want)
    return bool(tasks) and any(of == array and in_tasks(int(index), tasks)
                               for of, index in asked)


# ---------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class Field:
    """One column `labq queue` can show: its name for `-o`, squeue's letter, the column and
    how a record fills it."""

    name: str
    letter: str
    col: Col
    cell: Callable[[Job, float], Cell]


def _gpus(job: Job, now: float) -> Cell:
    gpu_type = job.get("gpu_type")
    return Named(gpu_type, f"{job['gpus']}:") if gpu_type else str(job["gpus"])


def where_cell(job: Job) -> Cell:
    """Where a job runs: node:GPUs, or every node:GPUs of a job across nodes (head first)."""
    return _where(job, 0.0)


def _where(job: Job, now: float) -> Cell:
    if not job.get("node"):
        return "-"
    parts = job.get("parts") or []
    if len(parts) > 1:  # across nodes: each node and its GPUs, the head first
        return plain("+".join(f"{node}:{ranges(gpus)}" for node, gpus in parts))
    return Named(job["node"], after=f":{ranges(job.get('gpu_indices') or [])}")


def _start(job: Job, now: float) -> str:
    """The expected start of a waiting job, the start of one that started."""
    return when_short(job.get("est_start") if job["state"] in WAITING else job.get("started_at"),
                      now)


FIELDS = {field.name: field for field in (
    Field("id", "i", Col("JOBID"), lambda j, now: plain(j["id"])),
    Field("name", "j", Col("NAME", cut=6), lambda j, now: Named(j.get("name") or "-")),
    Field("user", "u", Col("USER", cut=4), lambda j, now: Named(j["user"])),
    Field("account", "a", Col("ACCOUNT", cut=5, drop=2), lambda j, now: Named(j["account"])),
    Field("state", "T", Col("STATE"), lambda j, now: j["state"]),
    Field("st", "t", Col("ST"), lambda j, now: short_state(j["state"])),
    Field("gpus", "b", Col("GPUS", cut=1), _gpus),
    Field("node", "N", Col("NODE:GPUS", cut=5, drop=1), _where),
    Field("time", "M", Col("TIME", right=True), lambda j, now: age(j, now)),
    Field("limit", "l", Col("LIMIT", right=True),
          lambda j, now: format_duration(j.get("time_limit_s"))),
    Field("start", "S", Col("START"), _start),
    Field("submit", "V", Col("SUBMIT"), lambda j, now: when_short(j.get("submitted_at"), now)),
    Field("qos", "q", Col("QOS", cut=3), lambda j, now: Named(j.get("qos") or "-")),
    Field("dependency", "E", Col("DEPENDENCY"), lambda j, now: j.get("dependency") or "-"),
    Field("reason", "r", Col("REASON"), lambda j, now: plain(_reason_code(j))),
)}
DEFAULT = ("id", "name", "user", "account", "state", "gpus", "node", "time", "reason")
FORMAT_HELP = ("columns, comma-separated, from: " + " ".join(FIELDS) + " (default: " +
               ",".join(DEFAULT) + "); or squeue's letters: " +
               " ".join(f"%{f.letter}" for f in FIELDS.values()))

_KNOWN = (",".join(FIELDS) + " or squeue's " + " ".join(f"%{f.letter}" for f in FIELDS.values()))


def parse_format(text: str) -> list[str]:
    """`-o/--format`: field names (`id,user,state`, any case) or squeue's letters (`%i %u %T`,
    widths such as `%.18i` accepted and ignored: the table sizes its columns). Raises
    ValueError naming the unknown field."""
    if "%" in text:
        letters = {f.letter: f.name for f in FIELDS.values()}
        found = re.findall(r"%[.]?[0-9]*(.)", text)
        unknown = [letter for letter in found if letter not in letters]
        if unknown or not found:
            raise ValueError(f"--format %{unknown[0] if unknown else ''}: unknown field; use "
                             f"{_KNOWN}")
        return [letters[letter] for letter in found]
    names = [word.strip().lower() for word in text.split(",") if word.strip()]
    unknown = [name for name in names if name not in FIELDS]
    if unknown or not names:
        what = unknown[0] if unknown else repr(text)
        raise ValueError(f"--format {what}: unknown field; use {_KNOWN}")
    return names


def queue_table(jobs: list[Job], now: float, with_start: bool, width: int | None,
                fields: list[str] | None = None, header: bool = True) -> Table:
    """`labq queue`'s table: one line per job, fitted to `width` (None: no limit). By default
    the `DEFAULT` columns (START before REASON `with_start`), ACCOUNT then NODE:GPUS left out
    where cutting names is not enough; the `fields` asked for are all shown."""
    chosen = [FIELDS[name] for name in fields] if fields else \
        [FIELDS[name] for name in DEFAULT[:-1]] + \
        ([FIELDS["start"]] if with_start else []) + [FIELDS["reason"]]
    cols = [f.col if not fields else replace(f.col, drop=0) for f in chosen]
    rows = [[f.cell(job, now) for f in chosen] for job in jobs]
    return fitted_table(cols, rows, width, header)[0]


# ---------------------------------------------------------------------------- labq show


def _paths(job: Job) -> tuple[str, str]:
    """The output and error files, their patterns expanded as the job's runner does
    (`noderun.output_path`); ("", "") when the record does not say."""
    from scheduler.model import Job as ModelJob
    from scheduler.noderun import error_path, output_path

    if job.get("workdir") is None:
        return "", ""
    model = ModelJob(
        id=job["id"], user=job["user"], account=job["account"], state=JobState(job["state"]),
        gpus=job["gpus"], command=job.get("command") or [], submitted_at=job["submitted_at"],
        time_limit_s=job["time_limit_s"], name=job.get("name") or "",
        workdir=job["workdir"], node=job.get("node"), output=job.get("output") or "",
        error=job.get("error") or "", array_job=job.get("array_job") or "",
        array_task=job.get("array_task"))
    return output_path(model), error_path(model)


def _private(job: Job, name: str, shown: str) -> str:
    """`shown`, or `(private)` where the API hid the field `name` from this caller (one of
    `wire.PRIVATE_FIELDS`, declared there once), `-` if unset."""
    if job.get(name) is None:
        return "(private)" if job.get("private") and name in PRIVATE_FIELDS else "-"
    return shown


def _stamp(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def _identity(job: Job) -> list[tuple[str, str]]:
    array = job.get("array_job") or ""
    ident = plain(job["id"])
    if job.get("array_tasks"):
        throttle = job.get("array_throttle") or 0
        ident += (f" (tasks {plain(job['array_tasks'])} of array {plain(array)} waiting"
                  f"{f', at most {throttle} at once' if throttle else ''})")
    elif array and job.get("array_task") is not None:
        ident += f" (task {job['array_task']} of array {plain(array)})"
    gpus = f"{job['gpus']}" + (f" of type {plain(job['gpu_type'])}" if job.get("gpu_type")
                               else "")
    count = job.get("nodes") or 1
    if count > 1:
        gpus += f" ({job['gpus'] // count} on each of {count} nodes)"
    where = f"{plain(job['node'])}, GPU {ranges(job.get('gpu_indices') or [])}" \
        if job.get("node") else "-"
    if len(job.get("parts") or []) > 1:
        where = "; ".join(f"{plain(node)}, GPU {ranges(gpus)}" + (" (head)" if i == 0 else "")
                          for i, (node, gpus) in enumerate(job["parts"]))
    return [("id", ident), ("name", plain(job.get("name") or "-")), ("user", plain(job["user"])),
            ("account", plain(job["account"])), ("qos", plain(job.get("qos") or "-")),
            ("state", job["state"]), ("reason", plain(job.get("reason") or "-")),
            ("gpus", gpus), ("node", where)]


def _files(job: Job) -> list[tuple[str, str]]:
    command = job.get("command")
    out, err = _paths(job)
    output = _private(job, "output", out or "-")
    if out and job.get("output"):
        output += f" (from {plain(job['output'])})"
    error = _private(job, "error", err or "-")
    if job.get("error") == "":
        error = "- (with the output)"
    elif err and job.get("error") and err != job.get("error"):
        error += f" (from {plain(job['error'])})"
    script = job.get("script")
    return [
        ("command", _private(job, "command", plain(" ".join(command or [])) or "-")),
        ("batch script", _private(job, "script", "captured at submit" if script else "no")),
        ("submit dir", _private(job, "submit_dir", plain(job.get("submit_dir")) or "-")),
        ("workdir", _private(job, "workdir", plain(job.get("workdir")))),
        ("output", plain(output)), ("error", plain(error)),
    ]


def _times(job: Job, now: float) -> list[tuple[str, str]]:
    limit = job.get("time_limit_s")
    rows = [("dependency", plain(job.get("dependency") or "-")), ("time limit", readable(limit)),
            ("submitted", _stamp(job.get("submitted_at"))),
            ("started", _stamp(job.get("started_at"))), ("ended", _stamp(job.get("ended_at")))]
    started = job.get("started_at")
    if job["state"] in WAITING:
        rows.append(("waited", readable(now - float(job.get("queued_at")
                                                      or job["submitted_at"]))))
        if job.get("est_start"):
            rows.append(("expected start", f"{_stamp(job['est_start'])} (if running jobs use "
                                           "their whole limits)"))
    elif started:
        rows.append(("ran", readable((job.get("ended_at") or now) - started)))
        if limit and job["state"] not in TERMINAL:
            deadline = started + limit
            rows.append(("deadline", f"{_stamp(deadline)} (in {readable(deadline - now)})"))
    return rows


def _costs(job: Job) -> list[tuple[str, str]]:
    gpu_s, billed = job.get("gpu_seconds"), job.get("billed")
    return [
        ("exit code", _private(job, "exit_code", str(job.get("exit_code")))
         if job["state"] in TERMINAL else "-"),
        ("GPU time", _private(job, "gpu_seconds", f"{(gpu_s or 0) / 3600:.2f} GPU-hours")),
        ("billed", _private(job, "billed", f"{(billed or 0) / 3600:.2f} GPU-hours")),
        ("restarts", str(job.get("restarts") or 0)),
    ]


def show_lines(job: Job, now: float) -> list[tuple[str, str]]:
    """`labq show`'s (label, value) lines: durations and costs in words, times local, the
    output and error files, the deadline of a running job, why a waiting one waits; of a job
    read from the history, what the history keeps."""
    if job.get("history"):  # it left the hot store: no command, script or output paths kept
        kept = [("history", "from the history: its command, environment, script and output "
                            "file are not kept"), ("workdir", plain(job.get("workdir")))]
        return [*_identity(job), *kept, *_times(job, now), *_costs(job)]
    rows = [*_identity(job), *_files(job), *_times(job, now), *_costs(job)]
    for reason in job.get("reasons") or [] if job["state"] in WAITING else []:
        rows.append(("waiting", f"{plain(reason['code'])}: {plain(reason['detail'])}"))
    if job.get("idle"):
        rows.append(("idle", plain(job["idle"]["text"])))
    return rows


PATHS = ("output", "error", "workdir", "submit dir")  # never broken: a path is copied whole


def show_text(job: Job, now: float, width: int | None) -> list[str]:
    """`show_lines` as printed: labels right-aligned, long values wrapped under themselves
    (a path, never broken, may run past `width`)."""
    import textwrap

    rows = show_lines(job, now)
    label = max(len(key) for key, _ in rows)
    out: list[str] = []
    for key, value in rows:
        line = f"{key:>{label}}: {value}"
        if width is None or len(line) <= width:
            out.append(line)
            continue
        out += textwrap.wrap(line, width, subsequent_indent=" " * (label + 2),
                             break_long_words=key not in PATHS, break_on_hyphens=False)
    return out
