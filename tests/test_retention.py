"""Retention against a real Valkey: finished jobs leave the hot store after a time or beyond a
count, oldest first, in bounded batches, fenced; each leaves a compact history record, and
usage (fair share, budgets) is untouched."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from scheduler.config import Settings
from scheduler.coordinator.core import Coordinator
from scheduler.model import GpuInfo, JobSpec, NodeReport
from scheduler.store import Store

DAY = 86400.0
T0 = (time.time() // DAY) * DAY  # today's UTC midnight: history hashes expire in real time
KEEP = 30 * DAY
HISTORY = 400 * DAY


async def lead(store: Store) -> int:
    epoch = await store.lease("coord-1", 60_000)
    assert epoch > 0
    return epoch


def spec(user: str = "alice", gpus: int = 1) -> JobSpec:
    return JobSpec(user=user, account="lab", command=["python", "train.py"], gpus=gpus)


async def cancelled(store: Store, ended: float, user: str = "alice") -> str:
    """A job submitted and cancelled while pending: finished at `ended`."""
    (job_id,) = await store.submit([spec(user)], token=uuid.uuid4().hex, now=ended - 5)
    assert await store.cancel(job_id, user, False, ended) == "CANCELLED"
    return job_id


async def ran(store: Store, epoch: int, start: float, end: float) -> str:
    """A 2-GPU job that ran on n1 from `start` to `end` and succeeded (charged)."""
    report = NodeReport(name="n1", gpus=[GpuInfo(index=i, uuid=f"GPU-{i}", model="A100",
                                                 memory_total_bytes=1, memory_used_bytes=0,
                                                 utilization=0.0) for i in range(2)])
    await store.heartbeat(report, start)
    (job_id,) = await store.submit([spec(gpus=2)], token=uuid.uuid4().hex, now=start - 5)
    job = await store.get_job(job_id)
    assert job is not None
    assert await store.start(epoch, job, "n1", [0, 1], 3.0, start) == "OK"
    assert await store.mark_running(epoch, job_id, start) == "OK"
    job = await store.get_job(job_id)
    assert job is not None
    assert await store.finish(epoch, job, job.state.SUCCEEDED, 0, "", end) == "OK"
    return job_id


async def done_ids(store: Store) -> list[str]:
    return list(await store.r.zrange(store.keys.done, 0, -1))


async def test_jobs_finished_longer_ago_than_retention_leave_a_compact_record(
        store: Store) -> None:
    epoch = await lead(store)
    old = await ran(store, epoch, T0 - 40 * DAY - 100, T0 - 40 * DAY)
    old_cancelled = await cancelled(store, T0 - 31 * DAY, user="bob")
    recent = await cancelled(store, T0 - 29 * DAY)
    usage_before = await store.usage_hash()
    await store.r.set(store.keys.log(old), "output an older version kept")

    moved = await store.expire_done(epoch, T0, KEEP, 100_000, HISTORY)

    assert moved == 2
    assert await done_ids(store) == [recent]
    assert await store.get_job(old) is None and await store.get_job(old_cancelled) is None
    assert (await store.get_job(recent)) is not None
    assert await store.r.exists(store.keys.log(old)) == 0
    day = int((T0 - 40 * DAY) // DAY)
    records = await store.history(day, int(T0 // DAY))
    assert [r["id"] for r in records] == [old, old_cancelled]
    first = records[0]
    assert first["user"] == "alice" and first["account"] == "lab"
    assert first["state"] == "SUCCEEDED" and first["node"] == "n1" and first["gpus"] == "2"
    assert float(first["ended_at"]) == T0 - 40 * DAY
    assert float(first["started_at"]) == T0 - 40 * DAY - 100
    assert float(first["gpu_seconds"]) == 200.0 and float(first["billed"]) == 600.0
    assert "command" not in first and "env" not in first and "script" not in first
    assert first["workdir"] == "/" and first["time_limit_s"] == "3600"
    assert records[1]["state"] == "CANCELLED" and records[1]["user"] == "bob"
    expire_at = await store.r.expiretime(store.keys.history(day))
    assert expire_at == (day + 1) * DAY + HISTORY
    assert await store.usage_hash() == usage_before  # fair share and budgets keep every second


async def test_only_the_newest_jobs_are_kept_beyond_the_count(store: Store) -> None:
    epoch = await lead(store)
    ids = [await cancelled(store, T0 - 100 + i) for i in range(10)]
    assert await store.expire_done(epoch, T0, KEEP, 3, HISTORY) == 7
    assert await done_ids(store) == ids[-3:]
    day = int(T0 // DAY) - 1
    assert [r["id"] for r in await store.history(day, day + 1)] == ids[:7]
    assert await store.expire_done(epoch, T0, KEEP, 3, HISTORY) == 0  # nothing more to do


async def test_a_pass_moves_one_bounded_batch_oldest_first(store: Store) -> None:
    epoch = await lead(store)
    ids = [await cancelled(store, T0 - 40 * DAY + i) for i in range(10)]
    assert await store.expire_done(epoch, T0, KEEP, 100_000, HISTORY, batch=4) == 4
    assert await done_ids(store) == ids[4:]
    assert await store.expire_done(epoch, T0, KEEP, 100_000, HISTORY, batch=4) == 4
    assert await store.expire_done(epoch, T0, KEEP, 100_000, HISTORY, batch=4) == 2
    assert await done_ids(store) == []


async def test_a_stale_leader_moves_nothing(store: Store) -> None:
    epoch = await lead(store)
    job_id = await cancelled(store, T0 - 40 * DAY)
    assert await store.expire_done(epoch - 1, T0, KEEP, 100_000, HISTORY) == 0
    assert await done_ids(store) == [job_id]
    assert await store.get_job(job_id) is not None


async def test_waiting_and_running_jobs_are_never_touched(store: Store) -> None:
    epoch = await lead(store)
    (waiting,) = await store.submit([spec()], token=uuid.uuid4().hex, now=T0 - 90 * DAY)
    stray = await cancelled(store, T0 - 40 * DAY)
    # A job that is in the done zset but not terminal (never written so by labq): it only
    # leaves the zset; its hash stays for whoever looks at it.
    await store.r.hset(store.keys.job(stray), "state", "RUNNING")
    assert await store.expire_done(epoch, T0, KEEP, 0, HISTORY) == 1
    assert await done_ids(store) == []
    assert await store.get_job(waiting) is not None and await store.get_job(stray) is not None
    assert await store.history(int((T0 - 41 * DAY) // DAY), int(T0 // DAY)) == []


async def test_history_records_are_small(store: Store) -> None:
    epoch = await lead(store)
    await ran(store, epoch, T0 - 40 * DAY - 3600, T0 - 40 * DAY)
    await store.expire_done(epoch, T0, KEEP, 100_000, HISTORY)
    day = int((T0 - 40 * DAY) // DAY)
    (text,) = (await store.r.hgetall(store.keys.history(day))).values()
    assert len(text) < 600, text
    assert json.loads(text)["qos"] == "normal"


async def test_the_leaders_cycle_applies_retention_from_the_settings(store: Store,
                                                                      tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, retention_s=KEEP, retention_jobs=2)
    coordinator = Coordinator(store, settings)
    coordinator.epoch = await lead(store)
    ids = [await cancelled(store, T0 - 40 * DAY + i) for i in range(3)]
    ids += [await cancelled(store, T0 - 100 + i) for i in range(4)]
    await coordinator.cycle(T0)
    assert await done_ids(store) == ids[-2:]  # 3 too old, then 2 beyond the newest two
    more = await cancelled(store, T0 + 1)
    await coordinator.cycle(T0 + 2)  # within a minute of the last pass: left for the next
    assert await done_ids(store) == [*ids[-2:], more]
