"""Best-effort reads of /proc: a process's name, environment, parent and start time, the
processes below one, and which job each GPU process belongs to.

Every function here tolerates processes that vanish or belong to other users: it returns an
empty value rather than raising, because a heartbeat must never fail on one odd process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from scheduler.model import GpuInfo


def environ_of(pid: int, proc_root: str = "/proc") -> dict[str, str]:
    """The environment of `pid` as it was at exec time; `{}` if unreadable or gone."""
    try:
        with open(os.path.join(proc_root, str(pid), "environ"), "rb") as handle:
            raw = handle.read()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep and key:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def process_name(pid: int, proc_root: str = "/proc") -> str:
    """The short command name of `pid` (/proc/<pid>/comm), or "" if unreadable."""
    try:
        with open(os.path.join(proc_root, str(pid), "comm"), "rb") as handle:
            return handle.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _stat_fields(pid: int, proc_root: str = "/proc") -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (state is [0]), or None."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def parent_of(pid: int) -> int | None:
    """The parent pid of `pid`, or None if it is gone."""
    fields = _stat_fields(pid)
    try:
        return int(fields[1]) if fields else None
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/<pid>/stat's 22nd field), or None if
    it is gone or a zombie. A pid and its start time name one process: a pid reused later
    has another."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields and fields[0] != b"Z" else None
    except (IndexError, ValueError):
        return None


def started_at(ticks: int) -> float:
    """A start time (see `start_time`) as Unix seconds."""
    try:
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return 0.0
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """Live processes below `root` (children, grandchildren, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        ppid = parent_of(int(entry.name))
        if ppid is not None:
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(parents.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def tag_processes(gpus: list[GpuInfo], job_of: Callable[[int], str | None]) -> None:
    """Set `labq_job` on every process of `gpus`: the job `job_of(pid)` finds by cgroup or
    process tree (None for a process labq did not start)."""
    cache: dict[int, str | None] = {}
    for gpu in gpus:
        for proc in gpu.processes:
            if proc.pid not in cache:
                cache[proc.pid] = job_of(proc.pid)
            proc.labq_job = cache[proc.pid]


@dataclass(frozen=True)
class Misuse:
    """A process of labq job `job` seen on GPU `gpu`, which that job was not given."""

    job: str
    pid: int
    name: str
    gpu: int
    given: tuple[int, ...]

    def reason(self) -> str:
        given = ",".join(str(i) for i in self.given) or "none"
        return (f"GpuMisuse: process {self.pid} ({self.name or '?'}) of job {self.job} ran on "
                f"GPU {self.gpu}, which the job was not given (its GPUs: {given})")


def misplaced(gpus: list[GpuInfo], given: Mapping[str, set[int] | frozenset[int]]
              ) -> list[Misuse]:
    """The processes of `gpus` (tagged by `tag_processes`) that belong to a job of `given`
    (job id -> the GPU indices it was given) on a GPU not among them. Each such process is
    untagged there: on that GPU it is a process labq did not start (so the GPU gets no new job
    under `foreign_gpu_policy = "avoid"`), named for what it is (`labq nodes` shows
    `python [job 5, not its GPU]` to admins)."""
    found = []
    for gpu in gpus:
        for proc in gpu.processes:
            job = proc.labq_job
            if job is None or job not in given or gpu.index in given[job]:
                continue
            found.append(Misuse(job, proc.pid, proc.name, gpu.index, tuple(sorted(given[job]))))
            proc.labq_job = None
            proc.name = f"{proc.name or '?'} [job {job}, not its GPU]"
    return found
