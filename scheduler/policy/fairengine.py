"""The fair-share engine: one object that owns fair share's state, held by whoever ranks a queue
(the coordinator, the API, `/metrics`, the simulator: one instance each).

It keeps the `AccountTree` (built once per accounts version), fair now's last split of it
(`fairnow.Split`) and the last fair-share table (computed again only on new usage), and ranks
a snapshot into a `Ranking`: the totals the cycle orders by, the jobs within their share now,
each job's factors (`labq priority`) and each association's standing (`labq quota`), each
computed once, when first asked.

Fair now, Fair Tree and classic are computations on the one tree: `fairnow` (the split and
each job's level), `fairshare` (the table), `priority` (the weighted sum).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property
from operator import attrgetter
from typing import TypeVar

from scheduler.policy.fairnow import (
    FAIR_NOW,
    Key,
    Split,
    Standing,
    UserLoad,
    demand_of,
    past_algorithm,
    positions,
    queued_gpus,
    standing,
)
from scheduler.policy.fairshare import FairShareTable, compute_fairshare
from scheduler.policy.priority import Priority, Weighing
from scheduler.policy.sharetree import AccountTree
from scheduler.policy.snapshot import PendingJob, ShareInputs, Snapshot

_own_key = attrgetter("own_key")
_id = attrgetter("id")
_T = TypeVar("_T")


def _same(a: _T, b: _T) -> bool:
    return a is b or a == b


class FairShare:
    """Fair share's state between rankings: the account tree, fair now's last split, the last
    table; one per holder. `tree` and `table` only replace whole values, so threads may share
    them (concurrent /metrics scrapes: at worst both compute); `rank` keeps a split that one
    thread at a time may use."""

    def __init__(self) -> None:
        self._tree: AccountTree | None = None
        self._split: Split | None = None
        self._table: tuple[ShareInputs, str, FairShareTable] | None = None

    def tree(self, inputs: ShareInputs) -> AccountTree:
        """The tree of `inputs`' accounts and associations, built again only when they change."""
        tree = self._tree
        if tree is None or not (_same(tree.accounts, inputs.accounts)
                                and _same(tree.assocs, inputs.assocs)):
            tree = self._tree = AccountTree(inputs.accounts, inputs.assocs)
        return tree

    def table(self, inputs: ShareInputs) -> FairShareTable:
        """The table that ranks past usage: Fair Tree's under fair_now (its past part, and
        what `labq quota` and `/metrics` show), else the algorithm's own. The inputs' own
        where they carry it, else computed again only when the usage or the tree changed."""
        algorithm = past_algorithm(inputs.algorithm)
        if inputs.table is not None and inputs.table.algorithm == algorithm:
            return inputs.table
        last = self._table
        if last is not None and last[1] == algorithm and (
                last[0] is inputs or (_same(last[0].usage, inputs.usage)
                                      and _same(last[0].accounts, inputs.accounts)
                                      and _same(last[0].assocs, inputs.assocs))):
            return last[2]
        table = compute_fairshare(inputs.accounts, inputs.assocs, inputs.usage, algorithm,
                                  tree=self.tree(inputs))
        self._table = (inputs, algorithm, table)
        return table

    def standing(self, snapshot: Snapshot) -> Standing:
        """Fair now's split of the snapshot: each active association's GPUs held and fair
        GPUs now, and each account's (capacity: the usable GPUs of nodes that are up)."""
        held, demand = demand_of(snapshot.running, queued_gpus(snapshot))
        tree = self.tree(snapshot.shares or ShareInputs()).grown(demand)
        if self._split is None or self._split.tree is not tree:
            self._split = Split(tree)
        capacity = float(sum(n.gpus_usable for n in snapshot.nodes if n.up))
        return standing(self._split, held, demand, capacity)

    def rank(self, snapshot: Snapshot) -> Ranking:
        """The snapshot ranked; each part computed when first asked."""
        return Ranking(self, snapshot)


