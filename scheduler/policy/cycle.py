"""One scheduling cycle: order the queue → place what fits → say why the rest waits."""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from math import isfinite

from scheduler.model import Reason
from scheduler.policy.backfill import MAX_ESTIMATES, Backfill, Reservation, utc
from scheduler.policy.budget import BudgetGate
from scheduler.policy.fairnow import (
    FAIR_NOW,
    blend,
    job_levels,
    own_order,
    reference_job_levels,
    snapshot_loads,
    within_share,
)
from scheduler.policy.fairshare import FAIR_TREE, FairShareTable, compute_fairshare
from scheduler.policy.placement import FreePool, Placement, fits_type, type_matches
from scheduler.policy.preemption import SCAVENGER, Preemption, plan_preemptions
from scheduler.policy.priority import Priority, job_priority, priority_total
from scheduler.policy.snapshot import NodeView, PendingJob, ShareInputs, Snapshot

QOS_RANK = {"normal": 0, "scavenger": 1}


@dataclass(frozen=True)
class Start:
    job_id: str
    node: str
    indices: tuple[int, ...]


@dataclass
class Decisions:
    starts: list[Start] = field(default_factory=list)
    reasons: dict[str, list[Reason]] = field(default_factory=dict)
    preemptions: list[Preemption] = field(default_factory=list)
    estimates: dict[str, float] = field(default_factory=dict)  # job id -> Unix time
    reservation: Reservation | None = None
    # The fair-share table the queue was ranked by (`_table_of`), for reuse by its readers.
    fairshare: FairShareTable | None = None


def priorities(snapshot: Snapshot) -> tuple[FairShareTable | None, dict[str, Priority]]:
    """Each pending job's priority with its factors: fair share, age, size and QOS.

    Under fair_now the table is Fair Tree's on past usage alone (what `labq quota` lists as
    its usage columns); the fair-share factor is fair now's (see `fairnow`)."""
    inputs = snapshot.shares
    if inputs is None:
        return None, {}
    largest = _largest(snapshot)
    if inputs.algorithm == FAIR_NOW:
        table = _tree_table(snapshot)
        per_job, _ = _fair_now_factors(snapshot)
        return table, {job.id: job_priority(
            fairshare=per_job[job.id], submitted_at=job.submitted_at, gpus=job.gpus,
            qos=job.qos, now=snapshot.now, largest_node_gpus=largest, weights=inputs.weights,
            qos_factors=inputs.qos_factors) for job in snapshot.pending}
    tree_table, factors = _fairshare(snapshot)
    return tree_table, {job.id: job_priority(
        fairshare=factors[(job.account, job.user)], submitted_at=job.submitted_at,
        gpus=job.gpus, qos=job.qos, now=snapshot.now, largest_node_gpus=largest,
        weights=inputs.weights, qos_factors=inputs.qos_factors) for job in snapshot.pending}


def priority_totals(snapshot: Snapshot) -> dict[str, float]:
    """The same totals as `priorities` (see `priority.priority_total`), computed inline: this
    runs over the whole queue every cycle."""
    return _totals(snapshot)[0]


def _totals(snapshot: Snapshot) -> tuple[dict[str, float], set[str] | None]:
    """`priority_totals`, and under fair_now the jobs within their share now (`fairnow`'s
    band: they go first); None under the other algorithms."""
    inputs = snapshot.shares
    if inputs is None:
        return {}, None
    w, largest = inputs.weights, _largest(snapshot)
    if w.max_age_s <= 0:  # the rare setting: keep the reference formula
        per_job, within = _per_job_factors(snapshot)
        return {job.id: priority_total(
            fairshare=per_job[job.id], submitted_at=job.submitted_at,
            gpus=job.gpus, qos=job.qos, now=snapshot.now, largest_node_gpus=largest,
            weights=w, qos_factors=inputs.qos_factors) for job in snapshot.pending}, within
    if inputs.algorithm == FAIR_NOW:
        return _fair_now_totals(snapshot, largest)
    rest = _rest(snapshot, largest)
    _, by_user = _fairshare(snapshot)
    fs = {key: w.fairshare * min(1.0, max(0.0, f)) for key, f in by_user.items()}
    return {job.id: rest[job.id] + fs[(job.account, job.user)]
            for job in snapshot.pending}, None


