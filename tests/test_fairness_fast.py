"""fair_now's fast per-cycle code decides exactly what its straightforward reference decides.

`fairnow.job_levels` (one pass per tree level, runs merged by one sort, the account tree kept
between cycles) is checked against `fairnow.reference_job_levels` (the first, plain version:
per-account lists merged with `heapq.merge`, the tree rebuilt every cycle), and the whole
`schedule()` with the fast factors and totals (one sort, one pass) against `schedule()` with
the reference ones (`ranking.reference_fair_now_factors`, `ranking.reference_totals`).
"""

from __future__ import annotations

import math
import random

import pytest

from scheduler.policy import NodeView, PendingJob, RunningJob, Snapshot, ranking, schedule
from scheduler.policy.budget import Budget, BudgetState
from scheduler.policy.cycle import Decisions
from scheduler.policy.fairnow import (
    FAIR_NOW,
    _Tree,
    base_tree,
    job_levels,
    reference_job_levels,
)
from scheduler.policy.fairshare import ROOT, Account, Assoc
from scheduler.policy.snapshot import Limits, ShareInputs

NOW = 1_000_000.0


def random_snapshot(rng: random.Random, algorithm: str = FAIR_NOW) -> Snapshot:
    """A random fair_now snapshot with what changes its levels: a nested account tree (some
    accounts unknown, some users not associated, some with 0 shares, a user at root), typed
    and down nodes, running normal and scavenger jobs, caps, a budget, and sometimes the
    simulator's `queued_gpus` for a cut queue."""
    accounts = [Account("lab", ROOT, rng.choice([1.0, 2.0])),
                Account("other", ROOT, rng.choice([0.0, 1.0, 3.0]))]
    for k in range(rng.randint(1, 4)):
        accounts.append(Account(f"g{k}", rng.choice(["lab", "other", "lab"]),
                                rng.choice([0.0, 1.0, 1.0, 2.0, 5.0])))
    names = [a.name for a in accounts] + ["stray", ROOT]
    users = [(f"u{k}", rng.choice(names)) for k in range(rng.randint(1, 9))]
    assocs = tuple(Assoc(u, a, rng.choice([0.0, 1.0, 1.0, 2.0])) for u, a in users
                   if rng.random() < 0.8)
    nodes = []
    for i in range(rng.randint(1, 5)):
        total = rng.choice([2, 4, 8])
        free = tuple(sorted(rng.sample(range(total), rng.randint(0, total))))
        nodes.append(NodeView(f"n{i}", rng.choice(["A100", "V100"]), total, free,
                              rng.random() > 0.1, rng.choice([1.0, 2.0])))
    pending = tuple(
        PendingJob(str(j + 1), *rng.choice(users), rng.choice([1, 1, 1, 2, 4, 8]),
                   NOW - rng.choice([0.0, 60.0, rng.uniform(0, 86400)]),
                   rng.choice([None, "A100", "V100"]),
                   rng.choice(["normal", "normal", "normal", "scavenger"]),
                   rng.choice([600, 3600, 3600, 86400]))
        for j in range(rng.randint(0, 40)))
    running = []
    for j in range(rng.randint(0, 12)):
        n = rng.choice(nodes)
        running.append(RunningJob(f"r{j}", *rng.choice(users), rng.choice([1, 2, 4]), n.name,
                                  (0,), NOW + rng.uniform(60, 9000),
                                  rng.choice(["normal", "normal", "scavenger"]), 1.0))
    limits = Limits(user_gpus={u: rng.randint(1, 8) for u, _ in users if rng.random() < 0.2})
    usage = {key: rng.choice([0.0, 3600.0, rng.uniform(0, 1e6)]) for key in users
             if rng.random() < 0.7}
    shares = ShareInputs(tuple(accounts), assocs, {(a, u): v for (u, a), v in usage.items()},
                         algorithm, past_weight=rng.choice([0.0, 0.2, 0.5, 1.0]))
    budgets = None
    if rng.random() < 0.3:
        budgets = BudgetState((Budget("account", "lab", rng.uniform(0, 4e4), 0.0, math.inf,
                                      "month"),), {}, {})
    queued = None
    if rng.random() < 0.2:  # the simulator's cut: more queued than shown
        queued = {}
        for job in pending:
            key = (job.account, job.user)
            queued[key] = queued.get(key, 0.0) + (job.gpus if job.qos == "normal" else 0.0)
        for key in list(queued):
            queued[key] += rng.choice([0, 0, 4])
    return Snapshot(tuple(nodes), pending, NOW, tuple(running), limits, shares, budgets,
                    queued)


def _same(a: Decisions, b: Decisions) -> None:
    assert a.starts == b.starts
    assert a.preemptions == b.preemptions
    assert a.reasons == b.reasons
    assert a.estimates == b.estimates
    assert a.reservation == b.reservation


