"""Builders shared by the tests: GPU reports, job specs, a leading coordinator's epoch, jobs
submitted and started on a real store. Import from here, never from another test module."""

from __future__ import annotations

import os
import uuid
from typing import Any

from scheduler.model import GpuInfo, GpuProcess, Job, JobSpec, JobState, NodeReport
from scheduler.store import Store, parse_totals

A100 = "NVIDIA A100-SXM4-80GB"
T0 = 1000.0  # a controlled "now"; every test sets its own clock


def gpu(index: int, model: str = A100, procs: list[GpuProcess] | None = None) -> GpuInfo:
    return GpuInfo(
        index=index, uuid=f"GPU-{index:04d}", model=model, memory_total_bytes=80 << 30,
        memory_used_bytes=1 << 30, utilization=0.25, power_watts=100.0, temperature_c=40.0,
        processes=procs or [],
    )


def report(name: str = "n1", gpus: int = 4, model: str = A100, **kw: Any) -> NodeReport:
    return NodeReport(name=name, gpus=[gpu(i, model) for i in range(gpus)], **kw)


def spec(user: str = "alice", gpus: int = 1, account: str = "lab", **kw: Any) -> JobSpec:
    return JobSpec(user=user, account=account, command=["python", "train.py"], gpus=gpus, **kw)


async def lead(store: Store, holder: str = "coord-1") -> int:
    epoch = await store.lease(holder, 60_000)
    assert epoch > 0
    return epoch


async def submit_one(store: Store, now: float = T0, **kw: Any) -> str:
    (job_id,) = await store.submit([spec(**kw)], token=uuid.uuid4().hex, now=now)
    return job_id


async def job_of(store: Store, job_id: str) -> Job:
    job = await store.get_job(job_id)
    assert job is not None
    return job


async def alloc(store: Store, node: str = "n1") -> dict[str, str]:
    return dict(await store.r.hgetall(store.keys.node_alloc(node)))


async def started(
    store: Store, epoch: int, indices: list[int], node: str = "n1", weight: float = 1.0,
    now: float = T0, run: bool = True, **kw: Any,
) -> str:
    """A job submitted, started on `indices` and (if `run`) marked RUNNING at `now`."""
    job_id = await submit_one(store, now=now - 10, gpus=len(indices), **kw)
    assert await start_job(store, epoch, job_id, node, indices, weight, now) == "OK"
    if run:
        assert await store.mark_running(epoch, job_id, now) == "OK"
    return job_id


async def waiting_ids(store: Store) -> list[str]:
    return list(await store.r.zrange(store.keys.waiting, 0, -1))


async def active_ids(store: Store) -> set[str]:
    return set(await store.r.smembers(store.keys.active))


def processes(cmdline: str) -> list[int]:
    """Live processes whose whole command line is `cmdline` (to find a job's leftovers)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    if handle.read().replace(b"\0", b" ").strip() == cmdline.encode():
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


async def usage_totals(store: Store) -> dict[str, dict[str, dict[str, float]]]:
    """Usage totals per user and per account, as `labq quota` reads them."""
    return parse_totals(await store.usage_hash())


async def start_job(store: Store, epoch: int, job_id: str, node: str, indices: list[int],
                    weight: float, now: float) -> str:
    """`Store.start` for a job known by id (a missing one is refused as not pending)."""
    job = await store.get_job(job_id) or Job(
        id=job_id, user="", account="", state=JobState.FAILED, gpus=0, command=[], submitted_at=0.0,
        time_limit_s=0)
    return await store.start(epoch, job, node, indices, weight, now)
