"""SIMULATED GPUs, for demos, development and tests on machines without NVIDIA hardware.

Nothing here touches a GPU. Each simulated GPU is labelled as such: its uuid is
`SIM-<node>-<index>` and the agent reports the node as simulated. So that the scheduler, the
metrics, idle-GPU detection and the dashboards can be exercised end to end, a simulated GPU is
"used" by the real processes on this machine whose environment has `LABQ_NODE=<node name>` and
whose `CUDA_VISIBLE_DEVICES` lists the GPU's index or uuid (labq's launcher sets both for
every job), as the environment was when the process started. So a job process that set
`CUDA_VISIBLE_DEVICES` to GPUs labq did not give it (`CUDA_VISIBLE_DEVICES=0,1,2,3 python
train.py` in a 1-GPU job) is on those GPUs, as it would be on real ones, and the agent sees it
there (agents.executor flags it). A GPU's utilization follows those processes' CPU use: the
CPU-seconds they (and the children they waited for) used since the previous read, per second,
capped at 1 (on a process's first read, its average over its life so far, at least a second).
So a job that sleeps leaves its GPUs near 0 and a busy loop drives them near 1. Ray's own
processes (titled `ray::...`, e.g. the job supervisor) are not the job's work and do not
count. Memory, power and temperature are made up from that utilization, within plausible
ranges. None of these numbers are GPU measurements.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

from agents.procinfo import environ_of, process_name
from scheduler.model import GpuInfo, GpuProcess

GIB = 1024**3
DEFAULT_MODEL = "SIM-GPU"
DEFAULT_MEMORY_GIB = 24
MAX_NODES = 64
MAX_GPUS = 16

# Memory of common models, by normalised name (upper case, letters and digits only). Longer
# keys are tried first so that e.g. "A100-80GB" is not taken for plain "A100".
_MODEL_MEMORY_GIB: dict[str, int] = {
    "A10080GB": 80,
    "A10040GB": 40,
    "H10080GB": 80,
    "H10080GIB": 80,
    "V100": 32,
    "RTX3090": 24,
    "RTX4090": 24,
    "L40S": 48,
    "A6000": 48,
    "T4": 16,
}
_SIZE_IN_NAME = re.compile(r"(\d+)\s*GI?B", re.IGNORECASE)
_SPEC = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*(?::\s*(\S.*?))?\s*$")

_BUSY_MEMORY_FRACTION = 0.30
_POWER_MIN, _POWER_MAX = 70.0, 400.0
_IDLE_POWER = 25.0
_TEMP_MIN, _TEMP_MAX = 35.0, 80.0
_IDLE_TEMP = 30.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_RAY_TITLE = b"ray::"


def memory_gib_for(model: str) -> int:
    """Memory of a simulated `model` in GiB: "NNGB" in the name, else the table, else 24."""
    sized = _SIZE_IN_NAME.search(model)
    if sized and int(sized.group(1)) > 0:
        return int(sized.group(1))
    key = re.sub(r"[^A-Z0-9]", "", model.upper())
    for known in sorted(_MODEL_MEMORY_GIB, key=len, reverse=True):
        if known in key:
            return _MODEL_MEMORY_GIB[known]
    return DEFAULT_MEMORY_GIB


def parse_sim_spec(text: str) -> tuple[int, int, str]:
    """Parse `NODESxGPUS[:MODEL]` (e.g. "2x4:A100-80GB") into (nodes, gpus per node, model)."""
    hint = "expected NODESxGPUS[:MODEL], e.g. 2x4:A100-80GB (nodes 1..64, gpus 1..16)"
    match = _SPEC.match(text or "")
    if not match:
        raise ValueError(f"bad simulation spec {text!r}: {hint}")
    nodes, gpus = int(match.group(1)), int(match.group(2))
    if not 1 <= nodes <= MAX_NODES or not 1 <= gpus <= MAX_GPUS:
        raise ValueError(f"bad simulation spec {text!r}: {hint}")
    return nodes, gpus, match.group(3) or DEFAULT_MODEL


def cpu_seconds(pid: int, proc_root: str = "/proc") -> tuple[float, float] | None:
    """(CPU-seconds used by `pid` and its waited-for children, seconds since it started), or
    None if it is gone or unreadable."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        with open(os.path.join(proc_root, "uptime"), "rb") as handle:
            uptime = float(handle.read().split()[0])
        ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        return ticks / _CLOCK_TICKS, max(0.0, uptime - int(fields[19]) / _CLOCK_TICKS)
    except (OSError, IndexError, ValueError):
        return None


def _is_ray_process(pid: int, proc_root: str) -> bool:
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as handle:
            return handle.read(len(_RAY_TITLE)) == _RAY_TITLE
    except OSError:
        return False


