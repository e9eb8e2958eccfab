"""The node agent: report the GPUs, run the jobs the coordinator placed here, heartbeat.

Two loops: the heartbeat (GPU read, processes tagged with their labq job by cgroup or process
tree, a job's process on a GPU it was not given flagged and, by policy, its job stopped; one
store script), and the job loop (agents.executor), woken at once when the
coordinator writes a start or stop record for this node, and every second regardless.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from urllib.parse import urlsplit

from agents.backends import GpuBackend
from agents.backends.simulated import SimulatedBackend
from agents.executor import Executor
from agents.noderes import NodeResources, limits_enforced, measure
from agents.procinfo import tag_processes
from scheduler.client import address_towards
from scheduler.model import NodeReport
from scheduler.store import Store
from scheduler.trouble import Trouble

log = logging.getLogger(__name__)
JOB_LOOP_S = 1.0
STARTING_LOOP_S = 0.05


class Agent:
    def __init__(
        self, store: Store, backend: GpuBackend, node_name: str, interval_s: float = 2.0,
        executor: Executor | None = None, address: str = "", fence_s: float = 0.0,
        resources: NodeResources | None = None,
    ) -> None:
        self.store = store
        # the CPUs and memory reported (placement counts them), and the executor's limits
        self.resources = resources or (executor.resources if executor else None) or measure()
        self.address = address  # where the node's peers reach it (node_address)
        # Cut off from the store this long (since the last heartbeat that got through), the
        # agent stops its node's jobs itself, before the coordinator may give their GPUs to
        # others (see fence_after); 0: never.
        self.fence_s = fence_s
        self.fenced = False
        self.heard = time.monotonic()  # when the last heartbeat that got through was sent
        self.backend = backend
        self.node_name = node_name
        self.interval_s = interval_s
        self.executor = executor
        if executor is not None and isinstance(backend, SimulatedBackend):
            backend.own_jobs = executor.job_resolver  # another stack's jobs are not on them
        # (when, report) of the latest GPU read, served by the optional exporter (dcgm_exporter)
        self.last_snapshot: tuple[float, NodeReport] | None = None

    def report(self) -> NodeReport:
        gpus = self.backend.read()
        if self.executor is not None:
            self.executor.node_gpus = len(gpus)  # what a job's share of CPUs and memory is of
            tag_processes(gpus, self.executor.job_resolver())
            self.executor.check_gpu_use(gpus)  # a job's process on a GPU it was not given
        report = NodeReport(
            name=self.node_name, gpus=gpus, simulated=self.backend.simulated,
            hostname=socket.gethostname(), agent_pid=os.getpid(), address=self.address,
            cpus=self.resources.cpus, memory_mb=self.resources.memory_mb,
        )
        self.last_snapshot = (time.time(), report)
        return report

    async def beat_once(self, now: float) -> str:
        report = await asyncio.to_thread(self.report)
        return await self.store.heartbeat(report, now)

    async def run(self) -> None:
        log.info("agent for node %s: heartbeat every %.1fs (%s GPUs)", self.node_name,
                 self.interval_s, "SIMULATED" if self.backend.simulated else "NVML")
        if self.executor is not None:
            log.info("node %s: jobs under %s; %s", self.node_name,
                     self.executor.layout.describe(), self.executor.device_confinement)
            log.info("node %s: %d CPUs, %d MiB for jobs; %s", self.node_name,
                     self.resources.cpus, self.resources.memory_mb,
                     limits_enforced(self.executor.layout, self.executor.install_id))
            if not self.executor.node_gpus:  # before any job starts: its share is of these
                self.executor.node_gpus = len(await asyncio.to_thread(self.backend.read))
        loops = [self.heartbeat_loop()]
        if self.executor is not None:
            loops.append(self.job_loop(self.executor))
            if self.fence_s:
                loops.append(self.fence_loop())
        await asyncio.gather(*loops)

    async def heartbeat_loop(self) -> None:
        trouble = Trouble("heartbeat")
        while True:
            started = time.monotonic()
            try:
                await self.beat_once(time.time())
                trouble.ok()
                self.heard, self.fenced = started, False
            except Exception:
                trouble.failed()
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def fence_loop(self) -> None:
        """Every second, however long a heartbeat hangs (packets dropped on the way): past
        the fence, the node's jobs are stopped (`fence`)."""
        while True:
            self.fence(time.monotonic() - self.heard)
            await asyncio.sleep(FENCE_CHECK_S)

    def fence(self, silent_s: float) -> None:
        """Past the fence (cut off from the store for `fence_s`), stop every job of this node:
        the coordinator will soon end or requeue them and may give their GPUs to others, and
        a GPU is never used twice. Said once; the stops are sent again while it lasts."""
        if self.executor is None or not self.fence_s or silent_s < self.fence_s:
            return
        if not self.fenced:
            log.warning("node %s: cut off from the store for %.0f s (fence %.0f s): stopping "
                        "its jobs before the coordinator gives their GPUs to others",
                        self.node_name, silent_s, self.fence_s)
            self.fenced = True
        self.executor.fence(f"NodeFenced: its node was cut off from the store for "
                            f"{silent_s:.0f} s")

    async def job_loop(self, executor: Executor) -> None:
        wake = self.store.keys.node_wake(self.node_name)
        trouble = Trouble("running this node's jobs")
        while True:
            try:
                starting = await executor.reconcile()
                trouble.ok()
                await self.store.wait_wake(wake, STARTING_LOOP_S if starting else JOB_LOOP_S)
            except Exception:
                trouble.failed()
                await asyncio.sleep(JOB_LOOP_S)


def node_address(store_url: str, override: str = "") -> str:
    """The IP address this node's peers reach it at: `override` (LABQ_NODE_ADDRESS) if set,
    else this host's address on the route to the store (every node reaches the store, so
    that interface faces the cluster's network; no packet is sent), else "" (the hostname
    is used). A store on loopback (one machine) gives 127.0.0.1."""
    if override:
        return override
    parts = urlsplit(store_url)
    if parts.scheme == "unix" or not parts.hostname:
        return "127.0.0.1"
    return address_towards(parts.hostname, parts.port or 6379)


FENCE_MARGIN_S = 5.0
FENCE_CHECK_S = 1.0


def fence_after(node_timeout_s: float, stop_grace_s: float) -> float:
    """When a cut-off agent stops its jobs: early enough that they are gone (SIGTERM, the
    grace, SIGKILL, and a margin for clocks) before the coordinator declares the node lost
    (node_timeout_s after its last heartbeat), and never before half of that, so a short
    partition kills nothing."""
    return max(node_timeout_s / 2, node_timeout_s - stop_grace_s - FENCE_MARGIN_S)
