"""Where a job's GPUs go: all on one node (or the same count on each of K distinct nodes, for
a job of K nodes), best fit, honouring the GPU type."""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.config import gpu_type_matches
from scheduler.policy.snapshot import NodeView, PendingJob
from scheduler.resources import Demand

Part = tuple[str, tuple[int, ...]]  # a node and the GPUs a job gets there


@dataclass(frozen=True)
class Placement:
    """Where a job starts: `indices` on `node` (a multi-node job's head node), and for a job
    of several nodes the other nodes and their GPUs in `rest`."""

    node: str
    indices: tuple[int, ...]
    rest: tuple[Part, ...] = ()

    @property
    def parts(self) -> tuple[Part, ...]:
        return ((self.node, self.indices), *self.rest)


@functools.lru_cache(maxsize=4096)
def type_matches(gpu_type: str | None, model: str) -> bool:
    """`gpu_type_matches`, memoized: a cycle asks about few (type, model) pairs, many times."""
    return gpu_type is None or gpu_type_matches(gpu_type, model)


def fits_type(job: PendingJob, node: NodeView) -> bool:
    return type_matches(job.gpu_type, node.gpu_model)


def best_fit(job: PendingJob, nodes: Iterable[NodeView]) -> Placement | None:
    """The UP node of the right type, with the job's CPUs and memory free, that is left with
    the fewest free GPUs; lowest indices. A job of K nodes: the K such nodes, the first of
    them its head node.

    Best fit keeps whole nodes free for the large jobs that need them.
    """
    need = job.per_node
    fitting = sorted((len(n.free), n.name, n.free) for n in nodes
                     if n.open and len(n.free) >= need and fits_type(job, n)
                     and has_room(n, job.demand, need, n.cpus_free, n.mem_free))
    if len(fitting) < job.nodes:
        return None
    parts = [(name, free[:need]) for _, name, free in fitting[: job.nodes]]
    return Placement(parts[0][0], parts[0][1], tuple(parts[1:]))


