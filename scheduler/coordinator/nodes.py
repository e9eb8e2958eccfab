"""The coordinator's boundary to the nodes: what their agents reported, and stop requests.

The coordinator never reaches a node directly: a start is part of the fenced script that
allocates the GPUs (`Store.start` writes the node's start record), and everything after it
goes through a `NodeChannel`. `StoreNodes` is the real one (the agents read and write the same
store); `InMemoryNodes` is a fake for tests, which play the agents' part by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from scheduler.model import Job, Node
from scheduler.noderun import RunStatus
from scheduler.store import Store


class NodeChannel(Protocol):
    async def reports(self, nodes: Iterable[str]) -> dict[str, dict[str, RunStatus]]:
        """node -> job id -> what its agent last reported."""
        ...

    async def send_stop(self, epoch: int, job: Job) -> str:
        """Hand the job's stop request to its node (idempotent)."""
        ...


class StoreNodes:
    """The agents' side of the store (scheduler.noderun)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def reports(self, nodes: Iterable[str]) -> dict[str, dict[str, RunStatus]]:
        return await self.store.run_statuses(nodes)

    async def send_stop(self, epoch: int, job: Job) -> str:
        return str(await self.store.send_stop(epoch, job))


class InMemoryNodes:
    """Nodes played by a test: `report()` what an agent would, read `stops`."""

    def __init__(self) -> None:
        self.statuses: dict[str, dict[str, RunStatus]] = {}
        self.stops: list[tuple[str, str]] = []  # (job id, stop request), in order

    def report(self, node: str, job_id: str, status: RunStatus) -> None:
        self.statuses.setdefault(node, {})[job_id] = status

    async def reports(self, nodes: Iterable[str]) -> dict[str, dict[str, RunStatus]]:
        return {n: dict(self.statuses.get(n, {})) for n in nodes}

    async def send_stop(self, epoch: int, job: Job) -> str:
        self.stops.append((job.id, job.stop_request))
        return "OK"


def last_heard(nodes: Sequence[Node], active: Sequence[Job]) -> dict[str, float]:
    """Each active job's charging limit: the last heartbeat of the node (of all its nodes, the
    earliest) that runs it. A node that went silent shows nothing after its last heartbeat;
    its runner's record settles the rest when the run ends."""
    heard = {n.name: n.last_heartbeat for n in nodes}
    return {job.id: min(heard.get(name, 0.0) for name in job.node_names)
            for job in active if job.node_names}
