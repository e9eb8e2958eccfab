"""Backfill under a reservation for the top blocked job, and estimated start times.

Slurm's backfill, simplified to one reservation. Every GPU of an UP node is free at the
latest at a known time: now if it is free; the end of its job's time limit if a job holds it
(`RunningJob.ends_at`, or now + the time limit for a job started in this cycle); never
(infinity) if it is held by nothing the snapshot knows of, such as an allocation whose job is
missing, or a running job with no time limit. `Timeline` keeps these times.

- Reservation: the first job in priority order that waits for GPUs (not for a cap) and can
  start at some finite time gets the GPUs that free up earliest on the node where it could
  start first, from that time T. A blocked job that can never start (no UP node of its type
  is large enough, or the GPUs it would need are held for ever) takes no reservation; the
  next blocked job may. Only jobs started before the reservation is made (higher in the
  queue) count in T; the jobs started after it cannot move T (see `Backfill.place`).
- Backfill: a lower job starts now only where it cannot delay T: best fit on the free GPUs
  outside the reservation first; then, on the reserved node, the reserved free GPUs too, but
  only if its time limit ends by T. Otherwise it waits with reason ``Reservation``.
- Estimates: after the cycle, the waiting jobs (the first `limit` of them, in priority order,
  not counting jobs held by a cap: they wait on their own user's or account's jobs, not on
  the queue, so they get none) are placed on the timeline one by one, each on the node where
  its GPUs free up first; a job's GPUs are then busy until its estimate + its time limit.
  The reserved job's estimate is T. A job that can never start gets none.

CPUs and memory (where nodes report them) count too: a job's slot is the later of when its
GPUs and when its CPUs and memory are free on the node (`restime.ResourceTimeline`: running
jobs give theirs back at their ends; the jobs the cycle starts, reserves or estimates take
theirs), so a job that can never have its memory on any node takes no reservation. The
reservation sets aside GPUs only: a lower job placed beside it on the reserved node may take
CPUs or memory the reserved job will need, and delay it.

Times only move later in a cycle (a GPU taken is busy until a time >= when it was free), and
a GPU held for ever stays so: a job that has no finite start once never gets one later.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scheduler.model import Reason
from scheduler.policy.placement import FreePool, Part, Placement, fits_type, type_matches
from scheduler.policy.restime import ResourceTimeline
from scheduler.policy.snapshot import NodeView, PendingJob, RunningJob, Snapshot
from scheduler.resources import Demand

INF = math.inf
MAX_ESTIMATES = 200  # estimate only this many waiting jobs per cycle, in priority order


@dataclass(frozen=True)
class Reservation:
    """GPUs set aside for the top blocked job: `indices` on `node`, from `start` (Unix time);
    for a multi-node job, `rest` holds the GPUs set aside on its other nodes."""

    job_id: str
    node: str
    indices: tuple[int, ...]
    start: float
    rest: tuple[Part, ...] = ()

    @property
    def parts(self) -> tuple[Part, ...]:
        return ((self.node, self.indices), *self.rest)

    @property
    def where(self) -> str:
        """The node, or nodes, in words."""
        return ", ".join(node for node, _ in self.parts)


@dataclass(frozen=True)
class Slot:
    """Where and when a job could start at the earliest on a timeline (`rest`: a multi-node
    job's other nodes)."""

    node: str
    indices: tuple[int, ...]
    start: float
    rest: tuple[Part, ...] = ()

    @property
    def parts(self) -> tuple[Part, ...]:
        return ((self.node, self.indices), *self.rest)


# A node's candidacy in a heap: (start, GPUs free by then, name, the node's version).
_Entry = tuple[float, int, str, int]


class Timeline:
    """When each GPU of each UP node is free at the latest, indexed for `earliest`.

    For each (GPU type, GPU count) asked about, a heap ranks the matching nodes by the time
    their count-th earliest GPU frees up; a node whose times change is pushed again with a
    new version and its stale entries are dropped lazily. A query costs O(log nodes) plus
    the nodes changed since the last one, times the (type, count) keys seen so far.
    """

    def __init__(self, nodes: Iterable[NodeView], running: Iterable[RunningJob],
                 now: float) -> None:
        by_node: dict[str, list[_Held]] = {}
        for job in running:
            for node, indices in job.parts:
                by_node.setdefault(node, []).append(
                    (job.ends_at, indices, job.gpus // (1 + len(job.rest))))
        nodes, running = tuple(nodes), tuple(running)
        up = {n.name: n for n in nodes if n.open}
        self.resources = ResourceTimeline(nodes, running, now)  # CPUs and memory over time
        self.now = now
        self.models = {name: n.gpu_model for name, n in up.items()}
        self.times = {name: _gpu_times(n, by_node.get(name, ()), now) for name, n in up.items()}
        self._sorted: dict[str, list[float]] = {}
        for name in self.times:
            self._rank(name)
        self._version = dict.fromkeys(self.times, 0)
        self._typed: dict[str | None, frozenset[str]] = {}
        self._heaps: dict[tuple[str | None, int], list[_Entry]] = {}
        self._dirty: set[str] = set()

    def occupy(self, node: str, indices: Iterable[int], until: float,
               demand: Demand | None = None, start: float | None = None) -> None:
        """The node's GPUs `indices` are busy until `until` (never earlier than they were),
        and with `demand`, the CPUs and memory of a job on them, from `start` (now)."""
        times = self.times.get(node)
        if times is None:
            return
        indices = tuple(indices)
        if demand is not None:
            self.resources.take(node, demand, len(indices), self.now if start is None
                                else start, until)
        for i in indices:
            if 0 <= i < len(times):
                times[i] = max(times[i], until)
        self._version[node] += 1
        self._dirty.add(node)

    def earliest(self, gpus: int, gpu_type: str | None, demand: Demand | None = None
                 ) -> Slot | None:
        """The earliest time some UP node of the type has `gpus` GPUs free, and those GPUs
        (with `demand`, and its CPUs and memory free too: see `_earliest_with`).

        On a node, the GPUs that free up earliest (ties: lowest index). Among nodes free at
        the same time, best fit: the one with the fewest GPUs free by then, then by name.
        None if no node of the type will ever have that many GPUs free.
        """
        self._flush()
        if demand is not None and self.resources.counted:
            return self._earliest_with(gpus, gpu_type, demand)
        heap = self._heap(gpu_type, gpus)
        while heap:
            start, _free, name, version = heap[0]
            if version == self._version[name]:
                times = self.times[name]  # the GPUs by free time (ties: lowest index)
                ranked = sorted(range(len(times)), key=times.__getitem__)
                return Slot(name, tuple(sorted(ranked[:gpus])), start)
            heapq.heappop(heap)
        return None

    def _earliest_with(self, gpus: int, gpu_type: str | None, demand: Demand) -> Slot | None:
        """`earliest` where CPUs and memory count: the nodes in order of their GPUs' time,
        each at the later of that and when its CPUs and memory are free for the job; looked
        at until the next node's GPU time is past the best found (the heap is left whole)."""
        heap = self._heap(gpu_type, gpus)
        taken: list[_Entry] = []
        best: tuple[float, int, str] | None = None
        while heap and (best is None or heap[0][0] < best[0]):
            entry = heapq.heappop(heap)
            start, free, name, version = entry
            if version != self._version[name]:
                continue
            taken.append(entry)
            ready = max(start, self.resources.ready_at(name, demand, gpus, start))
            if ready != INF and (best is None or (ready, free, name) < best):
                best = (ready, free, name)
        for entry in taken:
            heapq.heappush(heap, entry)
        if best is None:
            return None
        times = self.times[best[2]]
        ranked = sorted(range(len(times)), key=times.__getitem__)
        return Slot(best[2], tuple(sorted(ranked[:gpus])), best[0])

    def earliest_many(self, gpus: int, gpu_type: str | None, nodes: int,
                      demand: Demand | None = None) -> Slot | None:
        """`earliest` for a job of `nodes` nodes: the nodes where `gpus` GPUs (and, with
        `demand`, its CPUs and memory) free up first (best fit among equals), from when the
        last of them has; the first is the head. O(nodes of the type): multi-node jobs are
        few."""
        if nodes == 1:
            return self.earliest(gpus, gpu_type, demand)
        self._flush()
        entries = [e for e in (self._entry(name, gpus) for name in self._typed_nodes(gpu_type))
                   if e is not None]
        if demand is not None and self.resources.counted:
            entries = [(ready, free, name, version) for ready, free, name, version in (
                (max(start, self.resources.ready_at(name, demand, gpus, start)), free, name,
                 version) for start, free, name, version in entries) if ready != INF]
        if len(entries) < nodes:
            return None
        parts = []
        chosen = heapq.nsmallest(nodes, entries)
        for _, _, name, _ in chosen:
            times = self.times[name]
            ranked = sorted(range(len(times)), key=times.__getitem__)
            parts.append((name, tuple(sorted(ranked[:gpus]))))
        return Slot(parts[0][0], parts[0][1], max(e[0] for e in chosen), tuple(parts[1:]))

    def _typed_nodes(self, gpu_type: str | None) -> frozenset[str]:
        names = self._typed.get(gpu_type)
        if names is None:
            names = frozenset(name for name, model in self.models.items()
                              if type_matches(gpu_type, model))
            self._typed[gpu_type] = names
        return names

    def _heap(self, gpu_type: str | None, gpus: int) -> list[_Entry]:
        heap = self._heaps.get((gpu_type, gpus))
        if heap is None:
            heap = []
            k, ordered, version = gpus - 1, self._sorted, self._version
            for name in self._typed_nodes(gpu_type):  # `_entry` inlined: this loop is hot
                times = ordered[name]
                if 0 <= k < len(times) and times[k] != INF:
                    heap.append((times[k], bisect.bisect_right(times, times[k]), name,
                                 version[name]))
            heapq.heapify(heap)
            self._heaps[(gpu_type, gpus)] = heap
        return heap

    def _entry(self, name: str, gpus: int) -> _Entry | None:
        """The node's candidacy for `gpus` GPUs; None if it never has that many free."""
        ordered = self._sorted[name]
        if not 0 < gpus <= len(ordered) or ordered[gpus - 1] == INF:
            return None
        start = ordered[gpus - 1]
        return (start, bisect.bisect_right(ordered, start), name, self._version[name])

    def _flush(self) -> None:
        """Re-rank the nodes changed since the last query; push them into their heaps."""
        for name in self._dirty:
            self._rank(name)
            for (gpu_type, gpus), heap in self._heaps.items():
                if name in self._typed_nodes(gpu_type):
                    entry = self._entry(name, gpus)
                    if entry is not None:
                        heapq.heappush(heap, entry)
        self._dirty.clear()

    def _rank(self, name: str) -> None:
        """The node's GPU free times, sorted (which GPUs: `earliest`, for the node it picks)."""
        times = self.times[name]
        self._sorted[name] = sorted(times)


# What a running job holds on one node: (its end, its GPUs there, how many).
_Held = tuple[float, tuple[int, ...], int]


def _gpu_times(node: NodeView, running: Sequence[_Held], now: float) -> list[float]:
    """Each GPU's free time: now if free, else its job's end (not before now), else never.

    The node's free list wins over a running job that claims a free GPU. A running job that
    does not say which GPUs it holds is given the lowest busy GPUs no other job claims. An
    unhealthy GPU is never free: its job's end does not free it.
    """
    n = node.gpus_total
    times: list[float | None] = [None] * n
    for ends_at, indices, _ in running:
        end = max(ends_at, now)
        for i in indices:
            if 0 <= i < n:
                held = times[i]
                times[i] = end if held is None else max(held, end)
    for i in node.free:
        if 0 <= i < len(times):
            times[i] = now
    for ends_at, indices, gpus in running:
        if not indices:
            unclaimed = [i for i, t in enumerate(times) if t is None][:gpus]
            for i in unclaimed:
                times[i] = max(ends_at, now)
    for i in node.unhealthy:
        if 0 <= i < len(times):
            times[i] = INF
    return [INF if t is None else t for t in times]


def utc(moment: float) -> str:
    """A Unix time as short ISO 8601 UTC, e.g. 2023-11-14T22:13:20Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


class Backfill:
    """One cycle's reservation, and the timeline behind it (built only once a job waits).

    The cycle tells it each job it starts (`started`), asks it where a job may start
    (`place`), offers it each job blocked for GPUs (`reserve`), and at the end asks for the
    estimates (`estimates`).
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.reservation: Reservation | None = None
        self.delay_reason: Reason | None = None  # what a job held back by the reservation shows
        self._reserved_job: PendingJob | None = None
        self._timeline: Timeline | None = None
        self._started: list[tuple[str, tuple[int, ...], float, Demand]] = []

    @property
    def timeline(self) -> Timeline:
        if self._timeline is None:
            snap = self.snapshot
            self._timeline = Timeline(snap.nodes, snap.running, snap.now)
            for node, indices, until, demand in self._started:
                self._timeline.occupy(node, indices, until, demand)
            self._started.clear()
        return self._timeline

    def started(self, job: PendingJob, placement: Placement) -> None:
        """The job starts now on `placement`: those GPUs (and its CPUs and memory there) are
        busy until its time limit ends."""
        until = self.snapshot.now + job.time_limit_s
        for node, indices in placement.parts:
            if self._timeline is None:
                self._started.append((node, indices, until, job.demand))
            else:
                self._timeline.occupy(node, indices, until, job.demand)

    def reserve(self, job: PendingJob, pool: FreePool) -> None:
        """Give the reservation to `job`, which waits for GPUs, unless a job has it already."""
        if self.reservation is not None:
            return
        slot = self.timeline.earliest_many(job.per_node, job.gpu_type, job.nodes, job.demand)
        if slot is None:
            return
        self.reservation = Reservation(job.id, slot.node, slot.indices, slot.start, slot.rest)
        self._reserved_job = job
        self.delay_reason = Reason(
            "Reservation", f"would delay job {job.id}, reserved to start at {utc(slot.start)} "
                           f"on {self.reservation.where}")
        pool.reserve_parts(slot.parts)

    def place(self, job: PendingJob, pool: FreePool) -> Placement | Reason | None:
        """Where `job` can start now without delaying the reservation.

        A Placement; the ``Reservation`` reason if only the reservation stops it; None if
        it does not fit in the free GPUs at all. O(GPUs per node + log nodes).
        """
        if job.nodes > 1:
            return self._place_many(job, pool)
        placement = pool.best_fit(job.gpus, job.gpu_type, demand=job.demand)
        res = self.reservation
        if placement is not None or res is None:
            return placement
        if res.rest:  # a multi-node reservation: the same, on all its nodes
            return self._place_many(job, pool)
        free = pool.free_on(res.node)
        if len(free) < job.gpus or not fits_type(job, pool.nodes[res.node]) or not pool.room(
                res.node, job.gpus, job.demand):
            return None
        if self.snapshot.now + job.time_limit_s > res.start:
            return self.delay_reason
        reserved = set(res.indices)
        outside = [i for i in free if i not in reserved]
        inside = [i for i in free if i in reserved]
        return Placement(res.node, tuple(sorted((outside + inside)[: job.gpus])))

    def _place_many(self, job: PendingJob, pool: FreePool) -> Placement | Reason | None:
        """`place` for a multi-node job, or under a multi-node reservation: best fit outside
        the reservation; else, counting the reserved GPUs, only if it ends by the
        reservation's start."""
        placement = pool.best_fit(job.per_node, job.gpu_type, job.nodes, job.demand)
        res = self.reservation
        if placement is not None or res is None:
            return placement
        placement = pool.fit_all(job.per_node, job.gpu_type, job.nodes, job.demand)
        if placement is None:
            return None
        if self.snapshot.now + job.time_limit_s > res.start:
            return self.delay_reason
        return placement

    def estimates(self, waiting: Sequence[PendingJob], limit: int = MAX_ESTIMATES
                  ) -> dict[str, float]:
        """Estimated start times of the first `limit` of `waiting` (priority order, no capped
        jobs), after the cycle's starts; the reserved job's is its reservation's start."""
        res, reserved_job = self.reservation, self._reserved_job
        if not waiting:
            return {}
        if limit <= 0:  # only the reserved job's, which needs no timeline
            return {res.job_id: res.start} if res is not None else {}
        timeline = self.timeline
        result: dict[str, float] = {}
        if res is not None and reserved_job is not None:
            result[res.job_id] = res.start
            for node, indices in res.parts:
                timeline.occupy(node, indices, res.start + reserved_job.time_limit_s,
                                reserved_job.demand, res.start)
        for job in waiting[: max(0, limit)]:
            if job.id in result:
                continue
            slot = (timeline.earliest(job.gpus, job.gpu_type, job.demand) if job.nodes == 1
                    else timeline.earliest_many(job.per_node, job.gpu_type, job.nodes,
                                                job.demand))
            if slot is None:
                continue
            result[job.id] = slot.start
            for node, indices in slot.parts:
                timeline.occupy(node, indices, slot.start + job.time_limit_s, job.demand,
                                slot.start)
        return result