def has_room(node: NodeView, demand: Demand, gpus: int, cpus_free: int, mem_free: int) -> bool:
    """Whether a job asking `demand`, with `gpus` GPUs here, finds its CPUs and memory among
    the node's free ones (a resource the node does not report is not counted)."""
    if not node.cpus and not node.mem:
        return True
    cpus, mem = node.need(demand, gpus)
    return (not node.cpus or cpus <= cpus_free) and (not node.mem or mem <= mem_free)


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

    Once `reserve` has set GPUs aside for a blocked job (on one node, or on each node of a
    multi-node job), `best_fit` no longer hands them out (the buckets count a node's
    unreserved free GPUs); `free_on`, `most_free` and `fit_all` still see them, so the caller
    can backfill a job that ends in time onto them.
    """

    def __init__(self, nodes: Iterable[NodeView]) -> None:
        self.nodes = {n.name: n for n in nodes if n.open}
        self.free: dict[str, list[int]] = {name: list(n.free) for name, n in self.nodes.items()}
        # CPUs and memory left per node (counted only where some node reports them)
        self.counted = any(n.cpus or n.mem for n in self.nodes.values())
        self.cpus_free = {name: n.cpus_free for name, n in self.nodes.items()}
        self.mem_free = {name: n.mem_free for name, n in self.nodes.items()}
        self.left = sum(len(v) for v in self.free.values())  # free GPUs, reserved ones included
        self.width = max((n.gpus_total for n in self.nodes.values()), default=0)
        self._buckets: dict[str | None, list[_Bucket]] = {}
        self.reserved: dict[str, frozenset[int]] = {}  # node -> its reserved GPUs

    def _open(self, name: str) -> list[int]:
        """The node's free GPUs that best fit may hand out: all but the reserved ones."""
        held = self.reserved.get(name)
        if held is None:
            return self.free[name]
        return [i for i in self.free[name] if i not in held]

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

    def room(self, name: str, gpus: int, demand: Demand | None) -> bool:
        """Whether the node has the CPUs and memory a job asking `demand` needs with `gpus` of
        its GPUs (None, or nothing reported: not counted)."""
        if demand is None or not self.counted:
            return True
        return has_room(self.nodes[name], demand, gpus, self.cpus_free[name],
                        self.mem_free[name])

    def best_fit(self, gpus: int, gpu_type: str | None, nodes: int = 1,
                 demand: Demand | None = None) -> Placement | None:
        """Best fit on the unreserved free GPUs: `gpus` on one node, or on each of `nodes`
        distinct nodes (those left with the fewest, then by name; the first is the head),
        each with the CPUs and memory of `demand` free. A bucket's first node is tried
        first; only when it lacks CPUs or memory are the others of its bucket looked at."""
        buckets = self._buckets_for(gpu_type)
        if nodes == 1:
            for count in range(gpus, len(buckets)):
                name = buckets[count].first()
                if name is not None and not self.room(name, gpus, demand):
                    name = next((other for other in sorted(buckets[count].members)
                                 if self.room(other, gpus, demand)), None)
                if name is not None:
                    return Placement(name, tuple(self._open(name)[:gpus]))
            return None
        chosen: list[str] = []
        for count in range(gpus, len(buckets)):
            chosen += [name for name in sorted(buckets[count].members)
                       if self.room(name, gpus, demand)][: nodes - len(chosen)]
            if len(chosen) == nodes:
                parts = [(name, tuple(self._open(name)[:gpus])) for name in chosen]
                return Placement(parts[0][0], parts[0][1], tuple(parts[1:]))
        return None

    def fit_all(self, gpus: int, gpu_type: str | None, nodes: int = 1,
                demand: Demand | None = None) -> Placement | None:
        """Best fit counting the reserved GPUs too (on each node its unreserved GPUs first)."""
        probe = PendingJob("", "", "", gpus, 0.0, gpu_type)
        fitting = sorted((len(free), name) for name, free in self.free.items()
                         if len(free) >= gpus and fits_type(probe, self.nodes[name])
                         and self.room(name, gpus, demand))
        if len(fitting) < nodes:
            return None
        parts = []
        for _, name in fitting[:nodes]:
            held = self.reserved.get(name, frozenset())
            free = self.free[name]
            ordered = [i for i in free if i not in held] + [i for i in free if i in held]
            parts.append((name, tuple(sorted(ordered[:gpus]))))
        return Placement(parts[0][0], parts[0][1], tuple(parts[1:]))

    def most_free(self, gpu_type: str | None) -> int:
        """The most free GPUs (reserved ones included) on one node of the type."""
        buckets = self._buckets_for(gpu_type)
        most = max((c for c in range(len(buckets)) if buckets[c].first() is not None), default=0)
        for name in self.reserved:
            if name in self.free and any(name in b.members for b in buckets):
                most = max(most, len(self.free[name]))
        return most

    def fits(self, gpus: int, gpu_type: str | None, nodes: int = 1,
             demand: Demand | None = None) -> bool:
        """Whether `nodes` nodes of the type have `gpus` free GPUs each, counting reserved
        ones (and, with `demand`, its CPUs and memory free)."""
        if self.best_fit(gpus, gpu_type, nodes, demand) is not None:
            return True
        if not self.reserved:
            return False
        return self.fit_all(gpus, gpu_type, nodes, demand) is not None

    def free_on(self, name: str) -> tuple[int, ...]:
        """Every free GPU of a node, reserved ones included."""
        return tuple(self.free.get(name, ()))

    def reserve(self, node: str, indices: Iterable[int]) -> None:
        """Keep these GPUs of the node out of `best_fit` (one reservation per pool)."""
        self.reserve_parts([(node, tuple(indices))])

    def reserve_parts(self, parts: Iterable[Part]) -> None:
        """Keep these GPUs of each node out of `best_fit`: one reservation per pool, on one
        node or, for a multi-node job, on several."""
        if self.reserved:
            raise ValueError("this pool already has a reservation")
        for node, indices in parts:
            if node not in self.free:
                continue
            before = len(self.free[node])
            self.reserved[node] = frozenset(indices)
            self._move(node, before)

    def take(self, placement: Placement, demand: Demand | None = None) -> None:
        """Remove the placement's GPUs (reserved or not) from the pool, and the CPUs and
        memory a job asking `demand` gets with them."""
        for node, indices in placement.parts:
            if demand is not None and self.counted and node in self.nodes:
                cpus, mem = self.nodes[node].need(demand, len(indices))
                self.cpus_free[node] -= cpus
                self.mem_free[node] -= mem
            before = len(self._open(node))
            taken = set(indices)
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
