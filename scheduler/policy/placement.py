"""Where a job's GPUs go: all on one node, best fit, honouring the GPU type."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.config import gpu_type_matches
from scheduler.policy.snapshot import NodeView, PendingJob


@dataclass(frozen=True)
class Placement:
    node: str
    indices: tuple[int, ...]


def fits_type(job: PendingJob, node: NodeView) -> bool:
    return job.gpu_type is None or gpu_type_matches(job.gpu_type, node.gpu_model)


def best_fit(job: PendingJob, nodes: Iterable[NodeView]) -> Placement | None:
    """The UP node of the right type that is left with the fewest free GPUs; lowest indices.

    Best fit keeps whole nodes free for the large jobs that need them.
    """
    best: NodeView | None = None
    for node in nodes:
        if not node.up or len(node.free) < job.gpus or not fits_type(job, node):
            continue
        if best is None or (len(node.free), node.name) < (len(best.free), best.name):
            best = node
    if best is None:
        return None
    return Placement(best.name, best.free[: job.gpus])


class _Bucket:
    """Node names with the same free count; the smallest name first (a lazy-deletion heap)."""

    __slots__ = ("heap", "members")

    def __init__(self) -> None:
        self.heap: list[str] = []
        self.members: set[str] = set()

    def add(self, name: str) -> None:
        self.members.add(name)
        heapq.heappush(self.heap, name)

    def discard(self, name: str) -> None:
        self.members.discard(name)

    def first(self) -> str | None:
        while self.heap and self.heap[0] not in self.members:
            heapq.heappop(self.heap)
        return self.heap[0] if self.heap else None


class FreePool:
    """The free GPUs of the UP nodes during one cycle, indexed for best fit.

    For each GPU type asked for in the cycle (None = any), the matching nodes are kept in
    buckets by free count, so a best-fit lookup costs O(GPUs per node + log nodes), not
    O(nodes). Ties go to the node whose name sorts first. Free GPUs only shrink in a cycle.
    """

    def __init__(self, nodes: Iterable[NodeView]) -> None:
        self.nodes = {n.name: n for n in nodes if n.up}
        self.free: dict[str, list[int]] = {name: list(n.free) for name, n in self.nodes.items()}
        self.width = max((n.gpus_total for n in self.nodes.values()), default=0)
        self._buckets: dict[str | None, list[_Bucket]] = {}

    def _buckets_for(self, gpu_type: str | None) -> list[_Bucket]:
        buckets = self._buckets.get(gpu_type)
        if buckets is None:
            buckets = [_Bucket() for _ in range(self.width + 1)]
            probe = PendingJob("", "", "", 1, 0.0, gpu_type)
            for name, node in self.nodes.items():
                if fits_type(probe, node):
                    buckets[len(self.free[name])].add(name)
            self._buckets[gpu_type] = buckets
        return buckets

    def best_fit(self, gpus: int, gpu_type: str | None) -> Placement | None:
        buckets = self._buckets_for(gpu_type)
        for count in range(gpus, len(buckets)):
            name = buckets[count].first()
            if name is not None:
                return Placement(name, tuple(self.free[name][:gpus]))
        return None

    def most_free(self, gpu_type: str | None) -> int:
        buckets = self._buckets_for(gpu_type)
        return max((c for c in range(len(buckets)) if buckets[c].first() is not None), default=0)

    def take(self, placement: Placement) -> None:
        before = len(self.free[placement.node])
        taken = set(placement.indices)
        self.free[placement.node] = [i for i in self.free[placement.node] if i not in taken]
        after = len(self.free[placement.node])
        for buckets in self._buckets.values():
            if placement.node in buckets[before].members:
                buckets[before].discard(placement.node)
                buckets[after].add(placement.node)