def visible_indices(value: str, node: str = "") -> set[int]:
    """The GPU indices in a `CUDA_VISIBLE_DEVICES` value: indices, and uuids of `node`'s
    simulated GPUs (`SIM-<node>-<index>`); other entries are ignored."""
    found: set[int] = set()
    prefix = f"SIM-{node}-" if node else None
    for part in value.split(","):
        part = part.strip()
        if prefix and part.startswith(prefix):
            part = part[len(prefix):]
        if part.isdigit():
            found.add(int(part))
    return found


class SimulatedBackend:
    """SIMULATED hardware: `gpus` made-up GPUs of `model` on node `node_name`.

    `proc_root` and `clock` are injectable for tests.
    """

    simulated: bool = True

    def __init__(
        self,
        node_name: str,
        gpus: int,
        model: str = DEFAULT_MODEL,
        *,
        proc_root: str = "/proc",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= gpus <= MAX_GPUS:
            raise ValueError(f"simulated GPUs per node must be 1..{MAX_GPUS}, got {gpus}")
        self.node_name = node_name
        self.gpus = gpus
        self.model = model or DEFAULT_MODEL
        self.memory_total_bytes = memory_gib_for(self.model) * GIB
        self._proc_root = proc_root
        self._clock = clock
        self._cpu_seen: dict[int, tuple[float, float]] = {}  # pid -> (CPU-seconds, read at)
        # Set by the agent: `() -> (pid -> its job of this install, or None)`. A labq job's
        # process (LABQ_JOB_ID) it does not resolve belongs to another install on this machine
        # (another stack whose node has the same name): not on these simulated GPUs at all.
        self.own_jobs: Callable[[], Callable[[int], str | None]] | None = None

    def read(self) -> list[GpuInfo]:
        users = self._users()
        rates = self._cpu_rates({pid for pids in users.values() for pid in pids})
        return [self._gpu(index, sorted(users.get(index, [])), rates)
                for index in range(self.gpus)]

    def close(self) -> None:
        """Nothing to release."""

    def _users(self) -> dict[int, list[int]]:
        """GPU index -> pids of this machine's processes that use it (see the module docstring)."""
        users: dict[int, list[int]] = {}
        try:
            entries = os.listdir(self._proc_root)
        except OSError:
            return users
        own_pid = os.getpid()
        ours = self.own_jobs() if self.own_jobs is not None else None
        for entry in entries:
            if not entry.isdigit() or int(entry) == own_pid:
                continue
            env = environ_of(int(entry), self._proc_root)
            if env.get("LABQ_NODE") != self.node_name:
                continue
            if ours is not None and env.get("LABQ_JOB_ID") and ours(int(entry)) is None:
                continue  # another install's job (see own_jobs)
            for index in visible_indices(env.get("CUDA_VISIBLE_DEVICES", ""), self.node_name):
                if index < self.gpus:
                    users.setdefault(index, []).append(int(entry))
        return users

    def _cpu_rates(self, pids: set[int]) -> dict[int, float]:
        """CPU-seconds per second of each pid since the last read (its life's average on its
        first read); Ray's own processes count 0."""
        now = self._clock()
        rates: dict[int, float] = {}
        seen: dict[int, tuple[float, float]] = {}
        for pid in pids:
            sample = cpu_seconds(pid, self._proc_root)
            if sample is None or _is_ray_process(pid, self._proc_root):
                rates[pid] = 0.0
                continue
            used, age = sample
            previous = self._cpu_seen.get(pid)
            if previous is not None and now > previous[1] and used >= previous[0]:
                rates[pid] = (used - previous[0]) / (now - previous[1])
            else:
                rates[pid] = used / max(age, 1.0)  # a just-started process: not noise
            seen[pid] = (used, now)
        self._cpu_seen = seen
        return rates

    def _gpu(self, index: int, pids: list[int], rates: dict[int, float]) -> GpuInfo:
        total = self.memory_total_bytes
        uuid = f"SIM-{self.node_name}-{index}"
        if not pids:
            return GpuInfo(
                index=index,
                uuid=uuid,
                model=self.model,
                memory_total_bytes=total,
                memory_used_bytes=0,
                utilization=0.0,
                power_watts=_IDLE_POWER + index % 3,
                temperature_c=_IDLE_TEMP + index % 6,
            )
        per_process = int(total * _BUSY_MEMORY_FRACTION) // len(pids)
        util = min(1.0, sum(rates.get(pid, 0.0) for pid in pids))
        return GpuInfo(
            index=index,
            uuid=uuid,
            model=self.model,
            memory_total_bytes=total,
            memory_used_bytes=per_process * len(pids),
            utilization=round(util, 4),
            power_watts=round(_POWER_MIN + (_POWER_MAX - _POWER_MIN) * util, 1),
            temperature_c=round(_TEMP_MIN + (_TEMP_MAX - _TEMP_MIN) * util, 1),
            processes=[
                GpuProcess(
                    pid=pid,
                    used_memory_bytes=per_process,
                    name=process_name(pid, self._proc_root),
                )
                for pid in pids
            ],
        )