SNAPSHOTS = [random_snapshot(random.Random(seed)) for seed in range(400)]


def test_the_snapshots_exercise_what_the_fast_code_shortens() -> None:
    # Guards the comparison below against snapshots too simple to tell the two apart.
    decisions = [schedule(snap) for snap in SNAPSHOTS]
    assert sum(len(d.starts) for d in decisions) > 500
    assert sum(len(d.preemptions) for d in decisions) > 50
    assert sum(d.reservation is not None for d in decisions) > 100
    assert sum(snap.queued_gpus is not None for snap in SNAPSHOTS) > 40
    levels = [x for snap in SNAPSHOTS for x in job_levels(snap)[1].values()]
    assert any(math.isinf(x) for x in levels) and any(x < 1 for x in levels)
    assert any(1 <= x < math.inf for x in levels)


@pytest.mark.parametrize("seed", range(len(SNAPSHOTS)))
def test_levels_equal_the_reference_exactly(seed: int) -> None:
    snap = SNAPSHOTS[seed]
    fast, reference = job_levels(snap), reference_job_levels(snap)
    assert fast[1] == reference[1]  # the same floats, not approximately
    assert fast[0].users == reference[0].users
    assert fast[0].account_entitled == reference[0].account_entitled


def test_schedule_decides_what_the_reference_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = [(schedule(snap), schedule(snap, max_estimates=0, explain=False),
             ranking.priorities(snap)[1]) for snap in SNAPSHOTS]
    monkeypatch.setattr(ranking, "_fair_now_factors", ranking.reference_fair_now_factors)
    monkeypatch.setattr(ranking, "_fair_now_totals",
                        lambda snap, largest: ranking.reference_totals(snap))
    for snap, (full, quick, ranked) in zip(SNAPSHOTS, fast, strict=True):
        _same(full, schedule(snap))
        _same(quick, schedule(snap, max_estimates=0, explain=False))
        assert ranked == ranking.priorities(snap)[1]  # every factor, exactly


def test_totals_equal_the_reference_exactly() -> None:
    for snap in SNAPSHOTS:
        # the same floats, and the same band
        assert ranking.ranked_totals(snap) == ranking.reference_totals(snap)


def test_a_job_id_given_twice_falls_back_to_the_reference() -> None:
    snap = SNAPSHOTS[3]
    twice = Snapshot(snap.nodes, snap.pending + snap.pending[:2], snap.now, snap.running,
                     snap.limits, snap.shares, snap.budgets, snap.queued_gpus)
    assert job_levels(twice)[1] == reference_job_levels(twice)[1]


def test_the_tree_is_built_once_per_account_tree_between_cycles() -> None:
    def covered(snap: Snapshot) -> bool:
        assert snap.shares is not None
        known = {(a.account, a.user) for a in snap.shares.assocs}
        return bool(snap.pending) and all(
            (j.account, j.user) in known for j in snap.pending + snap.running)

    snap = next(s for s in SNAPSHOTS if covered(s))
    assert snap.shares is not None
    assert job_levels(snap)[0].tree is base_tree(snap.shares)
    assert job_levels(snap)[0].tree is job_levels(snap)[0].tree


def test_a_split_kept_between_cycles_equals_a_split_anew() -> None:
    """`_Tree.split` keeps its last split and splits again only the groups on the paths to a
    change. Over 3,000 cycles of a random walk of demands (users come and go, demands and
    the capacity change a little, a lot or not at all), it gives exactly what a tree that
    never split before gives."""
    rng = random.Random(7)
    accounts = (Account("lab", ROOT, 2.0), Account("other", ROOT, 1.0),
                Account("g0", "lab", 1.0), Account("g1", "lab", 3.0), Account("g2", "other", 0.0))
    homes = ["lab", "other", "g0", "g1", "g2", ROOT]
    users = [(rng.choice(homes), f"u{k}") for k in range(14)]
    assocs = tuple(Assoc(u, a, rng.choice([0.0, 1.0, 1.0, 2.0])) for a, u in users)
    kept = _Tree(accounts, assocs, ())
    demand: dict[tuple[str, str], float] = {}
    capacity = 16.0
    for _ in range(3000):
        for _ in range(rng.choice([0, 1, 1, 2, 5])):
            key = rng.choice(users)
            value = demand.get(key, 0.0) + rng.choice([-4, -1, 1, 2, 8])
            if value <= 0 and rng.random() < 0.7:
                demand.pop(key, None)
            else:
                demand[key] = max(0.0, value)
        if rng.random() < 0.05:
            capacity = rng.choice([8.0, 16.0, 24.0])
        assert kept.split(capacity, dict(demand)) == _Tree(accounts, assocs, ()).split(
            capacity, dict(demand))
