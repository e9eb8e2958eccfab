"""The CPUs and memory a node offers its jobs, as its agent reports them each heartbeat, and
what one job gets of them here (the same resolution the coordinator placed it with).

Measured once at the agent's start: the CPUs this process may run on (its affinity, which
honours a cpuset the agent was started in), and MemTotal of /proc/meminfo, each bounded by the
agent's own v2 cgroup's `cpu.max` and `memory.max` where set (a systemd unit's CPUQuota or
MemoryMax: the jobs' groups live below the agent's own there). `LABQ_NODE_CPUS`
and `LABQ_NODE_MEMORY` (a size: `8G`, `512M`, MiB) override them: a simulated node (`labq up
--simulate`), or a node that keeps some of its CPUs or memory for itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agents.cgroups import Layout, cgroup2_mount, cgroup_of
from agents.jobres import Resources, V1Groups, what_is_enforced
from scheduler.resources import MIB, Demand, parse_mem

CPUS_ENV = "LABQ_NODE_CPUS"
MEMORY_ENV = "LABQ_NODE_MEMORY"


@dataclass(frozen=True)
class NodeResources:
    """What this node offers jobs: CPUs and MiB (0: unknown, not counted)."""

    cpus: int = 0
    memory_mb: int = 0

    def for_job(self, demand: Demand, gpus: int, node_gpus: int) -> Resources:
        """The cgroup limits of a job with `gpus` of this node's `node_gpus` GPUs."""
        cpus, mem = demand.on(gpus, node_gpus, self.cpus, self.memory_mb)
        return Resources(cpus=float(cpus), memory_bytes=mem * MIB)


def measure(env: Mapping[str, str] | None = None, meminfo: str = "/proc/meminfo",
            cgroup_dir: Path | None | bool = True) -> NodeResources:
    """This node's CPUs and memory: the overrides in `env` (default: the process's), else
    measured (`cgroup_dir`: the agent's own v2 cgroup, whose limits bound its jobs under
    systemd; True: found from /proc/self/cgroup). A bad override raises ValueError naming it."""
    env = os.environ if env is None else env
    if cgroup_dir is True:
        cgroup_dir = _own_cgroup()
    elif cgroup_dir is False:
        cgroup_dir = None
    cpus_text, mem_text = env.get(CPUS_ENV, ""), env.get(MEMORY_ENV, "")
    if cpus_text:
        if not cpus_text.isdigit() or int(cpus_text) < 1:
            raise ValueError(f"{CPUS_ENV}={cpus_text!r}: give a whole number of CPUs, at least 1")
        cpus = int(cpus_text)
    else:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 0)
        quota = _own_limit("cpu.max", cgroup_dir)
        if quota:  # the agent's own cgroup (its unit's CPUQuota): jobs live below it
            cpus = max(1, min(cpus, quota))
    memory = parse_mem(mem_text, MEMORY_ENV) if mem_text else _mem_total(meminfo)
    if not mem_text and _own_limit("memory.max", cgroup_dir):
        memory = min(memory, _own_limit("memory.max", cgroup_dir))
    return NodeResources(cpus, memory)


def _own_limit(name: str, cgroup_dir: Path | None) -> int:
    """The agent's own v2 cgroup's limit, in CPUs (`cpu.max`, rounded down) or MiB
    (`memory.max`); 0 where there is none (`max`, no such file, no v2 group)."""
    if cgroup_dir is None:
        return 0
    try:
        words = (cgroup_dir / name).read_text().split()
    except OSError:
        return 0
    if not words or not words[0].isdigit():
        return 0
    if name == "cpu.max":
        period = int(words[1]) if len(words) > 1 and words[1].isdigit() else 100_000
        return int(words[0]) // max(1, period)
    return int(words[0]) >> 20


def _own_cgroup() -> Path | None:
    mount, own = cgroup2_mount(), cgroup_of()
    if mount is None or own is None or own == "/":
        return None
    return mount / own.lstrip("/")


def _mem_total(meminfo: str) -> int:
    """MemTotal in MiB (0 if it cannot be read)."""
    try:
        with open(meminfo) as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def limits_enforced(layout: Layout, install: str) -> str:
    """One line for the agent's start: which CPU and memory limits this node's jobs get."""
    v1 = V1Groups(install, "").available() if layout.kind == "v2-hybrid" else []
    return what_is_enforced(layout.kind, layout.controllers, v1)


def remove_v1_groups(install: str, key: str = "") -> None:
    """Remove a job's v1 cpu and memory groups (v2-hybrid nodes; `key` its run), once its
    processes are gone, or with no `key` the install's own v1 directories once empty. Best
    effort: what does not exist, or is still in use, stays."""
    if key:
        V1Groups(install, key).remove()
        return
    for hierarchy in ("cpu", "memory"):
        with contextlib.suppress(OSError):
            V1Groups(install, "").path(hierarchy).parent.rmdir()