def _fair_now_totals(snapshot: Snapshot, largest: int
                     ) -> tuple[dict[str, float], set[str] | None]:
    """`reference_totals` under fair_now (max_age_s > 0) in one pass over the queue in each
    user's own order: the order `job_levels` sorts by is the order `_in_own_order` caps in,
    so the queue is sorted once, and the level, age, size, QOS, the factor and the cap are
    one loop. Every float is computed by the same expression as in the reference (the tests
    compare them exactly)."""
    inputs = snapshot.shares
    assert inputs is not None
    w = inputs.weights
    order = _own_sorted(snapshot.pending)
    keys = [(job.account, job.user) for job in order]
    levels = snapshot_loads(snapshot).level_list(keys, [job.gpus for job in order])
    if levels is None:
        return reference_totals(snapshot)
    table = _tree_table(snapshot)
    p = inputs.past_weight
    now_weight = 1.0 - p
    now, width, max_age, fairshare = snapshot.now, max(1, largest), w.max_age_s, w.fairshare
    age, size = w.age, w.size
    qos = {name: w.qos * min(1.0, max(0.0, f)) for name, f in inputs.qos_factors.items()}
    # Per association: [p x its Fair Tree factor, its previous total in its own order].
    users: dict[tuple[str, str], list[float]] = {}
    sized: dict[int, float] = {}  # the size term per GPU count
    totals: dict[str, float] = {}
    within: set[str] = set()
    for job, key, x in zip(order, keys, levels, strict=True):
        mine = users.get(key)
        if mine is None:
            mine = users[key] = [p * table.factor(*key), math.inf]
        # x >= 0 and never NaN (`level_list` only raises it from 0.0), so 2^-x and x != inf
        # are the reference's 2^-max(0, x) and isfinite(x); the conditionals below are its
        # min and max, written out.
        factor = now_weight * 2.0 ** -x + mine[0] if x != math.inf else 0.0
        waited = now - job.submitted_at
        waited = (waited if waited > 0.0 else 0.0) / max_age
        big = sized.get(job.gpus)
        if big is None:
            big = sized[job.gpus] = size * min(1.0, max(0.0, job.gpus / width))
        total = ((age * (waited if waited < 1.0 else 1.0) + big + qos.get(job.qos, 0.0))
                 + fairshare * factor)
        if total >= mine[1]:  # never above the user's job before it (`_in_own_order`)
            total = mine[1] - 1e-6
        mine[1] = totals[job.id] = total
        if x < 1.0:
            within.add(job.id)
    if len(totals) != len(order):  # a job id given twice: only the reference handles that
        return reference_totals(snapshot)
    return totals, within


def _own_sorted(pending: Sequence[PendingJob]) -> list[PendingJob]:
    """`sorted(pending, key=fairnow.own_order)` (the same key, then the position), on keys
    built in one comprehension (as `_ordered`)."""
    keys = [(j.qos == SCAVENGER, j.gpus, j.time_limit_s, j.submitted_at, len(j.id), j.id, i)
            for i, j in enumerate(pending)]
    keys.sort()
    return [pending[k[-1]] for k in keys]


def reference_totals(snapshot: Snapshot) -> tuple[dict[str, float], set[str] | None]:
    """`_totals` under fair_now as first written: the factors (`_fair_now_factors`), then
    age, size and QOS (`_rest`), then the cap in each user's own order (`_in_own_order`);
    the reference the tests hold `_fair_now_totals` to."""
    inputs = snapshot.shares
    assert inputs is not None and inputs.algorithm == FAIR_NOW
    if inputs.weights.max_age_s <= 0:
        return _totals(snapshot)
    rest = _rest(snapshot, _largest(snapshot))
    factors, within = _fair_now_factors(snapshot)
    return _in_own_order(snapshot, {job_id: value + inputs.weights.fairshare * factors[job_id]
                                    for job_id, value in rest.items()}), within


def _in_own_order(snapshot: Snapshot, totals: dict[str, float]) -> dict[str, float]:
    """Under fair_now a job's level counts its user's jobs before it in the user's own order
    (`fairnow.own_order`), as if they had started: so a later job of a user must never
    outrank an earlier one (age or size could otherwise lift it, and it would then start on
    a level it does not have). Each total is capped just below the user's previous one."""
    out = dict(totals)
    previous: dict[tuple[str, str], float] = {}
    for job in sorted(snapshot.pending, key=own_order):
        key = (job.account, job.user)
        cap = previous.get(key)
        if cap is not None and out[job.id] >= cap:
            out[job.id] = cap - 1e-6
        previous[key] = out[job.id]
    return out


