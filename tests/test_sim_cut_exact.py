"""The replay's class cut is exact: on seeded random traces every job starts at the same time,
on the same node and GPUs, with the cut as with every waiting job shown (`show_all=True`),
under every policy, with and without budgets (some of which run out: a job held by its budget
is skipped by the policy, so the jobs behind it in its class may start or take the
reservation)."""

from __future__ import annotations

import random

import pytest

from scheduler.sim import Cluster, simulate
from scheduler.sim.cluster import SimResult
from scheduler.sim.policies import POLICIES, get_policy
from scheduler.sim.trace import SimJob

Case = tuple[list[SimJob], Cluster, dict[str, float] | None, dict[str, float] | None]


def random_case(seed: int, budgets: bool) -> Case:
    """A small contended cluster (2-4 nodes of 2-8 GPUs, sometimes counting CPUs and memory, a
    billing weight of 1 or not) and 30-200 bursty jobs of 2-4 tenants with 1-3 users each: 1 to
    a node's GPUs, some across nodes, time limits shorter and longer than the run. With
    `budgets`, most tenants get a budget between none and all their jobs' cost (so some run
    out, some never do); sometimes unequal tenant shares."""
    rng = random.Random(f"sim-cut-exact-{seed}")
    nodes, per_node = rng.randint(2, 4), rng.choice((2, 4, 8))
    counted = rng.random() < 0.3
    cluster = Cluster(nodes, per_node, "gpu", billing_weight=rng.choice((1.0, 1.0, 1.7)),
                      cpus=16 if counted else 0, mem=65536 if counted else 0)
    tenants = rng.randint(2, 4)
    users = {t: rng.randint(1, 3) for t in range(tenants)}
    sizes = [g for g in (1, 2, 3, 4, 8) if g <= per_node]
    jobs, t = [], 0.0
    for i in range(1, rng.randint(30, 200) + 1):
        if rng.random() < 0.35:
            t += rng.choice((0, 10, 60, 300, 900, 1800))
        tenant = rng.randrange(tenants)
        duration = float(rng.choice((30, 60, 300, 900, 1800, 3600)) + rng.randrange(60))
        gpus, spread = rng.choice(sizes), 1
        if rng.random() < 0.1:
            spread = rng.randint(2, nodes)
            gpus = per_node // rng.choice((1, 2)) * spread
        limit = max(60, int(duration * rng.choice((0.5, 1.0, 1.2, 2.0, 4.0, 10.0, 30.0))))
        jobs.append(SimJob(str(i), f"t{tenant}", f"u{tenant}{rng.randrange(users[tenant])}",
                           gpus, t, duration, limit, nodes=spread,
                           cpus=rng.choice((0, 0, 2, 8)) if counted else 0,
                           mem=rng.choice((0, 0, 32768)) if counted else 0))
    given: dict[str, float] | None = None
    if budgets:
        asked: dict[str, float] = {}
        for j in jobs:
            asked[j.account] = asked.get(j.account, 0.0) + j.gpus * j.time_limit / 3600
        given = {a: round(h * rng.choice((0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 2.0)), 3)
                 for a, h in sorted(asked.items()) if rng.random() < 0.8}
    shares = None
    if rng.random() < 0.3:
        shares = {f"t{k}": float(rng.choice((1, 2, 3))) for k in range(tenants)}
    return jobs, cluster, given, shares


def placed(result: SimResult) -> dict[str, list[tuple[float, tuple[tuple[str, tuple[int, ...]],
                                                                    ...]]]]:
    """Each job's runs: start, and the node and GPUs of each of its parts."""
    out: dict[str, list[tuple[float, tuple[tuple[str, tuple[int, ...]], ...]]]] = {}
    for r in sorted(result.runs, key=lambda r: (r.start, r.job.id)):
        out.setdefault(r.job.id, []).append((r.start, ((r.node, r.indices), *r.rest)))
    return out


def cut_differs(policy: str, case: Case, calc_period: float = 300.0) -> dict[str, object]:
    """The jobs whose runs differ between the cut and the whole queue (empty: none)."""
    jobs, cluster, budgets, shares = case
    cut, whole = (placed(simulate(jobs, cluster, get_policy(policy), calc_period=calc_period,
                                  tenant_shares=shares, budgets=budgets, show_all=show_all))
                  for show_all in (False, True))
    return {j: (cut.get(j), whole.get(j)) for j in sorted(cut.keys() | whole.keys(), key=int)
            if cut.get(j) != whole.get(j)}


# With budgets, 7 of these 16 labq-fairtree replays (seeds 1, 3, 4, 7, 8, 10, 12) started
# jobs otherwise than the whole queue before the cut counted budgets: a job held by its budget
# let one deeper in its class start or take the reservation.
BUDGET_SEEDS = tuple(range(16))
PLAIN_SEEDS = (0, 1, 2, 3)


@pytest.mark.parametrize("policy", sorted(p for p in POLICIES if p != "tiresias-las"))
@pytest.mark.parametrize("budgets", [False, True])
def test_the_cut_starts_every_job_as_the_whole_queue_does(policy: str, budgets: bool) -> None:
    seeds = BUDGET_SEEDS if budgets and POLICIES[policy].budgets else PLAIN_SEEDS
    for seed in seeds:
        diff = cut_differs(policy, random_case(seed, budgets))
        assert not diff, f"seed {seed}: {len(diff)} jobs differ: {diff}"


def test_first_fit_finds_the_first_job_ending_by_a_time() -> None:
    """`FirstFit` against a walk down the class, as jobs come, leave and are put back."""
    from collections import deque

    from scheduler.policy.snapshot import PendingJob
    from scheduler.sim.classes import Queued
    from scheduler.sim.firstfit import FirstFit

    rng = random.Random("first-fit")
    q: deque[Queued] = deque()
    fit = FirstFit()
    for i in range(600):
        if q and rng.random() < 0.4:
            gone = q[rng.randrange(len(q))]
            q.remove(gone)
            fit.remove(gone[1].id)
        else:
            job = SimJob(str(i), "t", "u", 1, float(i), 60.0, rng.choice((60, 120, 600, 3600)))
            item: Queued = ((0.0, job.submit, len(job.id), job.id), job,
                            PendingJob(job.id, "u", "t", 1, job.submit))
            if q and rng.random() < 0.05:  # put back before the last one
                q.insert(len(q) - 1, item)
                fit.rebuild(q)
            else:
                q.append(item)
                fit.append(item)
        for _ in range(3):
            if not q:
                break
            n, window = rng.randrange(len(q)), rng.choice((59, 60, 300, 1000, 5000))
            walked = [item for item in list(q)[n:] if item[1].time_limit <= window]
            assert fit.first(q[n][1].id, window) == (walked[0] if walked else None)
            after = [item for item in list(q)[n + 1:] if item[1].time_limit <= window]
            assert fit.after(q[n][1].id, window) == (after[0] if after else None)


def test_the_fair_now_cut_copies_every_field_of_a_snapshot() -> None:
    """`_with_pending` writes `dataclasses.replace` out for speed: a field added to `Snapshot`
    must be added there too."""
    from dataclasses import fields

    from scheduler.policy.snapshot import Snapshot
    from scheduler.sim.fairnowcut import _SNAPSHOT_FIELDS

    assert tuple(f.name for f in fields(Snapshot)) == _SNAPSHOT_FIELDS
