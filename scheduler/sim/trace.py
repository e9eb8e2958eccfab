"""Job traces for the simulator: the Philly table and a generic CSV.

Philly (see ``shared/traces/README.md``): one row per job with ``timestamp, duration, num_gpus,
gpu_time, cluster``. The tenant (account) is the virtual cluster. Philly has **no users**, so
each virtual cluster is split into ``users_per_tenant`` synthetic users, each job given to one
of them at random with a seeded RNG (``<vc>-u<k>``): per-user fair share in these replays is
therefore over synthetic users, not real people.

Generic CSV: a header with ``job_id,submit_time,user,account,gpus,duration`` and optionally
``gpu_type,time_limit,nodes,cpus,mem`` (``nodes`` K: ``gpus`` on each of K nodes, K x gpus in
all; ``cpus``, ``mem`` as `labq submit --cpus --mem` on each node, empty: its node's share);
``submit_time`` is seconds (any origin) or ``YYYY-MM-DD HH:MM:SS``.

Times are shifted so that the first kept submission is at 0. A job without a time limit gets
``ceil(duration * limit_factor)`` (the "rounded-up" estimate users give), at least 60 s.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from scheduler.resources import parse_mem

PHILLY_COLUMNS = ("timestamp", "duration", "num_gpus", "cluster")
CSV_COLUMNS = ("job_id", "submit_time", "user", "account", "gpus", "duration")
DEFAULT_LIMIT_FACTOR = 1.5
BUSIEST, CONTENDED = "busiest", "contended"  # how --window-hours picks its window


class TraceError(ValueError):
    """A trace that cannot be read; the message says where and what to do."""


@dataclass(frozen=True)
class SimJob:
    id: str
    account: str  # the tenant
    user: str
    gpus: int
    submit: float  # seconds from the start of the replay
    duration: float  # true run time, seconds
    time_limit: int  # what the policy is told, seconds
    gpu_type: str | None = None
    nodes: int = 1  # across nodes: `gpus` in all, gpus // nodes on each of this many nodes
    cpus: int = 0  # CPUs on each of its nodes (0: its node's share)
    mem: int = 0  # memory on each of its nodes, MiB (0: its node's share)


def default_limit(duration: float, factor: float = DEFAULT_LIMIT_FACTOR) -> int:
    return max(60, math.ceil(duration * factor))


def _open_rows(path: Path, required: Iterable[str]) -> tuple[list[dict[str, str]], int]:
    if not path.is_file():
        raise TraceError(f"trace file {path} not found: give an existing CSV with --trace")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise TraceError(f"{path}: header lacks column(s) {', '.join(missing)}; the header "
                             f"must name {', '.join(required)} (see --format)")
        return list(reader), 2  # data rows start on line 2


def _stamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(text.strip()).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        raise ValueError(f"bad time {text!r}: use seconds or YYYY-MM-DD HH:MM:SS") from None


def _number(text: str | None, what: str, positive: bool = False) -> float:
    try:
        value = float(text or "")
    except ValueError:
        raise ValueError(f"bad {what} {text!r}: expected a number") from None
    if not math.isfinite(value) or value < 0 or (positive and value <= 0):
        raise ValueError(f"bad {what} {text!r}: expected a finite number "
                         f"{'> 0' if positive else '>= 0'}")
    return value


def _gpus(text: str | None) -> int:
    value = _number(text, "GPU count", positive=True)
    if value != int(value):
        raise ValueError(f"bad GPU count {text!r}: expected a whole number")
    return int(value)


def load_philly(path: str | Path, *, min_duration: float = 60.0, window_hours: float | None = None,
                sample: float | None = None, seed: int = 0, users_per_tenant: int = 4,
                limit_factor: float = DEFAULT_LIMIT_FACTOR, max_rows: int | None = None,
                window_pick: str = BUSIEST, capacity_gpus: int | None = None) -> list[SimJob]:
    """The Philly table as jobs, filtered as Pollux/Sia do (see the module docstring).

    `min_duration`: drop jobs shorter than this. `window_hours`: keep only the jobs submitted
    in the busiest window of that length (most submissions), or with `window_pick`
    ``contended`` a random contended one drawn from `seed` for `capacity_gpus` GPUs (see
    `contended_window`). `sample`: keep each job with this probability (seeded).
    `max_rows`: read only the first rows (tests, smoke runs).
    """
    path = Path(path)
    rows, first = _open_rows(path, PHILLY_COLUMNS)
    if max_rows is not None:
        rows = rows[:max_rows]
    rng = random.Random(seed)
    jobs = []
    for n, row in enumerate(rows, start=first):
        try:
            submit = _stamp(row["timestamp"])
            duration = _number(row["duration"], "duration")
            gpus = _gpus(row["num_gpus"])
            vc = (row["cluster"] or "").strip()
            if not vc:
                raise ValueError("empty cluster")
        except ValueError as e:
            raise TraceError(f"{path}, line {n}: {e}; fix or delete that row") from None
        user = f"{vc}-u{rng.randrange(users_per_tenant)}"  # drawn for every row: stable users
        if duration < min_duration:
            continue
        jobs.append(SimJob(str(n - 1), vc, user, gpus, submit, duration,
                           default_limit(duration, limit_factor)))
    return _finish(jobs, window_hours, sample, rng, window_pick, capacity_gpus, seed)


def load_csv(path: str | Path, *, min_duration: float = 0.0, window_hours: float | None = None,
             sample: float | None = None, seed: int = 0,
             limit_factor: float = DEFAULT_LIMIT_FACTOR, window_pick: str = BUSIEST,
             capacity_gpus: int | None = None) -> list[SimJob]:
    """A generic CSV trace (see the module docstring)."""
    path = Path(path)
    rows, first = _open_rows(path, CSV_COLUMNS)
    jobs, seen = [], set()
    for n, row in enumerate(rows, start=first):
        try:
            job_id = (row["job_id"] or "").strip()
            if not job_id or job_id in seen:
                raise ValueError(f"job_id {job_id!r} is empty or repeated")
            seen.add(job_id)
            user, account = (row["user"] or "").strip(), (row["account"] or "").strip()
            if not user or not account:
                raise ValueError("empty user or account")
            duration = _number(row["duration"], "duration")
            limit_text = (row.get("time_limit") or "").strip()
            limit = (math.ceil(_number(limit_text, "time_limit", positive=True)) if limit_text
                     else default_limit(duration, limit_factor))
            nodes = _gpus((row.get("nodes") or "").strip() or "1")
            cpus_text, mem_text = (row.get("cpus") or "").strip(), (row.get("mem") or "").strip()
            job = SimJob(job_id, account, user, _gpus(row["gpus"]) * nodes,
                         _stamp(row["submit_time"] or ""), duration, limit,
                         (row.get("gpu_type") or "").strip() or None, nodes,
                         _gpus(cpus_text) if cpus_text else 0,
                         parse_mem(mem_text, "mem") if mem_text else 0)
        except ValueError as e:
            raise TraceError(f"{path}, line {n}: {e}; fix or delete that row") from None
        if duration >= min_duration:
            jobs.append(job)
    return _finish(jobs, window_hours, sample, random.Random(seed), window_pick, capacity_gpus,
                   seed)


def tenant_rows(path: str | Path, kind: str, column: str,
                what: str) -> Iterator[tuple[str, str, str]]:
    """The ``tenant,<column>`` rows of a small CSV as (where, tenant, text): an optional
    header, blank lines and ``#`` comments skipped; a file without rows, a row without two
    columns and a tenant listed twice are errors. `kind` names the file (``--kind``) and
    `what` the value, in errors."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{kind} file {path} not found: give a CSV of tenant,{column} rows "
                         f"({what})")
    seen: set[str] = set()
    with path.open(newline="") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if n == 1 and [c.lower() for c in cells] == ["tenant", column]:
                continue
            where = f"{path}, line {n}"
            if len(cells) != 2 or not cells[0]:
                raise TraceError(f"{where}: expected 'tenant,{column}' (2 columns: the tenant "
                                 f"and {what}), got {row!r}")
            if cells[0] in seen:
                raise TraceError(f"{where}: tenant {cells[0]!r} is listed twice")
            seen.add(cells[0])
            yield where, cells[0], cells[1]
    if not seen:
        raise TraceError(f"{path}: no tenant,{column} rows")