def _rest(snapshot: Snapshot, largest: int) -> dict[str, float]:
    """Each pending job's weighted age + size + QOS (max_age_s > 0)."""
    assert snapshot.shares is not None
    w = snapshot.shares.weights
    now, width = snapshot.now, max(1, largest)
    qos = {name: w.qos * min(1.0, max(0.0, f))
           for name, f in snapshot.shares.qos_factors.items()}
    return {job.id: (w.age * min(1.0, max(0.0, now - job.submitted_at) / w.max_age_s)
                     + w.size * min(1.0, max(0.0, job.gpus / width)) + qos.get(job.qos, 0.0))
            for job in snapshot.pending}


def _per_job_factors(snapshot: Snapshot) -> tuple[dict[str, float], set[str] | None]:
    assert snapshot.shares is not None
    if snapshot.shares.algorithm == FAIR_NOW:
        return _fair_now_factors(snapshot)
    _, factors = _fairshare(snapshot)
    return {job.id: factors[(job.account, job.user)] for job in snapshot.pending}, None


def _fair_now_factors(snapshot: Snapshot) -> tuple[dict[str, float], set[str]]:
    """fair_now's factor per pending job (see `fairnow`), and the jobs within their share:
    `reference_fair_now_factors` with `blend` written inline and each user's past part
    taken once."""
    inputs = snapshot.shares
    assert inputs is not None
    _, levels = job_levels(snapshot)
    table = _tree_table(snapshot)
    p = inputs.past_weight
    now_weight = 1.0 - p
    past: dict[tuple[str, str], float] = {}
    factors: dict[str, float] = {}
    for job in snapshot.pending:
        key = (job.account, job.user)
        if key not in past:
            past[key] = p * table.factor(*key)
        x = levels[job.id]
        factors[job.id] = (now_weight * 2.0 ** -max(0.0, x) + past[key] if isfinite(x)
                           else 0.0)
    return factors, {job_id for job_id, x in levels.items() if x < 1.0}


def reference_fair_now_factors(snapshot: Snapshot) -> tuple[dict[str, float], set[str]]:
    """`_fair_now_factors` as first written, the reference the tests hold it to."""
    inputs = snapshot.shares
    assert inputs is not None
    _, levels = reference_job_levels(snapshot)
    table = _tree_table(snapshot)
    past = {key: table.factor(*key)
            for key in {(job.account, job.user) for job in snapshot.pending}}
    p = inputs.past_weight
    factors = {job.id: blend(levels[job.id], past[(job.account, job.user)], p)
               for job in snapshot.pending}
    return factors, {job_id for job_id, x in levels.items() if within_share(x)}


def _table_of(snapshot: Snapshot) -> FairShareTable | None:
    """The fair-share table this cycle ranked by (Fair Tree's on past usage under fair_now),
    kept on the decisions so `labq quota` and `/metrics` reuse it instead of computing it
    again. Computed once per inputs: the ranking above asked for the same one."""
    inputs = snapshot.shares
    if inputs is None:
        return None
    return _tree_table(snapshot) if inputs.algorithm == FAIR_NOW else _fairshare(snapshot)[0]


def _tree_table(snapshot: Snapshot) -> FairShareTable:
    """Fair Tree's table on decayed usage (fair_now's past part, and `labq quota`'s rows)."""
    inputs = snapshot.shares
    assert inputs is not None
    if inputs.table is not None and inputs.table.algorithm == FAIR_TREE:
        return inputs.table
    return _computed(inputs, FAIR_TREE)


# The last table computed, by the identity of its (immutable) inputs: one cycle asks for the
# same table several times (ranking, the decisions' copy); it is computed once.
_LAST: dict[str, tuple[ShareInputs, FairShareTable]] = {}


def _computed(inputs: ShareInputs, algorithm: str) -> FairShareTable:
    last = _LAST.get(algorithm)
    if last is not None and last[0] is inputs:
        return last[1]
    table = compute_fairshare(inputs.accounts, inputs.assocs, inputs.usage, algorithm)
    _LAST[algorithm] = (inputs, table)
    return table


