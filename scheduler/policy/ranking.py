"""The queue's order: each pending job's priority (fair share, age, size, QOS) and the order
the cycle walks, under every fair-share algorithm. Pure functions of a snapshot."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from math import isfinite
from operator import attrgetter

from scheduler.policy.fairnow import (
    FAIR_NOW,
    blend,
    job_levels,
    own_order,
    positions,
    reference_job_levels,
    snapshot_loads,
    within_share,
)
from scheduler.policy.fairshare import FAIR_TREE, FairShareTable, compute_fairshare
from scheduler.policy.priority import Priority, job_priority, priority_total
from scheduler.policy.snapshot import PendingJob, ShareInputs, Snapshot

QOS_RANK = {"normal": 0, "scavenger": 1}
_own_key = attrgetter("own_key")


def priorities(snapshot: Snapshot) -> tuple[FairShareTable | None, dict[str, Priority]]:
    """Each pending job's priority with its factors: fair share, age, size and QOS.

    Under fair_now the table is Fair Tree's on past usage alone (what `labq quota` lists as
    its usage columns); the fair-share factor is fair now's (see `fairnow`)."""
    inputs = snapshot.shares
    if inputs is None:
        return None, {}
    largest = _largest(snapshot)
    if inputs.algorithm == FAIR_NOW:
        table = fair_tree_table(snapshot)
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
    return ranked_totals(snapshot)[0]


def ranked_totals(snapshot: Snapshot) -> tuple[dict[str, float], set[str] | None]:
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
    pending = snapshot.pending
    if not pending:
        return {}, set()
    # The queue in each user's own order (a stable sort), and each user's jobs' places in it.
    order = sorted(pending, key=_own_key)
    runs = positions([job.assoc for job in order])
    levels = snapshot_loads(snapshot).run_levels(runs, [job.gpus for job in order])
    if levels is None:
        return reference_totals(snapshot)
    table = fair_tree_table(snapshot)
    p = inputs.past_weight
    now_weight = 1.0 - p
    now, width, max_age, fairshare = snapshot.now, max(1, largest), w.max_age_s, w.fairshare
    age, size = w.age, w.size
    qos = {name: w.qos * min(1.0, max(0.0, f)) for name, f in inputs.qos_factors.items()}
    sized: dict[int, float] = {}  # the size term per GPU count
    totals: dict[str, float] = {}
    within: set[str] = set()
    known = table.known
    for key, run in runs.items():
        past = p * (known[key] if key in known else table.factor(*key))
        previous = math.inf  # the user's previous total in its own order
        for k in run:
            job, x = order[k], levels[k]
            # x >= 0 and never NaN (`run_levels` only raises it from 0.0), so 2^-x and
            # x != inf are the reference's 2^-max(0, x) and isfinite(x); the conditionals
            # below are its min and max, written out.
            factor = now_weight * 2.0 ** -x + past if x != math.inf else 0.0
            waited = now - job.submitted_at
            waited = (waited if waited > 0.0 else 0.0) / max_age
            big = sized.get(job.gpus)
            if big is None:
                big = sized[job.gpus] = size * min(1.0, max(0.0, job.gpus / width))
            total = ((age * (waited if waited < 1.0 else 1.0) + big + qos.get(job.qos, 0.0))
                     + fairshare * factor)
            if total >= previous:  # never above the user's job before it (`_in_own_order`)
                total = previous - 1e-6
            previous = totals[job.id] = total
            if x < 1.0:
                within.add(job.id)
    if len(totals) != len(order):  # a job id given twice: only the reference handles that
        return reference_totals(snapshot)
    return totals, within


def reference_totals(snapshot: Snapshot) -> tuple[dict[str, float], set[str] | None]:
    """`ranked_totals` under fair_now as first written: the factors (`_fair_now_factors`), then
    age, size and QOS (`_rest`), then the cap in each user's own order (`_in_own_order`);
    the reference the tests hold `_fair_now_totals` to."""
    inputs = snapshot.shares
    assert inputs is not None and inputs.algorithm == FAIR_NOW
    if inputs.weights.max_age_s <= 0:
        return ranked_totals(snapshot)
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
    table = fair_tree_table(snapshot)
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
    table = fair_tree_table(snapshot)
    past = {key: table.factor(*key)
            for key in {(job.account, job.user) for job in snapshot.pending}}
    p = inputs.past_weight
    factors = {job.id: blend(levels[job.id], past[(job.account, job.user)], p)
               for job in snapshot.pending}
    return factors, {job_id for job_id, x in levels.items() if within_share(x)}


def fairshare_table(snapshot: Snapshot) -> FairShareTable | None:
    """The fair-share table this cycle ranked by (Fair Tree's on past usage under fair_now),
    kept on the decisions so `labq quota` and `/metrics` reuse it instead of computing it
    again. Computed once per inputs: the ranking above asked for the same one."""
    inputs = snapshot.shares
    if inputs is None:
        return None
    return fair_tree_table(snapshot) if inputs.algorithm == FAIR_NOW else _fairshare(snapshot)[0]


def fair_tree_table(snapshot: Snapshot) -> FairShareTable:
    """Fair Tree's table on decayed usage (fair_now's past part, and `labq quota`'s rows):
    the inputs' own where it is one, else computed once per inputs (`_computed`)."""
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
    return ordered(pending, totals, first)


def ordered(pending: Sequence[PendingJob], totals: Mapping[str, float],
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
