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

from agents.backends import GpuBackend
from agents.executor import Executor
from agents.procinfo import tag_processes
from scheduler.model import NodeReport
from scheduler.store import Store

log = logging.getLogger(__name__)
JOB_LOOP_S = 1.0
STARTING_LOOP_S = 0.05


class Agent:
    def __init__(
        self, store: Store, backend: GpuBackend, node_name: str, interval_s: float = 2.0,
        executor: Executor | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.node_name = node_name
        self.interval_s = interval_s
        self.executor = executor
        # (when, report) of the latest GPU read, served by the optional exporter (dcgm_exporter)
        self.last_snapshot: tuple[float, NodeReport] | None = None

    def report(self) -> NodeReport:
        gpus = self.backend.read()
        if self.executor is not None:
            tag_processes(gpus, self.executor.job_resolver())
            self.executor.check_gpu_use(gpus)  # a job's process on a GPU it was not given
        report = NodeReport(
            name=self.node_name, gpus=gpus, simulated=self.backend.simulated,
            hostname=socket.gethostname(), agent_pid=os.getpid(),
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
        loops = [self.heartbeat_loop()]
        if self.executor is not None:
            loops.append(self.job_loop(self.executor))
        await asyncio.gather(*loops)

    async def heartbeat_loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.beat_once(time.time())
            except Exception:
                log.exception("heartbeat failed; retrying")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def job_loop(self, executor: Executor) -> None:
        wake = self.store.keys.node_wake(self.node_name)
        while True:
            try:
                starting = await executor.reconcile()
                await self.store.wait_wake(wake, STARTING_LOOP_S if starting else JOB_LOOP_S)
            except Exception:
                log.exception("running this node's jobs failed; retrying")
                await asyncio.sleep(JOB_LOOP_S)
