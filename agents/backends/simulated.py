"""SIMULATED GPUs, for demos, development and tests on machines without NVIDIA hardware.

Nothing here touches a GPU. Each simulated GPU is labelled as such: its uuid is
`SIM-<node>-<index>` and the agent reports the node as simulated. So that the scheduler, the
metrics and the dashboards can be exercised end to end, a simulated GPU looks busy while a real
process on this machine "uses" it: a process whose environment has `LABQ_NODE=<node name>` and
whose `CUDA_VISIBLE_DEVICES` lists the GPU's index (labq's launcher sets both for every job).
The numbers such a GPU reports are made up, deterministic given the clock, and within plausible
ranges; they are not measurements.
"""

from __future__ import annotations

import math
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
_UTIL_MIN, _UTIL_MAX = 0.55, 0.98
_POWER_MIN, _POWER_MAX = 70.0, 400.0
_IDLE_POWER = 25.0
_TEMP_MIN, _TEMP_MAX = 35.0, 80.0
_IDLE_TEMP = 30.0


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


def visible_indices(value: str) -> set[int]:
    """The GPU indices in a `CUDA_VISIBLE_DEVICES` value (entries that are not ints ignored)."""
    found: set[int] = set()
    for part in value.split(","):
        part = part.strip()
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

    def read(self) -> list[GpuInfo]:
        users = self._users()
        now = self._clock()
        return [self._gpu(index, sorted(users.get(index, [])), now) for index in range(self.gpus)]

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
        for entry in entries:
            if not entry.isdigit() or int(entry) == own_pid:
                continue
            env = environ_of(int(entry), self._proc_root)
            if env.get("LABQ_NODE") != self.node_name:
                continue
            for index in visible_indices(env.get("CUDA_VISIBLE_DEVICES", "")):
                if index < self.gpus:
                    users.setdefault(index, []).append(int(entry))
        return users

    def _gpu(self, index: int, pids: list[int], now: float) -> GpuInfo:
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
        # A slow wave per GPU, phase from the first pid: varies over time, fixed given the clock.
        wave = 0.5 + 0.5 * math.sin(now / 20.0 + pids[0] * 0.7 + index)
        util = _UTIL_MIN + (_UTIL_MAX - _UTIL_MIN) * wave
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
