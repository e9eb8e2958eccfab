"""The node agent: read the GPUs, tag their processes with labq jobs, heartbeat to the store."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from agents.backends import GpuBackend
from agents.procinfo import tag_processes
from scheduler.model import NodeReport
from scheduler.store import Store

log = logging.getLogger(__name__)


class Agent:
    def __init__(
        self, store: Store, backend: GpuBackend, node_name: str, interval_s: float = 2.0
    ) -> None:
        self.store = store
        self.backend = backend
        self.node_name = node_name
        self.interval_s = interval_s
        # (when, report) of the latest GPU read, served by the optional exporter (dcgm_exporter)
        self.last_snapshot: tuple[float, NodeReport] | None = None

    def report(self) -> NodeReport:
        gpus = self.backend.read()
        tag_processes(gpus)
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
        while True:
            started = time.monotonic()
            try:
                await self.beat_once(time.time())
            except Exception:
                log.exception("heartbeat failed; retrying")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