def _largest(snapshot: Snapshot) -> int:
    return max((n.gpus_total for n in snapshot.nodes), default=1)


def _fairshare(snapshot: Snapshot
               ) -> tuple[FairShareTable | None, dict[tuple[str, str], float]]:
    inputs = snapshot.shares
    if inputs is None:
        return None, {}
    table = inputs.table or _computed(inputs, inputs.algorithm)
    factors = {key: table.factor(*key)
               for key in {(job.account, job.user) for job in snapshot.pending}}
    return table, factors


def order_queue(
    pending: tuple[PendingJob, ...], ranked: Mapping[str, Priority | float] | None = None,
    first: set[str] | None = None,
) -> list[PendingJob]:
    """Priority order: normal QOS before scavenger, then (fair_now) the jobs in `first`
    (within their share now), then highest priority, then oldest.

    Without priorities (no fair-share inputs), first come, first served within a QOS.
    """
    totals = {k: (v.total if isinstance(v, Priority) else v) for k, v in (ranked or {}).items()}
    return _ordered(pending, totals, first)


def _ordered(pending: Sequence[PendingJob], totals: Mapping[str, float],
             first: set[str] | None) -> list[PendingJob]:
    """`order_queue` on totals that are numbers already (the cycle's own): the sort keys
    are built in one comprehension rather than a key function called per job. Ids are
    numbers as strings: shorter first, then by text, is numeric order; the position breaks
    the tie of an id given twice."""
    rank, total = QOS_RANK.get, totals.get
    if first is None:
        keys = [(rank(j.qos, 0), False, -total(j.id, 0.0), j.submitted_at, len(j.id), j.id, i)
                for i, j in enumerate(pending)]
    else:
        keys = [(rank(j.qos, 0), j.id not in first, -total(j.id, 0.0), j.submitted_at,
                 len(j.id), j.id, i) for i, j in enumerate(pending)]
    keys.sort()
    return [pending[k[-1]] for k in keys]


