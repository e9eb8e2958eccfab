"""A job's CPU and memory limits, enforced by its cgroup where the node has the controllers.

What each cgroup layout (agents.cgroups) gets:

- **v2** (a pure cgroup v2 node under systemd, `Delegate=yes`): the job's own group gets
  `cpu.max` (`CPUS x 100000` µs per 100000 µs period: the job may use that many CPUs' time,
  spread over any of the node's CPUs) and `memory.max` (past it, the kernel reclaims and then
  OOM-kills inside the job only), with `memory.swap.max = 0` so a limit is not a slow swap.
- **v2-hybrid** (v1 controllers beside a v2 tree, as on this development machine): the v2 job
  group has no controllers, so the job also gets a group of its own in the v1 `cpu` and
  `memory` hierarchies (`<mount>/labq/<install>/job_<key>`): `cpu.cfs_quota_us` over
  `cpu.cfs_period_us`, and `memory.limit_in_bytes` (with `memory.memsw.limit_in_bytes`
  equal, where swap accounting is on). The runner puts the job's first process in both
  before it execs; its children follow.
- **none** (no writable cgroup tree): nothing is enforced; the limits are still what the
  scheduler counted when it placed the job. The agent says so once at start.

Pure functions that decide what to write, and small classes that write it: the tests check
both on this machine's real v1 hierarchy.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

PERIOD_US = 100_000
V1_MOUNT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Resources:
    """What a job may use on one node: `cpus` (0: no limit) and `memory_bytes` (0: none)."""

    cpus: float = 0.0
    memory_bytes: int = 0

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.memory_bytes < 0:
            raise ValueError(f"negative resources: {self}")

    @property
    def limited(self) -> bool:
        return self.cpus > 0 or self.memory_bytes > 0


def v2_writes(res: Resources) -> dict[str, str]:
    """Files of a v2 job group and what to write in them."""
    writes: dict[str, str] = {}
    if res.cpus > 0:
        writes["cpu.max"] = f"{max(1000, round(res.cpus * PERIOD_US))} {PERIOD_US}"
    if res.memory_bytes > 0:
        writes["memory.max"] = str(res.memory_bytes)
        writes["memory.swap.max"] = "0"
    return writes


def v1_writes(res: Resources) -> dict[str, dict[str, str]]:
    """v1 hierarchy -> files of the job's group there and what to write in them."""
    writes: dict[str, dict[str, str]] = {}
    if res.cpus > 0:
        writes["cpu"] = {"cpu.cfs_period_us": str(PERIOD_US),
                         "cpu.cfs_quota_us": str(max(1000, round(res.cpus * PERIOD_US)))}
    if res.memory_bytes > 0:
        writes["memory"] = {"memory.limit_in_bytes": str(res.memory_bytes),
                            "memory.memsw.limit_in_bytes": str(res.memory_bytes)}
    return writes


def apply_v2(group: Path, res: Resources) -> list[str]:
    """Write the limits into the job's v2 group; the files written (a controller the group
    lacks is skipped: see `what_is_enforced`)."""
    done = []
    for name, value in v2_writes(res).items():
        if not (group / name).exists():
            continue  # that controller is not enabled here
        (group / name).write_text(value)
        done.append(name)
    return done


@dataclass(frozen=True)
class V1Groups:
    """A job's groups in the v1 `cpu` and `memory` hierarchies (v2-hybrid nodes)."""

    install: str
    key: str  # `<job id>.<attempt>`
    mount: Path = V1_MOUNT

    def path(self, hierarchy: str) -> Path:
        return self.mount / hierarchy / "labq" / self.install / f"job_{self.key}"

    def available(self) -> list[str]:
        """The v1 hierarchies mounted here that labq can write (cpu, memory)."""
        return [h for h in ("cpu", "memory") if (self.mount / h / "tasks").exists()]

    def create(self, res: Resources) -> list[str]:
        """Make the groups the limits need and write them; the files written. A file the
        kernel lacks (memsw without swap accounting) is skipped."""
        done = []
        for hierarchy, files in v1_writes(res).items():
            if hierarchy not in self.available():
                continue
            group = self.path(hierarchy)
            group.mkdir(parents=True, exist_ok=True)
            for name, value in files.items():
                try:
                    (group / name).write_text(value)
                    done.append(f"{hierarchy}/{name}")
                except (FileNotFoundError, PermissionError):
                    continue
        return done

    def add(self, pid: int) -> None:
        """Put `pid` (and so the children it makes afterwards) in every group made."""
        for hierarchy in ("cpu", "memory"):
            group = self.path(hierarchy)
            if group.is_dir():
                (group / "cgroup.procs").write_text(str(pid))

    def peak_memory_bytes(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.path("memory") / "memory.max_usage_in_bytes").read_text())
        return None

    def remove(self) -> None:
        """Remove the (emptied) groups; the install's directory stays for its next jobs."""
        for hierarchy in ("cpu", "memory"):
            group = self.path(hierarchy)
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def what_is_enforced(kind: str, controllers: tuple[str, ...], v1: list[str]) -> str:
    """One line for the agent's start: which limits this node's jobs get."""
    if kind == "v2":
        have = [c for c in ("cpu", "memory") if c in controllers]
        return ("CPU and memory limits: " + (" and ".join(have) + " enforced (cgroup v2)"
                                             if have else "not enforced (no cpu/memory "
                                             "controller delegated to the agent)"))
    if kind == "v2-hybrid":
        return ("CPU and memory limits: " + (" and ".join(v1) + " enforced (cgroup v1)"
                                             if v1 else "not enforced (no v1 cpu/memory)"))
    return "CPU and memory limits: not enforced (no cgroup tree); counted when placing jobs"
