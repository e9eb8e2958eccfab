"""The simulator's exact class cut where a class is in submit order (every backfill policy
but fair now, whose cut is `scheduler.sim.fairnowcut`): the replay shows the policy only some
waiting jobs per class; a job deeper in a class may backfill under the reservation where its
class-mates ahead cannot, and `_deeper_backfill` finds those for another call. Only a class
one of whose jobs could find room on a reserved node where the policy's walk meets it gets
them (the walk meets a class's jobs in class order, and the call's starts before a job, in
walk order, tell how many GPUs the reserved nodes still had there); its first job that ends
by the reservation's start comes from `scheduler.sim.firstfit`. The call is made again until
no such class is left. Without budgets and where no CPUs or memory are counted, of the
classes none of whose jobs can start (more GPUs than are free, or more per node than a node
has free) only the first job the walk meets is shown (by the policy's own key: its total
from the fair-share table, submit time, id; drf's key): it takes the reservation if no job
has it yet, and the others, met later, neither start (no room even on the reserved GPUs)
nor take it. A mixin of
`scheduler.sim.engine._Replay`, whose state it reads (declared below)."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from scheduler.policy.cycle import Decisions, schedule
from scheduler.policy.fairnow import FAIR_NOW
from scheduler.policy.priority import Weighing
from scheduler.policy.snapshot import NodeView, PendingJob, Snapshot
from scheduler.sim.classes import ClassKey, Queued, class_key
from scheduler.sim.drfviews import DrfViews
from scheduler.sim.fairnowcut import FairNowCut
from scheduler.sim.firstfit import FirstFit
from scheduler.sim.trace import SimJob

if TYPE_CHECKING:
    from scheduler.sim.policies import ShareBuilder, SimPolicy


WalkKey = tuple[float, float, int, str]  # a job's place in the policy's walk
Heads = tuple[dict[ClassKey, int], list[PendingJob]]  # a group's classes at one job each, and
# their first jobs (empty until asked for)


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
        stuck: list[Queued] = []  # the first jobs of classes none of whose jobs can start
        for shape, group in self.shapes.items():
            gpus, nodes = shape
            if lone and (gpus > free or gpus // nodes > most):
                # None of these can start; the first the walk meets takes the reservation if
                # no job has it yet, and then the others do nothing (see the module docstring)
                stuck += [q[0] for q in group.values()]
                continue
            if cut and (gpus >= free or gpus // nodes > most):  # at most one could start (or
                # none: no node has its GPUs per node free); the first may take the reservation
                kept = heads.get(shape)
                if kept is None:
                    kept = heads[shape] = (dict.fromkeys(group, 1), [])
                shown.update(kept[0])
                if pending is not None:
                    if not kept[1]:
                        kept[1].extend([q[0][2] for q in group.values()])
                    pending += kept[1]
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

    def _first_met(self, items: list[Queued]) -> Queued:
        """Of `items` (jobs in the queue), the one the policy's walk meets first: by its key
        (`scheduler.policy.ranking.ordered`: highest total, then submit time, then id)."""
        keys = [-0.0] * len(items)  # (no totals under drf: its key is its submit time)
        if self.policy.drf:
            submitted = [self._drf_submitted(job.account, job) for _, job, _ in items]
        else:
            submitted = [job.submit for _, job, _ in items]
            inputs = self.shares.build(self._usage_now)
            if inputs is not None and len(items) > 1:
                table = self.shares.engine.table(inputs)
                views = [view for _, _, view in items]
                largest = max((v.gpus_total for v in self.views.values()), default=1)
                weighing = Weighing(inputs.weights, inputs.qos_factors, self.now, largest)
                keys = [-total for total in weighing.totals(
                    views, [table.factor(*view.assoc) for view in views])]
        best = min(range(len(items)), key=lambda i: (keys[i], submitted[i],
                                                      len(items[i][1].id), items[i][1].id))
        return items[best]

    def _views(self, shown: Mapping[ClassKey, int]) -> list[PendingJob]:
        """The policy's views of the first `shown[key]` jobs of each class."""
        if self.policy.drf:
            return self._drf_views(shown)
        pending: list[PendingJob] = []
        for key, n in shown.items():
            _take(self.classes[key], n, pending)
        return pending

    def _submit_order_call(self, snap: Snapshot, pending: list[PendingJob],
                           shown: Mapping[ClassKey, int]) -> Decisions:
        """One policy call on the engine's cut of classes in submit order (`snap` holds
        `pending`), made again with the jobs deeper in a class that could backfill
        (`_deeper_backfill`) until none is left out; `pending` gets them too."""
        added: set[ClassKey] = set()
        while True:
            decisions = schedule(snap, max_estimates=0, explain=False)
            self.calls += 1
            deeper = self._deeper_backfill(decisions, shown, snap, added)
            if not deeper:
                return decisions
            pending += deeper
            snap = replace(snap, pending=tuple(pending))

    def _deeper_backfill(self, decisions: Decisions, shown: Mapping[ClassKey, int],
                         snap: Snapshot, added: set[ClassKey]) -> list[PendingJob]:
        """The jobs left out of the call on `snap` that could backfill under the reservation,
        where a class is in submit order (every policy but fair now, whose classes are in
        time-limit order): a job deeper in a class whose class-mate ahead was shown and did not
        start (so the reservation's job ranks before it, and the reservation stays the same
        with it shown), whose GPUs per node a reserved node has free where the walk meets it
        (the GPUs free before the call less those the call's starts before it took) and whose
        time limit ends by the reservation's start. Of such a class, the first of them that
        the reserved nodes' free GPUs could hold are returned, and the class joins `added` (no
        more of it can start: those, walked in class order, fill them or one finds no room).
        None most of the time."""
        reservation = decisions.reservation
        if (reservation is None or not self.cut or self.policy.algorithm == FAIR_NOW
                or not self.policy.backfill):
            return []
        # Outside the reservation it could not fit where its class-mate ahead did not: only
        # the reserved nodes' GPUs are left to it.
        free = self.free
        reserved = [name for name, _ in reservation.parts]
        room = max(len(free[name]) for name in reserved)
        if room < min(self.sizes):  # (the fewest GPUs per node a class asks)
            return []
        window = reservation.start - snap.now
        fits = self.first_fit
        assert fits is not None
        started: dict[ClassKey, int] | None = None
        ids: set[str] = set()
        walk: _Walk | None = None
        found: list[PendingJob] = []
        # The classes whose GPUs per node a reserved node has free, with a job deeper than
        # those shown whose time limit may end by the reservation's start.
        limits = self.limits
        candidates = [(key, q, n, gpus // nodes)
                      for (gpus, nodes), group in self.shapes.items() if gpus // nodes <= room
                      for key, q in group.items()
                      if (n := shown.get(key)) is not None and limits[key][0] <= window
                      and n < len(q) and key not in added]
        for key, q, n, per_node in candidates:
            if started is None:
                started = {}
                for start in decisions.starts:
                    ids.add(start.job_id)
                    k = class_key(self.by_id[start.job_id])
                    started[k] = started.get(k, 0) + 1
            went = started.get(key, 0)
            if went >= n:
                continue
            if n == 1 and not went:
                if q[0][1].time_limit <= window:
                    continue  # the one shown ends by its start and found no room
            elif any(q[i][1].time_limit <= window and q[i][1].id not in ids for i in range(n)):
                continue  # one shown that ends by its start found no room: none after does
            if walk is None:
                walk = _Walk(self, snap, decisions, reserved)
            # The walk meets a class's jobs in class order (a later one's total is no higher:
            # it waited less): if it meets the first after the start after which no reserved
            # node has its GPUs per node free, none finds room.
            full = walk.full(per_node)
            if full is not None and walk.key(walk.views[q[n - 1][1].id]) > full:
                continue  # (the last shown is met before it)
            fit = fits[key]
            first = fit.first(q[n][1].id, window)
            if first is None or (full is not None and self._walk_key(walk, key, first) > full):
                continue
            # Walked in class order, each that starts takes its GPUs per node on a reserved
            # node (it found no room outside the reservation): no more than those nodes' free
            # GPUs hold can start, and the jobs after them find no room.
            deeper = [first]
            for _ in range(sum(len(free[name]) // per_node for name in reserved) - 1):
                after = fit.after(deeper[-1][1].id, window)
                if after is None:
                    break
                deeper.append(after)
            found += self._views_of(key, deeper)
            added.add(key)
        return found

    def _walk_key(self, walk: _Walk, key: ClassKey, item: Queued) -> WalkKey:
        if self.policy.drf:  # (no totals: the key the policy sees is its submit time)
            job = item[1]
            return (-0.0, self._drf_submitted(key[0], job), len(job.id), job.id)
        return walk.key(item[2])

    def _views_of(self, key: ClassKey, items: list[Queued]) -> list[PendingJob]:
        if self.policy.drf:
            return self._drf_jobs(key[0], [job for _, job, _ in items])
        return [view for _, _, view in items]


def _take(q: deque[Queued], n: int, out: list[PendingJob]) -> None:
    """The policy's views of the first `n` jobs of class `q`, onto `out`."""
    if n == 1:
        out.append(q[0][2])
    else:
        out.extend([item[2] for item in itertools.islice(q, n)])


class _Walk:
    """Where the call's walk meets a job (its key in the policy's order), and the most GPUs
    free on one reserved node there: those free before the call less those taken by the
    starts before it (`Decisions.starts` is in walk order)."""

    def __init__(self, replay: ExactCut, snap: Snapshot, decisions: Decisions,
                 reserved: list[str]) -> None:
        ranking = replay.shares.engine.last if snap.shares is not None else None
        self.totals = ranking.totals if ranking is not None else {}
        self.table = ranking.table if ranking is not None else None
        self.weighing: Weighing | None = None
        if snap.shares is not None:
            largest = max((n.gpus_total for n in snap.nodes), default=1)
            self.weighing = Weighing(snap.shares.weights, snap.shares.qos_factors, snap.now,
                                     largest)
        self.views = {view.id: view for view in snap.pending}  # the jobs shown
        self.starts = decisions.starts
        left = {name: len(replay.free[name]) for name in reserved}
        self.left: list[int] = [max(left.values())]  # after the first i starts
        self._full: dict[int, WalkKey | None] = {}
        for start in decisions.starts:
            for name, indices in start.parts:
                if name in left:
                    left[name] -= len(indices)
            self.left.append(max(left.values()))

    def key(self, view: PendingJob) -> WalkKey:
        total = self.totals.get(view.id)
        if total is None:
            total = 0.0
            if self.weighing is not None and self.table is not None:
                total = self.weighing.totals((view,), (self.table.factor(*view.assoc),))[0]
        return (-total, view.submitted_at, len(view.id), view.id)

    def full(self, per_node: int) -> WalkKey | None:
        """The key of the start after which no reserved node has `per_node` GPUs free (None:
        one still has at the end of the walk)."""
        if per_node in self._full:
            return self._full[per_node]
        found: WalkKey | None = None
        for i, left in enumerate(self.left):
            if left < per_node:
                found = (self.key(self.views[self.starts[i - 1].job_id]) if i
                         else (-math.inf, -math.inf, 0, ""))
                break
        self._full[per_node] = found
        return found


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