def load_accounts(path: str | Path) -> dict[str, float]:
    """``--accounts``: a CSV of ``tenant,shares`` rows (see `tenant_rows`); shares > 0."""
    shares: dict[str, float] = {}
    for where, tenant, text in tenant_rows(path, "accounts", "shares", "its fair-share shares"):
        try:
            shares[tenant] = _number(text, "shares", positive=True)
        except ValueError as e:
            raise TraceError(f"{where}: {e} for tenant {tenant!r}") from None
    return shares


def load_trace(path: str | Path, fmt: str = "philly", **kw: object) -> list[SimJob]:
    if fmt == "philly":
        return load_philly(path, **kw)  # type: ignore[arg-type]
    if fmt == "csv":
        kw.pop("users_per_tenant", None)
        kw.pop("max_rows", None)
        return load_csv(path, **kw)  # type: ignore[arg-type]
    raise TraceError(f"unknown trace format {fmt!r}: use philly or csv")


def busiest_window(jobs: list[SimJob], hours: float) -> list[SimJob]:
    """The jobs submitted in the busiest `hours`-long window: the most submissions, as Pollux
    and Sia pick it (ties: the most GPU-seconds submitted). By GPU-seconds alone a handful of
    month-long jobs would win and leave a near-empty replay."""
    width = hours * 3600.0
    ordered = sorted(jobs, key=lambda j: j.submit)
    best: tuple[int, float] = (-1, -1.0)
    best_at, demand, lo = 0, 0.0, 0
    for hi, job in enumerate(ordered):
        demand += job.gpus * job.duration
        while ordered[lo].submit <= job.submit - width:
            demand -= ordered[lo].gpus * ordered[lo].duration
            lo += 1
        if (hi - lo + 1, demand) > best:
            best, best_at = (hi - lo + 1, demand), lo
    start = ordered[best_at].submit if ordered else 0.0
    return [j for j in ordered if start <= j.submit < start + width]


