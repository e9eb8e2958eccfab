"""Where a job's GPUs go: all on one node, best fit, honouring the GPU type."""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.config import gpu_type_matches
from scheduler.policy.snapshot import NodeView, PendingJob


@dataclass(frozen=True)
class Placement:
    node: str
    indices: tuple[int, ...]


@functools.lru_cache(maxsize=4096)
def type_matches(gpu_type: str | None, model: str) -> bool:
    """`gpu_type_matches`, memoized: a cycle asks about few (type, model) pairs, many times."""
    return gpu_type is None or gpu_type_matches(gpu_type, model)


def fits_type(job: PendingJob, node: NodeView) -> bool:
    return type_matches(job.gpu_type, node.gpu_model)


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

    Once `reserve` has set GPUs aside for a blocked job, `best_fit` no longer hands them out
    (the buckets count a node's unreserved free GPUs); `free_on` and `most_free` still see them,
    so the caller can backfill a job that ends in time onto them.
    """

    def __init__(self, nodes: Iterable[NodeView]) -> None:
        self.nodes = {n.name: n for n in nodes if n.up}
        self.free: dict[str, list[int]] = {name: list(n.free) for name, n in self.nodes.items()}
        self.left = sum(len(v) for v in self.free.values())  # free GPUs, reserved ones included
        self.width = max((n.gpus_total for n in self.nodes.values()), default=0)
        self._buckets: dict[str | None, list[_Bucket]] = {}
        self.reserved_node: str | None = None
        self.reserved: frozenset[int] = frozenset()

    def _open(self, name: str) -> list[int]:
        """The node's free GPUs that best fit may hand out: all but the reserved ones."""
        if name != self.reserved_node:
            return self.free[name]
        return [i for i in self.free[name] if i not in self.reserved]

    def _buckets_for(self, gpu_type: str | None) -> list[_Bucket]:
        buckets = self._buckets.get(gpu_type)
        if buckets is None:
            buckets = [_Bucket() for _ in range(self.width + 1)]
            probe = PendingJob("", "", "", 1, 0.0, gpu_type)
            for name, node in self.nodes.items():
                if fits_type(probe, node):
                    buckets[len(self._open(name))].add(name)
            self._buckets[gpu_type] = buckets
        return buckets

    def best_fit(self, gpus: int, gpu_type: str | None) -> Placement | None:
        """Best fit on the unreserved free GPUs."""
        buckets = self._buckets_for(gpu_type)
        for count in range(gpus, len(buckets)):
            name = buckets[count].first()
            if name is not None:
                return Placement(name, tuple(self._open(name)[:gpus]))
        return None

    def most_free(self, gpu_type: str | None) -> int:
        """The most free GPUs (reserved ones included) on one node of the type."""
        buckets = self._buckets_for(gpu_type)
        most = max((c for c in range(len(buckets)) if buckets[c].first() is not None), default=0)
        name = self.reserved_node
        if name is not None and any(name in b.members for b in buckets):
            most = max(most, len(self.free[name]))
        return most

    def fits(self, gpus: int, gpu_type: str | None) -> bool:
        """Whether a node of the type has `gpus` free GPUs, counting reserved ones."""
        if self.best_fit(gpus, gpu_type) is not None:
            return True
        name = self.reserved_node
        return (name is not None and len(self.free[name]) >= gpus
                and fits_type(PendingJob("", "", "", gpus, 0.0, gpu_type), self.nodes[name]))

    def free_on(self, name: str) -> tuple[int, ...]:
        """Every free GPU of a node, reserved ones included."""
        return tuple(self.free.get(name, ()))

    def reserve(self, node: str, indices: Iterable[int]) -> None:
        """Keep these GPUs of the node out of `best_fit` (one reservation per pool)."""
        if self.reserved_node is not None:
            raise ValueError("this pool already has a reservation")
        if node not in self.free:
            return
        before = len(self.free[node])
        self.reserved_node, self.reserved = node, frozenset(indices)
        self._move(node, before)

    def take(self, placement: Placement) -> None:
        """Remove the placement's GPUs (reserved or not) from the pool."""
        node = placement.node
        before = len(self._open(node))
        taken = set(placement.indices)
        kept = [i for i in self.free[node] if i not in taken]
        self.left -= len(self.free[node]) - len(kept)
        self.free[node] = kept
        self._move(node, before)

    def _move(self, node: str, before: int) -> None:
        """Move the node from the buckets of `before` open GPUs to those of its open count now."""
        after = len(self._open(node))
        if before == after:
            return
        for buckets in self._buckets.values():
            if node in buckets[before].members:
                buckets[before].discard(node)
                buckets[after].add(node)
