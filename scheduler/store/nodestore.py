"""The store's nodes role (part of `Store`): heartbeats and the node records, and
the conversation with each node's agent about its runs (start records, stop requests, the
statuses it reports, its wake list)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from scheduler.model import Node, NodeReport, NodeState
from scheduler.noderun import RunStatus, StartRecord
from scheduler.store.core import StoreCore
from scheduler.store.outcome import Outcome
from scheduler.store.records import nodes_from


class NodeStore(StoreCore):
    """The nodes role: heartbeats, node records, and each node's runs."""

    SCRIPTS: tuple[str, ...] = ("heartbeat", "node_down", "report_runs")

    # ---------------------------------------------------------------- node runs

    async def run_statuses(self, nodes: Iterable[str]) -> dict[str, dict[str, RunStatus]]:
        """node -> job id -> what its agent last reported, for the given nodes."""
        names = sorted(set(nodes))
        if not names:
            return {}
        async with self.r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.node_status(name))
            rows = await pipe.execute()
        return {name: {job_id: RunStatus.from_json(text) for job_id, text in raw.items()}
                for name, raw in zip(names, rows, strict=True)}

    async def node_orders(
        self, node: str
    ) -> tuple[dict[str, StartRecord], dict[str, str], dict[str, RunStatus]]:
        """What a node's agent must do: (start records, stop requests, statuses it reported)."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.node_runs(node))
            pipe.hgetall(self.keys.node_stops(node))
            pipe.hgetall(self.keys.node_status(node))
            runs, stops, status = await pipe.execute()
        return ({k: StartRecord.from_json(v) for k, v in runs.items()}, dict(stops),
                {k: RunStatus.from_json(v) for k, v in status.items()})

    async def report_runs(self, node: str, statuses: dict[str, RunStatus]) -> int:
        """An agent's report of the attempts it runs (see report_runs.lua)."""
        args: list[Any] = []
        for job_id, status in statuses.items():
            args += [job_id, status.attempt, status.to_json()]
        keys = [self.keys.node_runs(node), self.keys.node_status(node), self.keys.wake]
        return int(await self._run("report_runs", keys, args))

    async def wait_wake(self, key: str, timeout_s: float) -> bool:
        """Block until something is pushed on a wake list (True) or `timeout_s` passes. Drains
        the list: several pushes make one wake-up."""
        got = await self.r.blpop([key], timeout=timeout_s)
        if got:
            await self.r.delete(key)
        return bool(got)

    # ---------------------------------------------------------------- nodes

    async def heartbeat(self, report: NodeReport, now: float) -> NodeState:
        """Store the node's report; the node's state after it (a DOWN node is UP again)."""
        keys = [self.keys.node(report.name), self.keys.nodes]
        gpus_json = json.dumps([g.to_dict() for g in report.gpus])
        args = [report.name, now, len(report.gpus), report.gpu_model, gpus_json,
                "1" if report.simulated else "", report.hostname, report.address, report.cpus,
                report.memory_mb]
        return NodeState(await self._run("heartbeat", keys, args))

    async def nodes(self) -> list[Node]:
        """Every node, with its allocations and its drain (read from the drains hash only,
        never from the node hash its agent writes: see `records.nodes_from`)."""
        names = sorted(await self.r.smembers(self.keys.nodes))
        if not names:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.node(name))
                pipe.hgetall(self.keys.node_alloc(name))
            pipe.hgetall(self.keys.drains)
            *rows, drains = await pipe.execute()
        return nodes_from(rows, drains, names)

    async def node_down(self, epoch: int, name: str, cutoff: float) -> Outcome:
        keys = [self.keys.node(name), self.keys.epoch]
        return Outcome(await self._run("node_down", keys, [epoch, name, cutoff]))