def schedule(snapshot: Snapshot, max_estimates: int = MAX_ESTIMATES,
             explain: bool = True) -> Decisions:
    """`decide`, with Python's cyclic garbage collector paused (see `_collector_paused`)."""
    with _collector_paused():
        return decide(snapshot, max_estimates, explain)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one cycle. A cycle makes tens of thousands of
    short-lived tuples, lists and dicts, all freed by reference counting (it makes no
    reference cycles); each time their count crosses the collector's threshold it would
    walk every tracked object, the snapshot's 10,000s of jobs included: 10-15 ms of an
    80 ms cycle of 10,000 pending jobs under fair_now (`bench/bench_cycle.py`). The previous
    state is restored, so nesting and a caller's own pause are kept."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def decide(snapshot: Snapshot, max_estimates: int = MAX_ESTIMATES,
           explain: bool = True) -> Decisions:
    """Decide which pending jobs start now and where, and why every other one waits.

    1. order the queue; 2. for each job, best-fit it on the GPUs still free; a job that fits
    starts (its GPUs leave the pool), unless a cap on GPUs held by its user or account stops
    it; the first job blocked for GPUs that can start at some known time gets a reservation,
    and lower jobs start only where they do not delay it (backfill, see `backfill`);
    3. a job that does not start gets every reason it waits: the cap, the resources it lacks,
    that no node has its GPU type, or the reservation it would delay, and its place in line
    behind the jobs ahead of it that also wait; 4. the first `max_estimates` waiting jobs not
    held by a cap get an estimated start time.

    `explain=False` (the simulator, which needs only the starts and preemptions): no reasons,
    and the walk down the queue stops once no free GPU is left and no scavenger job runs (no
    later job could start or preempt); the starts and preemptions are the same. The
    estimates are not valid then (they cover only the waiting jobs the shortened walk
    reached): pass ``max_estimates=0`` with it and do not use them.
    """
    pool = FreePool(snapshot.nodes)
    backfill = Backfill(snapshot)
    decisions = Decisions()
    blocked: list[PendingJob] = []
    limited: dict[str, Reason] = {}
    delayed: dict[str, Reason] = {}
    held = _Held(snapshot)
    budget = BudgetGate(snapshot.budgets, snapshot.limits.account_chain)
    weights = _Weights(snapshot.nodes)
    smallest_blocked: dict[str | None, int] = {}  # free GPUs only shrink within a cycle
    can_stop = not explain and not any(r.qos == SCAVENGER for r in snapshot.running)
    totals, within = _totals(snapshot)
    decisions.fairshare = _table_of(snapshot)
    for job in _ordered(snapshot.pending, totals, within):
        if can_stop and pool.left == 0:
            break
        over = held.over_limit(job)
        if over is None and job.qos != SCAVENGER:  # scavengers run outside budgets
            # On its cheapest possible node first; the node it gets is checked below.
            over = budget.check(job.user, job.account, job.gpus * job.time_limit_s
                                * weights.cheapest(job.gpu_type))
        if over is not None:
            limited[job.id] = over
            blocked.append(job)
            continue
        placement: Placement | Reason | None = None
        if job.gpus < smallest_blocked.get(job.gpu_type, job.gpus + 1):
            placement = backfill.place(job, pool)
        if isinstance(placement, Reason):  # it fits, but would delay the reserved job
            delayed[job.id] = placement
            blocked.append(job)
            continue
        if placement is None:
            smallest_blocked[job.gpu_type] = min(job.gpus,
                                                 smallest_blocked.get(job.gpu_type, job.gpus))
            blocked.append(job)
            if backfill.reservation is None:
                backfill.reserve(job, pool)
            continue
        if job.qos != SCAVENGER:
            cost = job.gpus * job.time_limit_s * weights.of(placement.node)
            over = budget.check(job.user, job.account, cost)
            if over is not None:  # only a dearer node than the cheapest is free now
                limited[job.id] = over
                blocked.append(job)
                continue
            budget.commit(job.user, job.account, cost)
        decisions.starts.append(Start(job.id, placement.node, placement.indices))
        pool.take(placement)
        held.add(job)
        backfill.started(job, placement)
    decisions.reservation = backfill.reservation
    if explain:
        decisions.reasons = _reasons(blocked, limited, delayed,
                                     _Explainer(snapshot.nodes, pool), backfill.reservation)
    decisions.estimates = backfill.estimates(
        [job for job in blocked if job.id not in limited], max_estimates)
    wanting = [job for job in blocked if job.id not in limited and job.id not in delayed]
    decisions.preemptions = plan_preemptions(
        wanting, snapshot.nodes, {n.name: len(pool.free_on(n.name)) for n in snapshot.nodes
                                  if n.up}, snapshot.running)
    for plan in decisions.preemptions if explain else ():
        decisions.reasons[plan.for_job].append(Reason(
            "Preempting", f"stopping scavenger job(s) {', '.join(plan.victims)} on {plan.node} "
                          "to make room"))
    return decisions


class _Weights:
    """Billing weight per node, and the cheapest weight among nodes of a GPU type."""

    def __init__(self, nodes: Sequence[NodeView]) -> None:
        self.nodes = nodes
        self.by_node = {n.name: n.billing_weight for n in nodes}
        self._cheapest: dict[str | None, float] = {}

    def of(self, node: str) -> float:
        return self.by_node.get(node, 1.0)

    def cheapest(self, gpu_type: str | None) -> float:
        if gpu_type not in self._cheapest:
            typed = [n.billing_weight for n in self.nodes if type_matches(gpu_type, n.gpu_model)]
            self._cheapest[gpu_type] = min(typed, default=1.0)
        return self._cheapest[gpu_type]


def _reasons(
    blocked: list[PendingJob], limited: dict[str, Reason], delayed: dict[str, Reason],
    explain: _Explainer, reservation: Reservation | None,
) -> dict[str, list[Reason]]:
    """Every reason each waiting job waits, in priority order (see `schedule`)."""
    result = {}
    ahead = 0  # jobs ahead in line that wait for GPUs (a job held by a cap blocks nobody)
    for job in blocked:
        reasons = [limited[job.id]] if job.id in limited else []
        if job.id in delayed:
            reasons.append(delayed[job.id])
        elif reservation is not None and job.id == reservation.job_id:
            (lack,) = explain.resources(job)
            reasons.append(Reason(lack.code, f"{lack.detail}; GPUs reserved from "
                                             f"{utc(reservation.start)} on {reservation.node}"))
        elif job.id not in limited or not explain.pool.fits(job.gpus, job.gpu_type):
            reasons += explain.resources(job)
        if ahead:
            reasons.append(Reason("Priority", f"{ahead} job(s) ahead in line also wait"))
        if job.id not in limited:
            ahead += 1
        result[job.id] = reasons
    return result


