"""The reference implementations the fair-share engine is held to (`tests/test_fairness_fast.py`):
fair now's formulas as first written, plain and slow, with nothing kept between calls.

- `reference_levels`: every account's runs merged with `heapq.merge` (the engine: one stable
  sort per tree level, lone runs kept as they are);
- `reference_factors` / `reference_totals`: the factor by `blend`, then age, size and QOS,
  then the cap in each user's own order, each a separate pass (the engine: one pass);
- `reference_priorities`: each job's `job_priority` with those factors.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping

from scheduler.policy.fairengine import FairShare
from scheduler.policy.fairnow import (
    FAIR_NOW,
    Key,
    Split,
    Standing,
    demand_of,
    factor_of,
    own_order,
    queued_gpus,
)
from scheduler.policy.fairnow import standing as fair_now_standing
from scheduler.policy.fairshare import FAIR_TREE, FairShareTable, compute_fairshare
from scheduler.policy.priority import Priority, job_priority
from scheduler.policy.sharetree import ROOT, AccountTree
from scheduler.policy.snapshot import ShareInputs, Snapshot


def blend(level: float, past: float, past_weight: float) -> float:
    """(1 - past_weight) * 2^-level + past_weight * past; 0 for a level of inf."""
    if math.isnan(level) or math.isinf(level):
        return 0.0
    return (1.0 - past_weight) * factor_of(level) + past_weight * past


def reference_standing(snapshot: Snapshot) -> Standing:
    """Fair now's standing with the tree built anew from the snapshot and split afresh."""
    inputs = snapshot.shares or ShareInputs()
    held, demand = demand_of(snapshot.running, queued_gpus(snapshot))
    tree = AccountTree(inputs.accounts, inputs.assocs, demand)
    capacity = float(sum(n.gpus_usable for n in snapshot.nodes if n.up))
    return fair_now_standing(Split(tree), held, demand, capacity)


def reference_levels(loads: Standing, ordered: Iterable[tuple[str, Key, int]]
                     ) -> dict[str, float]:
    """Each job's x, jobs given as (id, association, GPUs) in each association's own order."""
    mine: dict[Key, list[tuple[str, int]]] = {}
    for job_id, key, gpus in ordered:
        mine.setdefault(key, []).append((job_id, gpus))
    x: dict[str, float] = {}
    _merge(loads, ROOT, mine, x)
    return x


def _merge(loads: Standing, account: str, mine: Mapping[Key, list[tuple[str, int]]],
           x: dict[str, float]) -> list[tuple[str, int]]:
    """The account's jobs in the order progressive filling takes them; sets x."""
    tree = loads.tree
    lists: list[tuple[list[tuple[str, int]], float, float]] = []
    for child in tree.child_accounts.get(account, ()):
        if child in loads.account_entitled:
            jobs = _merge(loads, child, mine, x)
            if jobs:
                lists.append((jobs, loads.account_load.get(child, 0.0),
                              loads.account_entitled[child]))
    for key in tree.child_users.get(account, ()):
        if key in mine and key in loads.users:
            user = loads.users[key]
            lists.append((mine[key], user.held, user.entitled))
    sibling = len(lists) > 1  # a level is compared only where it has rivals
    keyed: list[list[tuple[float, int, str, int]]] = []
    for n, (jobs, load, entitled) in enumerate(lists):
        ahead, run = 0.0, []
        for job_id, gpus in jobs:
            level = (load + ahead) / entitled if entitled > 0 else math.inf
            if sibling or job_id not in x:
                x[job_id] = max(x.get(job_id, 0.0), level)
            run.append((level, n, job_id, gpus))
            ahead += gpus
        keyed.append(run)
    return [(job_id, gpus) for _, _, job_id, gpus in heapq.merge(*keyed)]


def reference_job_levels(snapshot: Snapshot) -> tuple[Standing, dict[str, float]]:
    loads = reference_standing(snapshot)
    order = sorted(snapshot.pending, key=own_order)
    return loads, reference_levels(loads, ((j.id, j.assoc, j.gpus) for j in order))


def reference_table(snapshot: Snapshot) -> FairShareTable:
    """The table ranking the past, computed anew (Fair Tree's under fair_now)."""
    inputs = snapshot.shares
    assert inputs is not None
    algorithm = FAIR_TREE if inputs.algorithm == FAIR_NOW else inputs.algorithm
    if inputs.table is not None and inputs.table.algorithm == algorithm:
        return inputs.table
    return compute_fairshare(inputs.accounts, inputs.assocs, inputs.usage, algorithm)


def reference_factors(snapshot: Snapshot) -> tuple[dict[str, float], set[str] | None]:
    """Each pending job's fair-share factor, and under fair_now the jobs within their share."""
    inputs = snapshot.shares
    assert inputs is not None
    table = reference_table(snapshot)
    if inputs.algorithm != FAIR_NOW:
        return {job.id: table.factor(job.account, job.user) for job in snapshot.pending}, None
    _, levels = reference_job_levels(snapshot)
    factors = {job.id: blend(levels[job.id], table.factor(job.account, job.user),
                             inputs.past_weight) for job in snapshot.pending}
    return factors, {job_id for job_id, x in levels.items() if x < 1.0}


def reference_priorities(snapshot: Snapshot) -> dict[str, Priority]:
    inputs = snapshot.shares
    if inputs is None:
        return {}
    factors, _ = reference_factors(snapshot)
    largest = max((n.gpus_total for n in snapshot.nodes), default=1)
    return {job.id: job_priority(
        fairshare=factors[job.id], submitted_at=job.submitted_at, gpus=job.gpus, qos=job.qos,
        now=snapshot.now, largest_node_gpus=largest, weights=inputs.weights,
        qos_factors=inputs.qos_factors) for job in snapshot.pending}


def reference_totals(snapshot: Snapshot) -> tuple[dict[str, float], set[str] | None]:
    """The totals the cycle orders by: each job's `job_priority` total, under fair_now
    capped just below the total of the user's job before it in the user's own order."""
    if snapshot.shares is None:
        return {}, None
    _, within = reference_factors(snapshot)
    totals = {job_id: p.total for job_id, p in reference_priorities(snapshot).items()}
    if snapshot.shares.algorithm != FAIR_NOW:
        return totals, None
    previous: dict[Key, float] = {}
    for job in sorted(snapshot.pending, key=own_order):
        cap = previous.get(job.assoc)
        if cap is not None and totals[job.id] >= cap:
            totals[job.id] = cap - 1e-6
        previous[job.assoc] = totals[job.id]
    return totals, within


def engine_totals(snapshot: Snapshot, engine: FairShare | None = None
                  ) -> tuple[dict[str, float], set[str] | None]:
    ranking = (engine or FairShare()).rank(snapshot)
    return ranking.totals, ranking.within
