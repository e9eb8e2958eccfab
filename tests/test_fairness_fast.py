"""The fair-share engine (`fairengine.FairShare`) decides exactly what its straightforward
references decide (`tests/fairness_reference.py`).

Fair now's levels (one pass per tree level, runs merged by one sort, the tree and the last
split kept between cycles) are held to the reference's (per-account lists merged with
`heapq.merge`, the tree built anew every time); the totals, the band and every job's factors
to the reference's separate passes; and the whole `schedule()` with an engine kept between
cycles to one with a fresh engine each time. Malformed snapshots are refused when built.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy import NodeView, PendingJob, RunningJob, Snapshot, schedule
from scheduler.policy.budget import Budget, BudgetState
from scheduler.policy.cycle import Decisions
from scheduler.policy.fairengine import FairShare, Ranking, levels_of, rank
from scheduler.policy.fairnow import FAIR_NOW, Split
from scheduler.policy.fairshare import CLASSIC, FAIR_TREE, ROOT, Account, Assoc
from scheduler.policy.sharetree import AccountTree
from scheduler.policy.snapshot import Limits, ShareInputs
from tests.fairness_reference import reference_job_levels, reference_priorities, reference_totals

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
    levels = [x for snap in SNAPSHOTS for x in levels_of(rank(snap)).values()]
    assert any(math.isinf(x) for x in levels) and any(x < 1 for x in levels)
    assert any(1 <= x < math.inf for x in levels)


def _held_to_the_reference(snap: Snapshot, engine: FairShare) -> None:
    ranking = engine.rank(snap)
    loads, levels = reference_job_levels(snap)
    assert levels_of(ranking) == levels  # the same floats, not approximately
    assert ranking.loads == loads.users
    assert ranking.standing.account_entitled == loads.account_entitled
    assert (ranking.totals, ranking.within) == reference_totals(snap)
    assert ranking.breakdown == reference_priorities(snap)  # every factor, exactly


@pytest.mark.parametrize("seed", range(0, len(SNAPSHOTS), 4))
def test_a_fresh_engine_equals_the_reference_exactly(seed: int) -> None:
    _held_to_the_reference(SNAPSHOTS[seed], FairShare())


def test_an_engine_kept_between_cycles_equals_the_reference_exactly() -> None:
    engine = FairShare()
    for snap in SNAPSHOTS:
        _held_to_the_reference(snap, engine)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), algorithm=st.sampled_from([FAIR_NOW, FAIR_TREE, CLASSIC]))
def test_the_engine_equals_the_reference_on_any_snapshot(seed: int, algorithm: str) -> None:
    _held_to_the_reference(random_snapshot(random.Random(seed), algorithm), FairShare())


def test_schedule_with_a_kept_engine_decides_what_a_fresh_one_decides() -> None:
    engine = FairShare()
    for snap in SNAPSHOTS:
        _same(schedule(snap, fairshare=engine), schedule(snap))
        _same(schedule(snap, max_estimates=0, explain=False, fairshare=engine),
              schedule(snap, max_estimates=0, explain=False))


def test_a_malformed_snapshot_is_refused_when_built() -> None:
    snap = SNAPSHOTS[3]
    assert len(snap.pending) >= 2
    with pytest.raises(ValueError, match="given twice: 1, 2"):
        Snapshot(snap.nodes, snap.pending + snap.pending[:2], snap.now)
    with pytest.raises(ValueError, match="asks for -1 GPUs"):
        PendingJob("9", "u", "a", -1, NOW)
    with pytest.raises(ValueError, match="asks for -2 GPUs"):
        RunningJob("r", "u", "a", -2, "n0")
    with pytest.raises(ValueError, match="shares of account"):
        AccountTree((Account("a", ROOT, -1.0),), ())


def test_the_tree_is_built_once_per_account_tree_between_cycles() -> None:
    def covered(snap: Snapshot) -> bool:
        assert snap.shares is not None
        known = {(a.account, a.user) for a in snap.shares.assocs}
        return bool(snap.pending) and all(
            (j.account, j.user) in known for j in snap.pending + snap.running)

    snap = next(s for s in SNAPSHOTS if covered(s))
    assert snap.shares is not None
    engine = FairShare()
    tree = engine.tree(snap.shares)
    assert engine.rank(snap).standing.tree is tree
    assert engine.rank(snap).standing.tree is tree
    again = ShareInputs(tuple(snap.shares.accounts), tuple(snap.shares.assocs))  # equal, anew
    assert engine.tree(again) is tree
    other = ShareInputs((*snap.shares.accounts, Account("new", ROOT)), snap.shares.assocs)
    assert engine.tree(other) is not tree


def test_the_table_is_computed_again_only_on_new_usage() -> None:
    snap = SNAPSHOTS[5]
    assert snap.shares is not None
    engine = FairShare()
    table = engine.table(snap.shares)
    same = ShareInputs(snap.shares.accounts, snap.shares.assocs, dict(snap.shares.usage),
                       snap.shares.algorithm)
    assert engine.table(same) is table
    newer = ShareInputs(snap.shares.accounts, snap.shares.assocs,
                        {**snap.shares.usage, ("lab", "u0"): 1.0}, snap.shares.algorithm)
    assert engine.table(newer) is not table


def test_a_split_kept_between_cycles_equals_a_split_anew() -> None:
    """`Split.split` keeps its last split and splits again only the groups on the paths to a
    change. Over 3,000 cycles of a random walk of demands (users come and go, demands and
    the capacity change a little, a lot or not at all), it gives exactly what a tree that
    never split before gives."""
    rng = random.Random(7)
    accounts = (Account("lab", ROOT, 2.0), Account("other", ROOT, 1.0),
                Account("g0", "lab", 1.0), Account("g1", "lab", 3.0), Account("g2", "other", 0.0))
    homes = ["lab", "other", "g0", "g1", "g2", ROOT]
    users = [(rng.choice(homes), f"u{k}") for k in range(14)]
    assocs = tuple(Assoc(u, a, rng.choice([0.0, 1.0, 1.0, 2.0])) for a, u in users)
    kept = Split(AccountTree(accounts, assocs))
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
        assert kept.split(capacity, dict(demand)) == Split(AccountTree(accounts, assocs)).split(
            capacity, dict(demand))


def test_schedule_ranks_with_the_engine_the_inputs_carry() -> None:
    """The simulator's `ShareBuilder` gives its engine with the inputs: `schedule` ranks with
    it, so the tree and the split are kept between the calls of one replay."""
    ranked: list[Snapshot] = []

    class Spy(FairShare):
        def rank(self, snapshot: Snapshot) -> Ranking:
            ranked.append(snapshot)
            return super().rank(snapshot)

    snap = SNAPSHOTS[7]
    assert snap.shares is not None
    carried = replace(snap, shares=replace(snap.shares, engine=Spy()))
    _same(schedule(carried), schedule(snap))
    assert ranked == [carried]
