"""The history against a real Valkey: what a record keeps, the per-day user and account
indexes and the id -> day index retention writes, ended jobs read by range from the hot store
and the history alike, and the usage report over days."""

from __future__ import annotations

import json
import time
import uuid

from scheduler.model import GpuInfo, JobSpec, JobState, NodeReport
from scheduler.store import Store
from scheduler.store.historyusage import usage_rows

DAY = 86400.0
T0 = (time.time() // DAY) * DAY  # today's UTC midnight: history hashes expire in real time
KEEP = 30 * DAY
HISTORY = 400 * DAY


async def lead(store: Store) -> int:
    epoch = await store.lease("coord-1", 60_000)
    assert epoch > 0
    return epoch


async def node(store: Store, now: float) -> None:
    gpus = [GpuInfo(index=i, uuid=f"GPU-{i}", model="A100", memory_total_bytes=1,
                    memory_used_bytes=0, utilization=0.0) for i in range(4)]
    await store.heartbeat(NodeReport(name="n1", gpus=gpus), now)


async def ran(store: Store, epoch: int, start: float, end: float, user: str = "alice",
              account: str = "lab", gpus: int = 1, name: str = "train",
              weight: float = 3.0, charged: tuple[float, ...] = ()) -> str:
    """A job that ran on n1 from `start` to `end` and succeeded, charged, with what its node
    measured (CPU seconds, peak memory) on its record."""
    await node(store, start)
    spec = JobSpec(user=user, account=account, command=["python", "train.py"], gpus=gpus,
                   name=name)
    (job_id,) = await store.submit([spec], token=uuid.uuid4().hex, now=start - 5)
    job = await store.get_job(job_id)
    assert job is not None
    assert await store.start(epoch, job, "n1", list(range(gpus)), weight, start) == "OK"
    assert await store.mark_running(epoch, job_id, start) == "OK"
    for now in charged:  # the leader's cycle charges running jobs as they go
        await store.charge(epoch, [job_id], now)
    job = await store.get_job(job_id)
    assert job is not None
    assert await store.finish(epoch, job, JobState.SUCCEEDED, 0, "", end) == "OK"
    await store.r.hset(store.keys.job(job_id), mapping={
        "cpu_seconds": "42.5", "memory_peak_bytes": str(3 << 30)})
    return job_id


async def cancelled(store: Store, ended: float, user: str = "alice",
                    account: str = "lab") -> str:
    spec = JobSpec(user=user, account=account, command=["true"], gpus=1)
    (job_id,) = await store.submit([spec], token=uuid.uuid4().hex, now=ended - 5)
    assert await store.cancel(job_id, user, False, ended) == "CANCELLED"
    return job_id


async def test_a_record_keeps_what_history_eff_and_report_need(store: Store) -> None:
    epoch = await lead(store)
    job_id = await ran(store, epoch, T0 - 40 * DAY - 600, T0 - 40 * DAY, gpus=2, name="bert")
    assert await store.expire_done(epoch, T0, KEEP, 100_000, HISTORY) == 1
    record = await store.history_job(job_id)
    assert record is not None
    assert record["user"] == "alice" and record["account"] == "lab"
    assert record["name"] == "bert" and record["state"] == "SUCCEEDED"
    assert record["exit_code"] == "0" and record["node"] == "n1" and record["gpus"] == "2"
    assert record["nodes"] == "1" and record["qos"] == "normal" and record["workdir"] == "/"
    assert float(record["gpu_seconds"]) == 1200.0 and float(record["billed"]) == 3600.0
    assert record["cpu_seconds"] == "42.5" and record["memory_peak_bytes"] == str(3 << 30)
    assert float(record["submitted_at"]) == T0 - 40 * DAY - 605
    assert record["time_limit_s"] == "3600"
    assert "command" not in record and "env" not in record
    day = int((T0 - 40 * DAY) // DAY)
    assert await store.r.smembers(store.keys.history_user(day, "alice")) == {job_id}
    assert await store.r.smembers(store.keys.history_account(day, "lab")) == {job_id}
    expire_at = (day + 1) * DAY + HISTORY
    for key in (store.keys.history_user(day, "alice"), store.keys.history_account(day, "lab"),
                store.keys.history_where(job_id)):
        assert await store.r.expiretime(key) == expire_at
    assert await store.history_job("999999") is None


async def test_the_id_index_lives_as_long_as_its_latest_day(store: Store) -> None:
    epoch = await lead(store)
    late = await cancelled(store, T0 - 35 * DAY)
    early = await cancelled(store, T0 - 45 * DAY)  # a later id that ended earlier
    assert store.keys.history_where(late) == store.keys.history_where(early)
    assert await store.expire_done(epoch, T0, KEEP, 100_000, HISTORY) == 2
    assert await store.r.expiretime(store.keys.history_where(late)) == \
        (int((T0 - 35 * DAY) // DAY) + 1) * DAY + HISTORY
    assert (await store.history_job(early) or {})["state"] == "CANCELLED"


async def test_ended_jobs_come_from_the_hot_store_and_the_history_alike(store: Store) -> None:
    epoch = await lead(store)
    old = await ran(store, epoch, T0 - 40 * DAY - 100, T0 - 40 * DAY)
    old_bob = await cancelled(store, T0 - 39 * DAY, user="bob", account="other")
    await store.expire_done(epoch, T0, KEEP, 100_000, HISTORY)
    recent = await ran(store, epoch, T0 - 2 * DAY - 100, T0 - 2 * DAY)
    recent_bob = await cancelled(store, T0 - DAY, user="bob", account="other")
    everything, complete = await store.ended_jobs(T0 - 50 * DAY, T0)
    assert complete
    assert [r["id"] for r in everything] == [recent_bob, recent, old_bob, old]  # newest first
    hot = everything[1]
    assert hot["cpu_seconds"] == "42.5" and float(hot["billed"]) == 300.0
    assert set(hot) <= set(everything[3]) | {"cpus"}  # the same fields, hot or not
    alice, _ = await store.ended_jobs(T0 - 50 * DAY, T0, user="alice")
    assert [r["id"] for r in alice] == [recent, old]
    other, _ = await store.ended_jobs(T0 - 50 * DAY, T0, account="other")
    assert [r["id"] for r in other] == [recent_bob, old_bob]
    both, _ = await store.ended_jobs(T0 - 50 * DAY, T0, user="alice", account="other")
    assert both == []
    week, _ = await store.ended_jobs(T0 - 7 * DAY, T0)
    assert [r["id"] for r in week] == [recent_bob, recent]
    one_day, _ = await store.ended_jobs(T0 - 40 * DAY - 1, T0 - 40 * DAY)
    assert [r["id"] for r in one_day] == [old]
    cancelled_only, _ = await store.ended_jobs(T0 - 50 * DAY, T0,
                                               match=lambda r: r["state"] == "CANCELLED")
    assert [r["id"] for r in cancelled_only] == [recent_bob, old_bob]


async def test_a_query_reads_no_record_outside_its_days_or_its_user(store: Store) -> None:
    """Records that would break a reader (not JSON) lie on another day and, on the same day,
    under another user: a query that read them would fail."""
    epoch = await lead(store)
    mine = await cancelled(store, T0 - 40 * DAY)
    await store.expire_done(epoch, T0, KEEP, 100_000, HISTORY)
    day = int((T0 - 40 * DAY) // DAY)
    await store.r.hset(store.keys.history(day - 1), "1", "not json")
    await store.r.hset(store.keys.history(day), "2", "not json")
    await store.r.sadd(store.keys.history_user(day, "bob"), "2")
    found, _ = await store.ended_jobs(day * DAY, (day + 1) * DAY - 1, user="alice")
    assert [r["id"] for r in found] == [mine]


async def test_a_limit_keeps_the_latest_and_says_more_matched(store: Store) -> None:
    epoch = await lead(store)
    ids = [await cancelled(store, T0 - (5 - i) * DAY) for i in range(5)]
    await store.expire_done(epoch, T0, KEEP, 2, HISTORY)
    assert len(await store.r.zrange(store.keys.done, 0, -1)) == 2
    found, complete = await store.ended_jobs(T0 - 50 * DAY, T0, limit=3)
    assert [r["id"] for r in found] == ids[::-1][:3] and not complete
    found, complete = await store.ended_jobs(T0 - 50 * DAY, T0, limit=5)
    assert len(found) == 5 and complete


async def test_the_usage_report_sums_the_jobs_charges_by_day(store: Store) -> None:
    epoch = await lead(store)
    # one job across midnight: charged on two UTC days
    a = await ran(store, epoch, T0 - 3 * DAY - 1800, T0 - 3 * DAY + 600, gpus=2,
                  charged=(T0 - 3 * DAY - 600,))
    b = await ran(store, epoch, T0 - 2 * DAY, T0 - 2 * DAY + 900, user="bob", weight=1.0)
    jobs = [await store.get_job(a), await store.get_job(b)]
    rows = await store.usage_report(int(T0 // DAY) - 10, int(T0 // DAY))
    assert [(r.account, r.user) for r in rows] == [("lab", "alice"), ("lab", "bob")]
    for row, job in zip(rows, jobs, strict=True):
        assert job is not None
        assert row.gpu_seconds == job.gpu_seconds and row.billed == job.billed
    first_day_only = await store.usage_report(int(T0 // DAY) - 4, int(T0 // DAY) - 4)
    assert [(r.user, r.gpu_seconds) for r in first_day_only] == [("alice", 2400.0)]


def test_usage_rows_read_only_the_days_asked_and_ignore_other_fields() -> None:
    raw = {"day:100:lab|alice": "30", "dgpu:100:lab|alice": "10", "day:101:lab|alice": "3",
           "dgpu:99:lab|bob": "7", "user:alice:billed": "33", "decayed:lab|alice": "1",
           "day:x:lab|eve": "5", "dgpu:100:lab|eve": "nan?"}
    rows = usage_rows(raw, 100, 100)
    assert [(r.account, r.user, r.gpu_seconds, r.billed) for r in rows] == [
        ("lab", "alice", 10.0, 30.0)]
    assert json.dumps([r.__dict__ for r in usage_rows(raw, 99, 101)])  # plain values


async def test_a_short_report_reads_its_days_alone_and_agrees_with_a_whole_read(
        store: Store) -> None:
    fields = {}
    for day in range(1000, 1060):
        for assoc in ("lab|alice", "lab|bob", "other|alice"):
            fields[f"day:{day}:{assoc}"] = str(day * 3)
            fields[f"dgpu:{day}:{assoc}"] = str(day)
    for assoc in ("lab|alice", "lab|bob", "other|alice"):
        fields[f"decayed:{assoc}"] = "1"
    await store.r.hset(store.keys.usage, mapping=fields)
    whole = usage_rows(fields, 1010, 1011)
    assert [(r.account, r.user, r.gpu_seconds) for r in whole] == [
        ("lab", "alice", 2021.0), ("lab", "bob", 2021.0), ("other", "alice", 2021.0)]
    assert await store.usage_report(1010, 1011) == whole  # its own days' fields only
    assert await store.usage_report(900, 2000) == usage_rows(fields, 900, 2000)  # all
    assert await store.usage_report(2000, 2001) == []


async def test_an_array_task_is_found_in_the_history_by_its_id(store: Store) -> None:
    epoch = await lead(store)
    ended = T0 - 40 * DAY
    await store.r.hset(store.keys.job("17_5"), mapping={
        "id": "17_5", "user": "alice", "account": "lab", "state": "SUCCEEDED", "gpus": "1",
        "array_job": "17", "array_task": "5", "ended_at": repr(ended), "command": "[]"})
    await store.r.zadd(store.keys.done, {"17_5": ended})
    assert await store.expire_done(epoch, T0, KEEP, 100_000, HISTORY) == 1
    record = await store.history_job("17_5")
    assert record is not None and record["array_job"] == "17" and record["array_task"] == "5"
    assert store.keys.history_where("17_5") == store.keys.history_where("17")
    assert await store.history_job("17_6") is None
