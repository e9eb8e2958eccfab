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
- **none** (no writable cgroup v2 tree: an unprivileged `labq up`, a container, a v1-only
  node, `cgroup_root = "none"`): nothing is enforced; the limits are still what the scheduler
  counted when it placed the job, and what the job and its Ray are told. The agent says so
  once at start (`what_is_enforced`).

On every layout the job's environment says what it was given (`job_resource_env`), and its
cgroup directories are readable by it (never writable), so a job can read its own limits.

Pure functions that decide what to write, and small classes that write it: the tests check
both on this machine's real v1 hierarchy.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

PERIOD_US = 100_000
READABLE = 0o755  # a job's cgroup directories: its user reads its limits (root owns the files)
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
            for directory in (group.parent.parent, group.parent, group):
                directory.chmod(READABLE)  # the job may read its own limits, never write them
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


def limit_job(group: Path | None, res: Resources, v1_install: str, key: str
              ) -> V1Groups | None:
    """Put the limits on a new job's cgroup (`group`, its v2 group, when it has one): the
    v2 files where the controllers are; on a v2-hybrid node (`v1_install` set) the job's v1
    cpu and memory groups too, which are returned (the runner adds the job's first process to
    them before it execs, and removes them at the end)."""
    if not res.limited:
        return None
    if group is not None:
        apply_v2(group, res)
    if not v1_install:
        return None
    v1 = V1Groups(v1_install, key)
    return v1 if v1.create(res) else None


RAY_OBJECT_STORE_SHARE = 0.3  # Ray's own default share of a node's memory
RAY_OBJECT_STORE_LEAST = 80 << 20  # Ray refuses an object store under 75 MiB


def job_resource_env(res: Resources, simulated_gpus: int | None) -> dict[str, str]:
    """The job's environment for its CPUs and memory: `LABQ_CPUS`, `LABQ_MEM_MB` (as Slurm's
    SLURM_CPUS_ON_NODE, SLURM_MEM_PER_NODE), and `RAY_OVERRIDE_RESOURCES`, so a Ray the job
    starts (its `ray.init()`, or `ray start` across nodes) counts exactly the job's CPUs,
    memory and an object store inside it, not the node's (and, on simulated GPUs, the GPUs)."""
    env: dict[str, str] = {}
    ray: dict[str, float] = {}
    if simulated_gpus is not None:
        ray["GPU"] = simulated_gpus
    if res.cpus > 0:
        env["LABQ_CPUS"] = f"{res.cpus:g}"
        ray["CPU"] = res.cpus
    if res.memory_bytes > 0:
        env["LABQ_MEM_MB"] = str(res.memory_bytes >> 20)
        store = max(RAY_OBJECT_STORE_LEAST, int(res.memory_bytes * RAY_OBJECT_STORE_SHARE))
        ray["object_store_memory"] = min(store, res.memory_bytes // 2)
        ray["memory"] = res.memory_bytes - ray["object_store_memory"]
    if ray:
        env["RAY_OVERRIDE_RESOURCES"] = json.dumps(ray)
    return env
