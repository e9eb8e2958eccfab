"""Best-effort reads of /proc: a process's name and environment, and which job it belongs to.

Every function here tolerates processes that vanish or belong to other users: it returns an
empty value rather than raising, because a heartbeat must never fail on one odd process.
"""

from __future__ import annotations

import os
from collections.abc import Callable

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


def tag_processes(gpus: list[GpuInfo], job_of: Callable[[int], str | None]) -> None:
    """Set `labq_job` on every process of `gpus`: the job `job_of(pid)` finds by cgroup or
    process tree (None for a process labq did not start)."""
    cache: dict[int, str | None] = {}
    for gpu in gpus:
        for proc in gpu.processes:
            if proc.pid not in cache:
                cache[proc.pid] = job_of(proc.pid)
            proc.labq_job = cache[proc.pid]
