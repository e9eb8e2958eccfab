"""`tiresias-las`: discretized two-dimensional least-attained-service (a simulator baseline).

Tiresias (Gu et al., "Tiresias: A GPU Cluster Manager for Distributed Deep Learning",
USENIX NSDI 2019), its "2D-LAS" variant with discretized priority queues (Discretized 2DAS,
§3.2): a job's attained service is GPUs × time it has run so far (GPU-seconds, summed over
its runs); jobs are put in priority queues by attained service (queue k holds the jobs whose
attained service is in [threshold k-1, threshold k)); queues are served highest first, FIFO
by submit time within a queue; scheduling is preemptive, and a preempted job resumes later
with its remaining duration (Tiresias checkpoints and restores jobs).

Parameters chosen here (not tuned to any trace): 2 queues with a threshold of 3,600
GPU-seconds (one GPU-hour), the two-queue example configuration of the Tiresias simulator
(SymbioticLab/Tiresias, README "queue_limit = [3600]"); the paper reports that two queues
capture most of the benefit. Not modelled: the starvation knob (promotion of a job that has
waited longer than a multiple of its last run; off by default in several reimplementations),
the profile-guided placement of "consolidation-sensitive" jobs (every job here runs on one
node, the simulator's rule for all policies), and the cost of a checkpoint/restore.

The decision at an event, given the jobs in the system in priority order (queue, submit, id):

1. greedy by count: walking the order, a job is *chosen* if its GPUs fit in what the cluster
   has left after the jobs chosen before it (a job that does not fit is skipped, not a
   barrier: work conserving, as in Tiresias);
2. each chosen pending job is placed best fit on the free GPUs of one node; if no node has
   room, running jobs that were not chosen (lowest priority first) are preempted on the node
   where that frees the fewest GPUs; if even that cannot make room, it waits;
3. then the other pending jobs, in order, start where they fit on what is still free.
A running job that was not chosen keeps its GPUs unless a chosen job needs them. The walk
down the pending queue stops once the count is used up and the jobs set aside for step 3
could fill every free GPU, or after `max_walk` jobs (10 per GPU of the cluster).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from scheduler.sim.trace import SimJob

THRESHOLDS: tuple[float, ...] = (3600.0,)  # GPU-seconds: 2 queues


def queue_of(attained: float, thresholds: Sequence[float] = THRESHOLDS) -> int:
    """The priority queue (0 = highest) of a job that has attained this many GPU-seconds."""
    return bisect.bisect_right(thresholds, attained)


Key = tuple[int, float, int, str]  # (queue, submit, len(id), id): the priority order


@dataclass(frozen=True)
class TJob:
    """A job as Tiresias sees it: its place in the order and its size."""

    key: Key
    id: str
    gpus: int


@dataclass(frozen=True)
class THeld:
    """A running job: what it holds."""

    key: Key
    id: str
    gpus: int
    node: str
    indices: tuple[int, ...]


@dataclass
class TDecision:
    preempt: list[str]
    starts: list[tuple[str, str, tuple[int, ...]]]  # (job id, node, GPU indices)


def _merge(running: Sequence[THeld], pending: Iterable[TJob]
           ) -> Iterator[tuple[bool, THeld | TJob]]:
    """Running and pending jobs merged in priority order; (is running, job)."""
    it = iter(pending)
    nxt = next(it, None)
    for held in running:
        while nxt is not None and nxt.key < held.key:
            yield False, nxt
            nxt = next(it, None)
        yield True, held
    while nxt is not None:
        yield False, nxt
        nxt = next(it, None)


def _best_fit(free: dict[str, list[int]], gpus: int) -> str | None:
    best: tuple[int, str] | None = None
    for name, idle in free.items():
        n = len(idle)
        if n >= gpus and (best is None or (n, name) < best):
            best = (n, name)
            if n == gpus:
                break
    return None if best is None else best[1]


def decide(total_gpus: int, free: dict[str, list[int]], running: Sequence[THeld],
           pending: Iterable[TJob], max_walk: int = 100_000) -> TDecision:
    """The starts and preemptions at one event (see the module docstring).

    `free`: free GPU indices per node (copied, not changed); `running` and `pending`: sorted
    by key.
    """
    free = {name: list(idle) for name, idle in free.items()}
    most_free = max((len(v) for v in free.values()), default=0)
    free_total = sum(len(v) for v in free.values())
    cap = total_gpus
    chosen: list[TJob] = []
    others: list[TJob] = []
    others_gpus = 0
    kept: set[str] = set()
    walked = 0
    for is_running, job in _merge(running, pending):
        if is_running:
            assert isinstance(job, THeld)
            if job.gpus <= cap:
                cap -= job.gpus
                kept.add(job.id)
            continue
        assert isinstance(job, TJob)
        walked += 1
        if job.gpus <= cap:
            cap -= job.gpus
            chosen.append(job)
        elif job.gpus <= most_free and others_gpus < free_total:
            others.append(job)
            others_gpus += job.gpus
        if (cap == 0 and others_gpus >= free_total) or walked >= max_walk:
            break
    decision = TDecision([], [])
    # every running job not chosen, the ones the walk did not reach included
    victims = [h for h in reversed(running) if h.id not in kept]  # lowest priority first
    for job in chosen:
        node = _best_fit(free, job.gpus)
        if node is None and victims:
            node = _preempt_for(job, free, victims, decision.preempt)
        if node is not None:
            _take(free, node, job, decision)
    for job in others:
        node = _best_fit(free, job.gpus)
        if node is not None:
            _take(free, node, job, decision)
    return decision


def _take(free: dict[str, list[int]], node: str, job: TJob, decision: TDecision) -> None:
    idle = sorted(free[node])
    indices = tuple(idle[: job.gpus])
    free[node] = idle[job.gpus:]
    decision.starts.append((job.id, node, indices))


def _preempt_for(job: TJob, free: dict[str, list[int]], victims: list[THeld],
                 preempted: list[str]) -> str | None:
    """Preempt the fewest GPUs' worth of victims on one node to make room for `job`;
    returns that node, or None (nothing preempted) if no node can make room."""
    gone = set(preempted)
    best: tuple[int, str, list[THeld]] | None = None
    by_node: dict[str, list[THeld]] = {}
    for v in victims:
        if v.id not in gone and v.key > job.key:  # never a job ahead of it in the order
            by_node.setdefault(v.node, []).append(v)
    for node, held in by_node.items():
        need = job.gpus - len(free.get(node, ()))
        chosen, got = [], 0
        for v in held:
            if got >= need:
                break
            chosen.append(v)
            got += v.gpus
        if got >= need and (best is None or (got, node) < (best[0], best[1])):
            best = (got, node, chosen)
    if best is None:
        return None
    _, node, chosen = best
    for v in chosen:
        preempted.append(v.id)
        free[node] = free.get(node, []) + list(v.indices)
    return node


def _by_key(item: TJob | THeld) -> Key:
    return item.key


class TiresiasQueues:
    """The replay's state under `tiresias-las`: pending jobs per queue and running jobs, each
    sorted by key; attained service; and the times running jobs cross a threshold."""

    def __init__(self, total_gpus: int, thresholds: Sequence[float] = THRESHOLDS) -> None:
        self.total = total_gpus
        self.thresholds = tuple(thresholds)
        self.max_walk = 10 * total_gpus
        self.attained: dict[str, float] = {}  # GPU-seconds over finished runs
        self.pending: list[list[TJob]] = [[] for _ in range(len(self.thresholds) + 1)]
        self.pending_gpus: Counter[int] = Counter()
        self.running: list[THeld] = []
        self.held: dict[str, THeld] = {}
        self.begun: dict[str, float] = {}  # job id -> start of its current run
        self.token: dict[str, int] = {}
        self.nudges: list[tuple[float, int, str, int]] = []  # (time, token, job id, queue)

    def _key(self, job: SimJob, queue: int) -> Key:
        return (queue, job.submit, len(job.id), job.id)

    def enqueue(self, job: SimJob) -> None:
        key = self._key(job, queue_of(self.attained.get(job.id, 0.0), self.thresholds))
        bisect.insort(self.pending[key[0]], TJob(key, job.id, job.gpus), key=_by_key)
        self.pending_gpus[job.gpus] += 1

    def started(self, job: SimJob, node: str, indices: tuple[int, ...], now: float) -> None:
        attained = self.attained.get(job.id, 0.0)
        key = self._key(job, queue_of(attained, self.thresholds))
        queue = self.pending[key[0]]
        i = bisect.bisect_left(queue, key, key=_by_key)
        assert queue[i].id == job.id
        del queue[i]
        self.pending_gpus[job.gpus] -= 1
        held = THeld(key, job.id, job.gpus, node, indices)
        self._hold(held)
        self.begun[job.id] = now
        self.token[job.id] = token = self.token.get(job.id, 0) + 1
        if key[0] < len(self.thresholds):
            at = now + (self.thresholds[key[0]] - attained) / job.gpus
            heapq.heappush(self.nudges, (at, token, job.id, key[0] + 1))

    def _hold(self, held: THeld) -> None:
        bisect.insort(self.running, held, key=_by_key)
        self.held[held.id] = held

    def _release(self, job_id: str) -> THeld:
        held = self.held.pop(job_id)
        i = bisect.bisect_left(self.running, held.key, key=_by_key)
        assert self.running[i].id == job_id
        del self.running[i]
        return held

    def stopped(self, job: SimJob, start: float, now: float) -> None:
        self._release(job.id)
        self.attained[job.id] = self.attained.get(job.id, 0.0) + job.gpus * (now - start)
        self.token[job.id] += 1  # its pending nudges are stale

    def advance(self, now: float) -> None:
        """Move the running jobs that crossed a threshold by `now` down to their new queue."""
        while self.nudges and self.nudges[0][0] <= now:
            _, token, job_id, queue = heapq.heappop(self.nudges)
            if self.token.get(job_id) != token or job_id not in self.held:
                continue
            old = self._release(job_id)
            self._hold(THeld((queue, *old.key[1:]), job_id, old.gpus, old.node, old.indices))
            if queue < len(self.thresholds):
                attained = self.thresholds[queue - 1]
                at = now + (self.thresholds[queue] - attained) / old.gpus
                heapq.heappush(self.nudges, (at, token, job_id, queue + 1))

    def next_nudge(self) -> float:
        return self.nudges[0][0] if self.nudges else float("inf")

    def decide(self, free: dict[str, list[int]], free_total: int) -> TDecision | None:
        """This event's decision; None when nothing can change (nothing waits, or nothing
        free fits the smallest waiting job and no waiting job outranks a running one)."""
        heads = [q[0].key for q in self.pending if q]
        if not heads:
            return None
        if not self.running or min(heads) > self.running[-1].key:
            if free_total == 0:
                return None
            smallest = min(g for g, n in self.pending_gpus.items() if n > 0)
            if smallest > max(map(len, free.values())):
                return None
        return decide(self.total, free, self.running, itertools.chain(*self.pending),
                      self.max_walk)