class Ranking:
    """One snapshot's fair share and priorities (see `FairShare`)."""

    def __init__(self, engine: FairShare, snapshot: Snapshot) -> None:
        self.engine, self.snapshot = engine, snapshot

    @cached_property
    def table(self) -> FairShareTable | None:
        """The table the queue is ranked by (Fair Tree's on past usage under fair_now); None
        without fair-share inputs (first come, first served)."""
        inputs = self.snapshot.shares
        return self.engine.table(inputs) if inputs is not None else None

    @cached_property
    def standing(self) -> Standing:
        return self.engine.standing(self.snapshot)

    @property
    def loads(self) -> dict[Key, UserLoad]:
        """Each active association's standing now (`labq quota`)."""
        return self.standing.users

    @property
    def totals(self) -> dict[str, float]:
        """Each pending job's priority total, the cycle's order (see `_ranked`)."""
        return self._ranked[0]

    @property
    def within(self) -> set[str] | None:
        """Under fair_now the jobs within their share now (`fairnow`'s band: they go first);
        None under the other algorithms."""
        return self._ranked[1]

    def totals_of(self, jobs: Sequence[PendingJob]) -> list[float]:
        """The totals of jobs left out of the snapshot, as they would rank in it (`totals`):
        0 each without fair-share inputs. Not under fair_now, whose totals depend on the
        whole queue (ValueError)."""
        inputs = self.snapshot.shares
        if inputs is None:
            return [0.0] * len(jobs)
        if inputs.algorithm == FAIR_NOW:
            raise ValueError("fair_now's totals depend on the whole queue")
        table = self.table
        assert table is not None
        return self._weighing.totals(jobs, [table.factor(*job.assoc) for job in jobs])

    @cached_property
    def breakdown(self) -> dict[str, Priority]:
        """Each pending job's total and the factors behind it (`labq priority`)."""
        inputs = self.snapshot.shares
        if inputs is None:
            return {}
        weigh, (jobs, factors) = self._weighing, self._ranked[2]
        by_id = {job.id: weigh.priority(job, f) for job, f in zip(jobs, factors, strict=True)}
        return {job.id: by_id[job.id] for job in self.snapshot.pending}

    @cached_property
    def _weighing(self) -> Weighing:
        snapshot = self.snapshot
        assert snapshot.shares is not None
        largest = max((n.gpus_total for n in snapshot.nodes), default=1)
        return Weighing(snapshot.shares.weights, snapshot.shares.qos_factors, snapshot.now,
                        largest)

    @cached_property
    def _ranked(self) -> tuple[dict[str, float], set[str] | None,
                               tuple[Sequence[PendingJob], Sequence[float]]]:
        """(totals, within, (the jobs, each one's fair-share factor))."""
        snapshot = self.snapshot
        inputs = snapshot.shares
        if inputs is None:
            return {}, None, ((), ())
        if inputs.algorithm == FAIR_NOW:
            return self._fair_now(inputs)
        table = self.table
        assert table is not None
        by_key: dict[Key, float] = {}
        for job in snapshot.pending:
            if job.assoc not in by_key:
                by_key[job.assoc] = table.factor(*job.assoc)
        factors = [by_key[job.assoc] for job in snapshot.pending]
        totals = self._weighing.totals(snapshot.pending, factors)
        ids = [job.id for job in snapshot.pending]
        return dict(zip(ids, totals, strict=True)), None, (snapshot.pending, factors)

    def _fair_now(self, inputs: ShareInputs) -> tuple[
            dict[str, float], set[str], tuple[Sequence[PendingJob], Sequence[float]]]:
        """fair_now's factor per job, (1 - p) * 2^-x + p * past (0 for x = inf; see
        `fairnow`), the totals, and the band x < 1. The queue is taken in each user's own
        order (`fairnow.own_order`), where a job's level counts the user's jobs before it as
        if they had started: so a later job of a user never outranks an earlier one (age or
        size could otherwise lift it, and it would then start on a level it does not have):
        each total is capped just below the user's previous one."""
        pending = self.snapshot.pending
        if not pending:
            return {}, set(), ((), ())
        order = sorted(pending, key=_own_key)
        runs = positions([job.assoc for job in order])
        levels = self.standing.run_levels(runs, [job.gpus for job in order])
        table = self.table
        assert table is not None
        known, p = table.known, inputs.past_weight
        now_weight, inf = 1.0 - p, math.inf
        factors = [0.0] * len(order)
        within: set[str] = set()
        for key, run in runs.items():
            past = p * (known[key] if key in known else table.factor(*key))
            for k in run:
                x = levels[k]  # >= 0, never NaN (`run_levels` only raises it from 0.0)
                if x < 1.0:
                    within.add(order[k].id)
                factors[k] = now_weight * 2.0 ** -x + past if x != inf else 0.0
        raw = self._weighing.totals(order, factors, runs.values())
        totals = dict(zip(map(_id, order), raw, strict=True))
        return totals, within, (order, factors)


def rank(snapshot: Snapshot) -> Ranking:
    """The snapshot ranked by an engine of its own (one-off callers and tests; a scheduler
    holds its `FairShare`)."""
    return FairShare().rank(snapshot)


def levels_of(ranking: Ranking) -> dict[str, float]:
    """Each pending job's x (`fairnow`), each association's own jobs in their own order."""
    ordered = sorted(ranking.snapshot.pending, key=_own_key)
    x = ranking.standing.run_levels(positions([j.assoc for j in ordered]),
                                    [j.gpus for j in ordered])
    return {j.id: level for j, level in zip(ordered, x, strict=True)}