class _Held:
    """GPUs held per user and per account (with its ancestors), against their caps."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.limits = snapshot.limits
        self.capped = bool(self.limits.user_gpus or self.limits.account_gpus)
        self.user: dict[str, int] = {}
        self.account: dict[str, int] = {}
        for job in snapshot.running:
            self._count(job.user, job.account, job.gpus)

    def _count(self, user: str, account: str, gpus: int) -> None:
        if not self.capped:  # nothing to hold against: no need to count
            return
        self.user[user] = self.user.get(user, 0) + gpus
        for name in self.limits.account_chain(account):
            self.account[name] = self.account.get(name, 0) + gpus

    def add(self, job: PendingJob) -> None:
        self._count(job.user, job.account, job.gpus)

    def over_limit(self, job: PendingJob) -> Reason | None:
        if not self.capped:
            return None
        cap = self.limits.user_gpus.get(job.user)
        if cap is not None and self.user.get(job.user, 0) + job.gpus > cap:
            return Reason("UserGpuLimit", f"{job.user} may hold {cap} GPUs at once and holds "
                                          f"{self.user.get(job.user, 0)}")
        for name in self.limits.account_chain(job.account):
            cap = self.limits.account_gpus.get(name)
            if cap is not None and self.account.get(name, 0) + job.gpus > cap:
                return Reason("AccountGpuLimit", f"account {name} may hold {cap} GPUs at once "
                                                 f"and holds {self.account.get(name, 0)}")
        return None


class _Explainer:
    """Why a job does not fit, from the pool as the cycle left it; cached per (type, GPUs)."""

    def __init__(self, nodes: tuple[NodeView, ...], pool: FreePool) -> None:
        self.nodes = nodes
        self.pool = pool
        self._cache: dict[tuple[str | None, int], tuple[Reason, ...]] = {}

    def resources(self, job: PendingJob) -> tuple[Reason, ...]:
        key = (job.gpu_type, job.gpus)
        if key not in self._cache:
            self._cache[key] = (self._why(job),)
        return self._cache[key]

    def _why(self, job: PendingJob) -> Reason:
        typed = [n for n in self.nodes if fits_type(job, n)]
        kind = job.gpu_type or "any type"
        if not typed:
            if job.gpu_type is None:
                return Reason("Resources", "no GPU node has registered yet")
            return Reason("GpuTypeUnavailable", f"no node has GPUs of type {job.gpu_type}")
        up = [n for n in typed if n.up]
        if not up:
            if job.gpu_type is None:
                return Reason("Resources", "every GPU node is down")
            return Reason("GpuTypeUnavailable", f"every node with {kind} GPUs is down")
        if max(n.gpus_usable for n in up) < job.gpus:
            if max(n.gpus_total for n in up) >= job.gpus:
                return Reason("Resources", f"needs {job.gpus} GPUs ({kind}) on one node; no "
                                           f"node that is up has that many usable GPUs "
                                           f"({_held_back(up)}: see `labq nodes`)")
            return Reason("Resources", f"needs {job.gpus} GPUs ({kind}) on one node; "
                                       "no node that is up has that many")
        return Reason("Resources", f"needs {job.gpus} GPUs ({kind}) on one node; "
                                   f"at most {self.pool.most_free(job.gpu_type)} free now")


def _held_back(nodes: Sequence[NodeView]) -> str:
    """Why GPUs of these nodes are out of use, in words: a process labq did not start runs
    on them (named per node, at most three), or they are reported unhealthy."""
    busy = [f"{n.name} GPU {', '.join(map(str, n.foreign))}" for n in nodes if n.foreign]
    sick = any(set(n.unhealthy) - set(n.foreign) for n in nodes)
    parts = []
    if busy:
        more = f" and {len(busy) - 3} more node(s)" if len(busy) > 3 else ""
        parts.append(f"a process labq did not start runs on {'; '.join(busy[:3])}{more}")
    if sick or not busy:
        parts.append("some are reported unhealthy")
    return "; ".join(parts)
