"""One full scheduling cycle of the pure policy: fair-share priority + placement + backfill
(reservation, estimates) + caps + budgets + preemption + reasons, over large queues.

The snapshot is a busy cluster: about half of the GPUs are held by running jobs with end
times, USERS users in ACCOUNTS accounts (under one lab) with decayed usage, budgets on a fifth
of the accounts, and a mix of job sizes, GPU types and QOS.

Usage: python bench/bench_cycle.py   (prints the median of several cycles per size)
"""

from __future__ import annotations

import random
import statistics
import time

from common import machine

from scheduler.policy import NodeView, PendingJob, RunningJob, Snapshot, schedule
from scheduler.policy.budget import Budget, BudgetState
from scheduler.policy.fairengine import FairShare
from scheduler.policy.fairnow import FAIR_NOW
from scheduler.policy.fairshare import FAIR_TREE, Account, Assoc
from scheduler.policy.snapshot import ShareInputs

NOW = 1_700_100_000.0


def snapshot(pending: int, nodes: int, gpus: int, users: int, accounts: int,
             seed: int = 1, algorithm: str = FAIR_TREE) -> Snapshot:
    rng = random.Random(seed)
    views, running = [], []
    for n in range(nodes):
        name = f"node-{n:04d}"
        busy = rng.randint(0, gpus)
        for i in range(busy):
            user = rng.randrange(users)
            running.append(RunningJob(f"r{n}-{i}", f"user{user}", f"acct{user % accounts}", 1,
                                      name, (i,), NOW + rng.uniform(60, 86400),
                                      rng.choice(("normal",) * 9 + ("scavenger",)), 3.0))
        views.append(NodeView(name, "A100-80GB" if n % 2 else "RTX3090", gpus,
                              tuple(range(busy, gpus)), billing_weight=3.0 if n % 2 else 1.0))
    jobs = tuple(
        PendingJob(str(i), f"user{(u := rng.randrange(users))}", f"acct{u % accounts}",
                   rng.choice((1, 1, 1, 2, 4, 8)), NOW - rng.uniform(0, 86400 * 3),
                   rng.choice((None, None, "A100", "RTX3090")),
                   rng.choice(("normal",) * 9 + ("scavenger",)), rng.choice((600, 3600, 86400)))
        for i in range(pending)
    )
    shares = ShareInputs(
        accounts=(Account("lab", "root"),) + tuple(
            Account(f"acct{a}", "lab", rng.choice((1.0, 2.0, 5.0))) for a in range(accounts)),
        assocs=tuple(Assoc(f"user{u}", f"acct{u % accounts}") for u in range(users)),
        usage={(f"acct{u % accounts}", f"user{u}"): rng.expovariate(1 / 3e5)
               for u in range(users)},
        algorithm=algorithm,
    )
    budgets = BudgetState(
        tuple(Budget("account", f"acct{a}", 5e6, NOW - 86400, NOW + 86400 * 20)
              for a in range(0, accounts, 5)),
        {("account", f"acct{a}"): rng.uniform(0, 5e6) for a in range(0, accounts, 5)},
    )
    return Snapshot(tuple(views), jobs, NOW, tuple(running), shares=shares, budgets=budgets)


def time_cycle(snap: Snapshot, repeat: int) -> float:
    """The median cycle, with one fair-share engine kept between cycles (as the coordinator
    keeps its own)."""
    engine = FairShare()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        schedule(snap, fairshare=engine)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    print(f"machine: {machine()}")
    for pending, nodes, gpus, users, accounts, repeat in [
        (1_000, 4, 8, 20, 4, 20),
        (10_000, 1_000, 8, 500, 50, 7),
        (100_000, 1_000, 8, 500, 50, 3),
    ]:
        for algorithm in (FAIR_TREE, FAIR_NOW):
            snap = snapshot(pending, nodes, gpus, users, accounts, algorithm=algorithm)
            median = time_cycle(snap, repeat)
            print(f"full cycle ({algorithm:<9}): {pending:>7,} pending, "
                  f"{len(snap.running):>5,} running, {nodes:>5,} nodes x {gpus} GPUs, "
                  f"{users} users in {accounts} accounts: median {median * 1000:8.1f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
