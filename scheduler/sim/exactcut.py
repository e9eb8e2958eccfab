"""The simulator's exact class cut where a class is in submit order (every backfill policy
but fair now, whose cut is `scheduler.sim.fairnowcut`): the replay shows the policy only some
waiting jobs per class; a job deeper in a class may backfill under the reservation where its
class-mates ahead cannot (a shorter time limit). The policy's walk asks for those as it meets
a class-mate the reservation delays (`decide`'s `more`, `scheduler.policy.walk`), and meets
them in their places, in the same call: `_deeper` gives the first jobs after those shown of
its class whose time limits end by the reservation's start (`scheduler.sim.firstfit`), as
many as the reserved nodes' free GPUs could hold. Without budgets and where no CPUs or memory
are counted, of the classes none of whose jobs can start (more GPUs than are free, or more
per node than a node has free) only the first job the walk meets is shown (by the policy's
own key: its total from the fair-share table, submit time, id; drf's key): it takes the
reservation if no job has it yet, and the others, met later, neither start (no room even on
the reserved GPUs) nor take it. A mixin of `scheduler.sim.engine._Replay`, whose state it
reads (declared below)."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from scheduler.policy.backfill import Reservation
from scheduler.policy.cycle import Decisions, schedule
from scheduler.policy.fairshare import FairShareTable
from scheduler.policy.priority import PriorityWeights, Weighing
from scheduler.policy.snapshot import NodeView, PendingJob, ShareInputs, Snapshot
from scheduler.sim.classes import ClassKey, Queued, class_key
from scheduler.sim.drfviews import DrfViews
from scheduler.sim.fairnowcut import FairNowCut
from scheduler.sim.firstfit import FirstFit
from scheduler.sim.trace import SimJob

if TYPE_CHECKING:
    from scheduler.sim.cluster import Cluster
    from scheduler.sim.policies import ShareBuilder, SimPolicy


class Heads:
    """A group of classes (one GPU count and node count) shown at one job each: their counts,
    their first jobs' views (empty until asked for), and, for a group none of whose jobs can
    start, those of its first jobs the walk may meet first (`ExactCut._first_met`). Kept
    until a class of the group changes its first job."""

    __slots__ = ("counts", "views", "order", "front", "front_of", "base")

    def __init__(self, group: Mapping[ClassKey, deque[Queued]]) -> None:
        self.counts = dict.fromkeys(group, 1)
        self.views: list[PendingJob] = []
        self.order: list[Queued] = []  # the first jobs in queue order (empty until asked for)
        self.front: list[Queued] = []
        self.front_of: object = None  # the fair-share table `front` was chosen by
        self.base: list[float] = []  # each front job's fair-share and size terms, by it


class ExactCut(FairNowCut, DrfViews):
    """The exact cut's checks (see the module docstrings), on the replay's state."""

    classes: dict[ClassKey, deque[Queued]]
    shapes: dict[tuple[int, int], dict[ClassKey, deque[Queued]]]  # classes by GPUs and nodes
    heads: dict[tuple[int, int], Heads]  # (kept until a class of the group changes its first)
    lone: bool  # the policy walks the queue by its jobs' keys alone (no fair share)
    cut: bool
    free: dict[str, list[int]]
    limits: dict[ClassKey, list[int]]
    first_fit: dict[ClassKey, FirstFit] | None
    sizes: dict[int, int]
    free_total: int
    by_id: dict[str, SimJob]
    policy: SimPolicy
    cluster: Cluster
    shares: ShareBuilder
    calls: int
    views: dict[str, NodeView]
    now: float
    _usage_now: dict[tuple[str, str], float]

    def _counts(self, pending: list[PendingJob] | None = None) -> dict[ClassKey, int]:
        """How many jobs of each class the snapshot holds, under a policy with backfill (see
        the module docstring; under budgets `scheduler.sim.budgetcut` shows those of a class
        whose tenant has a budget otherwise); their views go to `pending` if given."""
        shown: dict[ClassKey, int] = {}
        most, free, cut = self._most_free(), self.free_total, self.cut
        heads, lone = self.heads, self.lone
        stuck: list[tuple[Heads, dict[ClassKey, deque[Queued]]]] = []  # the groups none of
        # whose jobs can start
        for shape, group in self.shapes.items():
            gpus, nodes = shape
            if lone and (gpus > free or gpus // nodes > most):
                # None of these can start; the first the walk meets takes the reservation if
                # no job has it yet, and then the others do nothing (see the module docstring)
                kept = heads.get(shape)
                if kept is None:
                    kept = heads[shape] = Heads(group)
                stuck.append((kept, group))
                continue
            if cut and (gpus >= free or gpus // nodes > most):  # at most one could start (or
                # none: no node has its GPUs per node free); the first may take the reservation
                kept = heads.get(shape)
                if kept is None:
                    kept = heads[shape] = Heads(group)
                shown.update(kept.counts)
                if pending is not None:
                    if not kept.views:
                        kept.views.extend([q[0][2] for q in group.values()])
                    pending += kept.views
                continue
            for key, q in group.items():
                if not cut:
                    n = len(q)
                else:  # as many as could start, and the next, which may take the reservation
                    # unless those take every free GPU (the walk ends with them if they all
                    # start, and if one does not, it takes the reservation or finds it taken)
                    can = free // gpus if gpus else len(q)
                    n = min(len(q), can + (can * gpus < free))
                shown[key] = n
                if pending is not None:
                    _take(q, n, pending)
        if stuck:
            item = self._first_met(stuck)
            shown[class_key(item[1])] = 1
            if pending is not None:
                pending.append(item[2])
        return shown

    def _first_met(self, groups: list[tuple[Heads, dict[ClassKey, deque[Queued]]]]
                   ) -> Queued:
        """Of the first jobs of `groups`' classes, the one the policy's walk meets first: by
        its key (`scheduler.policy.ranking.ordered`: highest total, then submit time, then
        id), computed for each group's front (`_front`) alone."""
        inputs = self.shares.build(self._usage_now) if not self.policy.drf else None
        table = self.shares.engine.table(inputs) if inputs is not None else None
        items: list[Queued] = []
        base: list[float] = []
        for heads, group in groups:
            if heads.front_of is not table or not heads.front:
                heads.front, heads.front_of = self._front(heads, group, inputs, table), table
            items += heads.front
            base += heads.base
        if len(items) == 1:
            return items[0]
        if self.policy.drf:  # (no totals: its key is its submit time, drf's)
            keys = [(self._drf_submitted(job.account, job), 0.0, len(job.id), job.id)
                    for _, job, _ in items]
            return items[min(range(len(items)), key=keys.__getitem__)]
        if inputs is None or table is None:
            return min(items, key=_queue_order)  # (no totals: by submit time)
        items = _contenders(items, base, inputs.weights, self.now)
        if len(items) == 1:
            return items[0]
        views = [view for _, _, view in items]
        weighing = Weighing(inputs.weights, inputs.qos_factors, self.now,
                            self.cluster.gpus_per_node)  # (every node has the largest's GPUs)
        known, factor = table.known, table.factor
        totals = weighing.totals(views, [known[v.assoc] if v.assoc in known
                                         else factor(*v.assoc) for v in views])
        keys = [(-total, view.submitted_at, len(view.id), view.id)
                for total, view in zip(totals, views, strict=True)]
        return items[min(range(len(items)), key=keys.__getitem__)]

    def _front(self, heads: Heads, group: Mapping[ClassKey, deque[Queued]],
               inputs: ShareInputs | None, table: FairShareTable | None) -> list[Queued]:
        """The first jobs of a group's classes that the walk may meet before the others,
        whatever the time: of two, one that is earlier in the queue (submit time, id) is met
        first where its key can be no lower.

        The group's jobs ask for as many GPUs, and their QOS is the same: by `table` (fair
        share), a job's total is its size's term, the same for all, and terms that grow with
        its wait and its fair-share factor (each float operation of `Weighing.totals` keeps
        the order), so an earlier job with a factor as high is met first (a tie goes by submit
        time, then id). Under drf (no totals) a tenant's earlier job has a key no higher (its
        tenant's GPUs ahead of it, then its submit time), and is met first where its id
        sorts first. Without either the key is the submit time: the earliest is met first.
        `heads.base` gets each front job's fair-share and size terms (`_contenders`)."""
        order = heads.order
        if not order:
            order += sorted((q[0] for q in group.values()), key=_queue_order)
        if table is not None and inputs is not None:
            front: list[Queued] = []
            base = heads.base = []
            w = inputs.weights
            gpus = order[0][1].gpus / self.cluster.gpus_per_node
            size = w.size * (0.0 if not gpus > 0.0 else gpus if gpus < 1.0 else 1.0)
            known, factor, best = table.known, table.factor, -math.inf
            for item in order:
                assoc = item[2].assoc
                fs = known[assoc] if assoc in known else factor(*assoc)
                if not best >= fs:  # (a NaN factor is kept, and keeps none out)
                    front.append(item)
                    base.append(w.fairshare * (fs if 0.0 <= fs <= 1.0 else
                                               1.0 if fs > 1.0 else 0.0) + size)
                if fs > best:
                    best = fs
            return front
        if not self.policy.drf:
            return order[:1]
        front = []
        least: dict[str, tuple[int, str]] = {}  # each tenant's least id so far
        for item in order:
            job = item[1]
            own = (len(job.id), job.id)
            seen = least.get(job.account)
            if seen is None or own < seen:
                front.append(item)
                least[job.account] = own
        return front

    def _views(self, shown: Mapping[ClassKey, int]) -> list[PendingJob]:
        """The policy's views of the first `shown[key]` jobs of each class."""
        if self.policy.drf:
            return self._drf_views(shown)
        pending: list[PendingJob] = []
        for key, n in shown.items():
            _take(self.classes[key], n, pending)
        return pending

    def _submit_order_call(self, snap: Snapshot, shown: Mapping[ClassKey, int]) -> Decisions:
        """One policy call on the engine's cut of classes in submit order (`snap` holds the
        first `shown[key]` jobs of each class), told the jobs deeper in those classes that
        could backfill under the reservation as its walk meets their class-mates
        (`_deeper`): the decisions of the whole queue in one call."""
        added: set[ClassKey] = set()
        now = snap.now

        def more(job: PendingJob, reservation: Reservation) -> list[PendingJob]:
            return self._deeper(job, reservation, shown, now, added)

        decisions = schedule(snap, max_estimates=0, explain=False, more=more)
        self.calls += 1
        return decisions

    def _deeper(self, job: PendingJob, reservation: Reservation,
                shown: Mapping[ClassKey, int], now: float, added: set[ClassKey]
                ) -> list[PendingJob]:
        """The jobs left out of the call that could backfill under `reservation`, where the
        walk has met `job` and the reservation delays it (it fits, but would delay the
        reserved job) and its class is in submit order (every policy but fair now, whose
        classes are in time-limit order): the jobs after those shown of its class whose
        time limits end by the reservation's start, as many as the reserved nodes' free
        GPUs could hold; its class joins `added`. None most of the time.

        `job` found no room outside the reservation, so no job of its class after it finds
        any: they may start only on the reserved nodes' GPUs, by the reservation's start;
        walked in class order, those returned fill them or one finds no room (and the jobs
        after it, of the same size, none either). Nor may one take the reservation (it is
        taken). The walk meets them after `job`: a later job of a class ranks no higher."""
        key = class_key(self.by_id[job.id])
        n = shown.get(key)
        q = self.classes[key]
        if n is None or n >= len(q) or key in added:
            return []
        window = reservation.start - now
        if self.limits[key][0] > window:  # (the class's shortest time limit)
            return []
        fits = self.first_fit
        assert fits is not None
        fit = fits[key]
        first = fit.first(q[n][1].id, window)
        if first is None:
            return []
        added.add(key)
        free, per_node = self.free, key[2] // key[4]
        deeper = [first]
        for _ in range(sum(len(free[name]) // per_node for name, _ in reservation.parts) - 1):
            after = fit.after(deeper[-1][1].id, window)
            if after is None:
                break
            deeper.append(after)
        return self._views_of(key, deeper)

    def _views_of(self, key: ClassKey, items: list[Queued]) -> list[PendingJob]:
        if self.policy.drf:
            return self._drf_jobs(key[0], [job for _, job, _ in items])
        return [view for _, _, view in items]


def _contenders(items: list[Queued], base: list[float], w: PriorityWeights, now: float
                ) -> list[Queued]:
    """Of `items` (the fronts' jobs, of one QOS), those whose totals may be the highest: a
    total is its fair-share and size terms (`base`) plus its wait's term and the QOS's (the
    same for all), as `Weighing.totals` sums them, each sum rounded a few times at most (far
    below 1e-9 of the weights' sum); a job whose sum here is lower than the highest by more
    than that ranks lower (all of them where the weights are not finite)."""
    span = abs(w.age) + abs(w.size) + abs(w.qos) + abs(w.fairshare)
    if not math.isfinite(span):
        return items
    age, max_age = w.age, w.max_age_s
    bound = []
    for item, b in zip(items, base, strict=True):
        waited = now - item[1].submit  # (`Weighing.totals`' age factor)
        bound.append(b + age * (0.0 if waited <= 0.0 else 1.0 if waited >= max_age
                                else waited / max_age))
    least = max(bound) - 1e-9 * (span + 1.0)
    return [item for item, b in zip(items, bound, strict=True) if b >= least]


def _queue_order(item: Queued) -> tuple[float, int, str]:
    job = item[1]
    return (job.submit, len(job.id), job.id)


def _take(q: deque[Queued], n: int, out: list[PendingJob]) -> None:
    """The policy's views of the first `n` jobs of class `q`, onto `out`."""
    if n == 1:
        out.append(q[0][2])
    else:
        out.extend([item[2] for item in itertools.islice(q, n)])


class Fenwick:
    """Prefix sums over positions 1..n with point updates, both O(log n)."""

    def __init__(self, n: int) -> None:
        self.tree = [0] * (n + 1)

    def add(self, i: int, delta: int) -> None:
        tree = self.tree
        while i < len(tree):
            tree[i] += delta
            i += i & -i

    def prefix(self, i: int) -> int:
        """The sum over positions 1..i."""
        tree, total = self.tree, 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total
