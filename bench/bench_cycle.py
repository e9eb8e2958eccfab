"""One scheduling cycle (the pure policy: order + place + reasons) over many queued jobs.

Usage: python bench/bench_cycle.py   (prints the median of several cycles per size)
"""

from __future__ import annotations

import random
import statistics
import time

from common import machine

from scheduler.policy import NodeView, PendingJob, Snapshot, schedule


def snapshot(pending: int, nodes: int, gpus: int, users: int, seed: int = 1) -> Snapshot:
    rng = random.Random(seed)
    views = []
    for n in range(nodes):
        busy = rng.randint(0, gpus)  # a busy cluster: most GPUs taken
        views.append(NodeView(f"node-{n}", "A100-80GB" if n % 2 else "RTX3090", gpus,
                              tuple(range(busy, gpus))))
    jobs = tuple(
        PendingJob(str(i), f"user{rng.randrange(users)}",
                   f"acct{rng.randrange(max(1, users // 10))}",
                   rng.choice((1, 1, 1, 2, 4, 8)), 1_700_000_000 + i,
                   rng.choice((None, None, "A100", "RTX3090")), "normal", 3600)
        for i in range(pending)
    )
    return Snapshot(tuple(views), jobs, 1_700_100_000.0)


def time_cycle(snap: Snapshot, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        schedule(snap)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    print(f"machine: {machine()}")
    for pending, nodes, gpus, users, repeat in [
        (1_000, 4, 8, 20, 20),
        (1_000, 100, 8, 100, 10),
        (10_000, 1_000, 8, 500, 5),
        (100_000, 1_000, 8, 500, 3),
    ]:
        median = time_cycle(snapshot(pending, nodes, gpus, users), repeat)
        print(f"cycle: {pending:>7,} pending, {nodes:>5,} nodes x {gpus} GPUs, {users} users: "
              f"median {median * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