def no_queue_demand(jobs: Sequence[SimJob], start: float, end: float) -> float:
    """The mean GPUs that the jobs submitted in [start, end) would hold over [start, end) on
    a cluster with no queue (each runs from its submit for its duration)."""
    width = end - start
    if width <= 0:
        return 0.0
    return sum(j.gpus * max(0.0, min(end, j.submit + j.duration) - j.submit)
               for j in jobs if start <= j.submit < end) / width


def contended_window(jobs: list[SimJob], hours: float, capacity_gpus: int, seed: int,
                     tries: int = 100_000) -> list[SimJob]:
    """The jobs submitted in a random `hours`-long window that is *contended*: with no queue,
    its own jobs would hold on average at least `capacity_gpus` GPUs over the window, and at
    least two tenants submit in it. The start is drawn uniformly (seconds) over the trace
    from `random.Random(seed)`, again from the same stream until a window qualifies, so a
    seed always gives the same window and no seed is skipped."""
    width = hours * 3600.0
    ordered = sorted(jobs, key=lambda j: j.submit)
    if not ordered:
        return []
    submits = [j.submit for j in ordered]
    first, last = submits[0], max(submits[-1] - width, submits[0])
    rng = random.Random(f"window-{seed}")
    for _ in range(tries):
        start = rng.uniform(first, last)
        lo = bisect.bisect_left(submits, start)
        hi = bisect.bisect_left(submits, start + width)
        inside = ordered[lo:hi]
        if (len({j.account for j in inside}) >= 2
                and no_queue_demand(inside, start, start + width) >= capacity_gpus):
            return inside
    raise TraceError(f"no contended {hours:g}-hour window for {capacity_gpus} GPUs found in "
                     f"{tries} draws: use a smaller --cluster or the busiest window")


def _finish(jobs: list[SimJob], window_hours: float | None, sample: float | None,
            rng: random.Random, window_pick: str = BUSIEST,
            capacity_gpus: int | None = None, seed: int = 0) -> list[SimJob]:
    if window_hours is not None:
        if window_hours <= 0:
            raise TraceError("--window-hours must be > 0")
        if window_pick == BUSIEST:
            jobs = busiest_window(jobs, window_hours)
        elif window_pick == CONTENDED:
            if capacity_gpus is None:
                raise TraceError("a contended window needs the cluster's GPU count")
            jobs = contended_window(jobs, window_hours, capacity_gpus, seed)
        else:
            raise TraceError(f"unknown window {window_pick!r}: use {BUSIEST} or {CONTENDED}")
    if sample is not None:
        if not 0 < sample <= 1:
            raise TraceError("the sample fraction must be in (0, 1]")
        jobs = [j for j in jobs if rng.random() < sample]
    if not jobs:
        return []
    origin = min(j.submit for j in jobs)
    return sorted((replace(j, submit=j.submit - origin) for j in jobs),
                  key=lambda j: (j.submit, len(j.id), j.id))
