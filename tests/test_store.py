"""The job state machine against a real Valkey: every Lua script checks before it writes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
import redis.exceptions

from scheduler.model import GpuProcess, JobState, NodeReport, NodeState
from scheduler.noderun import RunStatus
from scheduler.store import Outcome, Store
from tests.builders import (
    A100,
    T0,
    active_ids,
    alloc,
    gpu,
    job_of,
    lead,
    report,
    spec,
    start_job,
    started,
    submit_one,
    usage_totals,
    waiting_ids,
)


async def done_ids(store: Store) -> list[str]:
    return list(await store.r.zrange(store.keys.done, 0, -1))


# ------------------------------------------------------------------------------ submit


async def test_submit_stores_pending_jobs(store: Store) -> None:
    ids = await store.submit(
        [spec(gpus=2, gpu_type="a100", env={"SEED": "1"}, name="a"), spec(user="bob")],
        token="t1", now=T0,
    )
    assert len(ids) == 2 and ids[0] != ids[1]
    first, second = await store.get_jobs(ids)
    assert first.state is JobState.PENDING and second.state is JobState.PENDING
    assert (first.user, first.gpus, first.gpu_type, first.env, first.name) == (
        "alice", 2, "a100", {"SEED": "1"}, "a")
    assert first.command == ["python", "train.py"]
    assert first.submitted_at == T0 and first.reason == "Submitted"
    assert first.submitter == "alice" and second.user == "bob"
    assert first.node is None and first.gpu_indices == [] and first.started_at is None
    assert await store.r.zrange(store.keys.waiting, 0, -1, withscores=True) == [
        (ids[0], T0), (ids[1], T0)]
    assert await store.job_counts() == {"waiting": 2, "active": 0, "done": 0}


async def test_submit_same_token_returns_same_ids_without_duplicating(
    store: Store, valkey_url: str
) -> None:
    specs = [spec(), spec(), spec()]
    ids = await store.submit(specs, token="retry-me", now=T0)
    again = await store.submit(specs, token="retry-me", now=T0 + 5)
    # A retry that lands on another coordinator (another Store, same keys) is also idempotent.
    other = Store.from_url(valkey_url, prefix=store.keys.prefix)
    try:
        third = await other.submit(specs, token="retry-me", now=T0 + 9)
    finally:
        await other.close()
    assert again == ids and third == ids
    assert await store.r.zcard(store.keys.waiting) == 3
    assert [j.submitted_at for j in await store.waiting_jobs()] == [T0, T0, T0]


async def test_submit_different_tokens_make_different_jobs(store: Store) -> None:
    first = await store.submit([spec()], token="a", now=T0)
    second = await store.submit([spec()], token="b", now=T0)
    assert first != second
    assert await store.r.zcard(store.keys.waiting) == 2


async def test_submit_nothing_writes_nothing(store: Store) -> None:
    assert await store.submit([], token="empty", now=T0) == []
    assert await store.job_counts() == {"waiting": 0, "active": 0, "done": 0}


async def test_ids_are_unique_across_stores_and_id_blocks(store: Store, valkey_url: str) -> None:
    other = Store.from_url(valkey_url, prefix=store.keys.prefix)
    try:
        big = await store.submit([spec()] * 300, token="big", now=T0)
        mixed = [await s.submit([spec()], token=f"m{i}", now=T0)
                 for i, s in enumerate([other, store, other, store])]
    finally:
        await other.close()
    all_ids = big + [i for ids in mixed for i in ids]
    assert len(set(all_ids)) == len(all_ids) == 304
    assert await store.r.zcard(store.keys.waiting) == 304


async def test_array_submit_is_all_or_none(store: Store) -> None:
    # A fresh store hands out ids 1, 2, 3, ...: plant a job hash where id 2 will go.
    await store.r.hset(store.keys.job("2"), mapping={"id": "2", "user": "x", "state": "PENDING"})
    with pytest.raises(redis.exceptions.ResponseError, match="DUPLICATE"):
        await store.submit([spec(), spec(), spec()], token="arr", now=T0)
    assert await store.r.exists(store.keys.job("1"), store.keys.job("3")) == 0
    assert await store.r.zcard(store.keys.waiting) == 0
    assert await store.r.exists(store.keys.submit_token("arr")) == 0
    # The retry with the same token is not poisoned: it gets fresh ids and stores them all.
    ids = await store.submit([spec(), spec(), spec()], token="arr", now=T0)
    assert len(ids) == 3 and "2" not in ids
    assert sorted(await waiting_ids(store)) == sorted(ids)


# ------------------------------------------------------------------------------ start


@dataclass(frozen=True)
class StartCase:
    epoch_delta: int
    node: str
    indices: list[int]
    expected: str


START_CASES: dict[str, StartCase] = {
    "ok": StartCase(0, "n1", [0, 1], "OK"),
    "ok on non-adjacent free indices": StartCase(0, "n1", [0, 2], "OK"),
    "stale epoch": StartCase(-1, "n1", [0, 1], "STALE_EPOCH"),
    "future epoch": StartCase(1, "n1", [0, 1], "STALE_EPOCH"),
    "unknown node": StartCase(0, "ghost", [0, 1], "NODE_NOT_UP"),
    "too few GPUs": StartCase(0, "n1", [0], "WRONG_COUNT"),
    "too many GPUs": StartCase(0, "n1", [0, 1, 2], "WRONG_COUNT"),
    "no GPUs": StartCase(0, "n1", [], "WRONG_COUNT"),
    "index past the end": StartCase(0, "n1", [2, 4], "GPU_OUT_OF_RANGE"),
    "negative index": StartCase(0, "n1", [-1, 0], "GPU_OUT_OF_RANGE"),
    "index held by another job": StartCase(0, "n1", [2, 3], "GPU_BUSY"),
}


@pytest.mark.parametrize("case", list(START_CASES.values()), ids=list(START_CASES))
async def test_start(store: Store, case: StartCase) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    blocker = await started(store, epoch, [3], run=False)  # holds GPU 3
    job_id = await submit_one(store, gpus=2)
    before = await alloc(store)

    result = await start_job(store, epoch + case.epoch_delta, job_id, case.node, case.indices, 3.0,
                               T0 + 1)

    assert result == case.expected
    job = await job_of(store, job_id)
    if case.expected == "OK":
        assert job.state is JobState.STARTING
        assert job.node == "n1" and job.gpu_indices == case.indices
        assert await alloc(store) == {**before, **{str(i): job_id for i in case.indices}}
        assert job_id in await active_ids(store) and job_id not in await waiting_ids(store)
        assert await store.r.hget(store.keys.job(job_id), "billing_weight") == "3.0"
        assert job.started_at is None  # it starts running only when Ray says so
    else:
        assert job.state is JobState.PENDING and job.node is None and job.gpu_indices == []
        assert await alloc(store) == before == {"3": blocker}
        assert job_id in await waiting_ids(store) and job_id not in await active_ids(store)


@pytest.mark.parametrize("drained", [False, True])
async def test_start_refused_on_node_that_is_down_or_drained(store: Store, drained: bool) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    if not drained:
        assert await store.node_down(epoch, "n1", cutoff=T0 + 1) == "DOWN"
    else:  # up, but an admin drained it after the cycle read it
        assert (await store.drain_node("n1", "root", "disk", T0)).outcome == Outcome.OK
    job_id = await submit_one(store)
    assert await start_job(store, epoch, job_id, "n1", [0], 1.0, T0) == "NODE_NOT_UP"
    assert (await job_of(store, job_id)).state is JobState.PENDING
    assert await alloc(store) == {}


async def test_start_requires_pending(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    job_id = await started(store, epoch, [0])
    # Already running: a second start must not take more GPUs.
    assert await start_job(store, epoch, job_id, "n1", [1], 1.0, T0) == "NOT_PENDING"
    cancelled = await submit_one(store)
    assert await store.cancel(cancelled, "alice", False, T0) == "CANCELLED"
    assert await start_job(store, epoch, cancelled, "n1", [2], 1.0, T0) == "NOT_PENDING"
    assert await start_job(store, epoch, "no-such-job", "n1", [3], 1.0, T0) == "NOT_PENDING"
    assert await alloc(store) == {"0": job_id}


async def test_concurrent_starts_never_share_an_index(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    ids = await store.submit([spec() for _ in range(12)], token="many", now=T0)
    # Every job races for index (i % 4): exactly one winner per index.
    results = await asyncio.gather(
        *(start_job(store, epoch, job_id, "n1", [i % 4], 1.0, T0) for i, job_id in enumerate(ids))
    )
    assert results.count("OK") == 4 and results.count("GPU_BUSY") == 8
    holders = await alloc(store)
    assert sorted(holders) == ["0", "1", "2", "3"]
    assert len(set(holders.values())) == 4
    for index, job_id in holders.items():
        job = await job_of(store, job_id)
        assert job.state is JobState.STARTING and job.gpu_indices == [int(index)]
    assert await store.job_counts() == {"waiting": 8, "active": 4, "done": 0}


async def test_start_refuses_repeated_indices(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    job_id = await submit_one(store, gpus=2)
    assert await start_job(store, epoch, job_id, "n1", [0, 0], 1.0, T0) != "OK"


# ------------------------------------------------------------------------------ mark_running


async def test_mark_running_only_from_starting(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    pending = await submit_one(store)
    assert await store.mark_running(epoch, pending, T0) == "NOT_STARTING"
    assert (await job_of(store, pending)).state is JobState.PENDING

    job_id = await started(store, epoch, [0], run=False)
    assert await store.mark_running(epoch + 1, job_id, T0 + 5) == "STALE_EPOCH"
    assert (await job_of(store, job_id)).state is JobState.STARTING

    assert await store.mark_running(epoch, job_id, T0 + 5) == "OK"
    job = await job_of(store, job_id)
    assert job.state is JobState.RUNNING
    assert job.started_at == T0 + 5 and job.charged_until == T0 + 5

    assert await store.mark_running(epoch, job_id, T0 + 9) == "NOT_STARTING"
    assert (await job_of(store, job_id)).started_at == T0 + 5


# ------------------------------------------------------------------------------ finish


@pytest.mark.parametrize(
    ("state", "exit_code", "reason"),
    [
        (JobState.SUCCEEDED, 0, "Completed"),
        (JobState.FAILED, 3, "NonZeroExit"),
        (JobState.TIMEOUT, None, "TimeLimit"),
        (JobState.CANCELLED, None, "Cancelled"),
    ],
)
async def test_finish_records_the_end_and_frees_gpus(
    store: Store, state: JobState, exit_code: int | None, reason: str
) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    other = await started(store, epoch, [3])
    job_id = await started(store, epoch, [0, 1])
    job = await job_of(store, job_id)

    assert await store.finish(epoch, job, state, exit_code, reason, T0 + 60) == "OK"

    done = await job_of(store, job_id)
    assert done.state is state and done.exit_code == exit_code and done.reason == reason
    assert done.ended_at == T0 + 60 and done.started_at == T0
    assert await alloc(store) == {"3": other}
    assert await active_ids(store) == {other}
    assert await store.r.zscore(store.keys.done, job_id) == T0 + 60
    assert [j.id for j in await store.done_jobs()] == [job_id]


async def test_second_finish_is_already_done_and_leaves_reallocated_gpu_alone(
    store: Store,
) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    first = await started(store, epoch, [0, 1])
    stale_view = await job_of(store, first)  # what a slow reconciler still holds
    assert await store.finish(epoch, stale_view, JobState.SUCCEEDED, 0, "Completed", T0 + 10) \
        == "OK"
    second = await started(store, epoch, [0], now=T0 + 20)
    usage_before = await usage_totals(store)

    assert await store.finish(epoch, stale_view, JobState.FAILED, 1, "Again", T0 + 30) \
        == "ALREADY_DONE"

    assert await alloc(store) == {"0": second}
    again = await job_of(store, first)
    assert again.state is JobState.SUCCEEDED and again.exit_code == 0 and again.ended_at == T0 + 10
    assert await usage_totals(store) == usage_before
    assert await store.r.zscore(store.keys.done, first) == T0 + 10


async def test_finish_with_stale_job_view_still_frees_the_gpus_it_holds(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    await store.heartbeat(report("n2", gpus=2), now=T0)
    job_id = await started(store, epoch, [1], node="n1")
    stale_view = await job_of(store, job_id)  # node n1
    assert await store.requeue(epoch, stale_view, "NodeLost", T0 + 1) == "OK"
    assert await start_job(store, epoch, job_id, "n2", [0], 1.0, T0 + 2) == "OK"

    result = await store.finish(epoch, stale_view, JobState.SUCCEEDED, 0, "Completed", T0 + 9)

    job = await job_of(store, job_id)
    # Either the finish is refused (job still holds its GPU) or the GPU it held is freed.
    assert (result != "OK" and job.state is JobState.STARTING) or await alloc(store, "n2") == {}


async def test_finish_refused_for_waiting_job_and_stale_epoch(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    pending = await job_of(store, await submit_one(store))
    assert await store.finish(epoch, pending, JobState.FAILED, 1, "x", T0) == "NOT_ACTIVE"
    assert (await job_of(store, pending.id)).state is JobState.PENDING

    job_id = await started(store, epoch, [0])
    job = await job_of(store, job_id)
    assert await store.finish(epoch - 1, job, JobState.FAILED, 1, "x", T0 + 5) == "STALE_EPOCH"
    assert (await job_of(store, job_id)).state is JobState.RUNNING
    assert await alloc(store) == {"0": job_id}
    assert await usage_totals(store) == {"user": {}, "account": {}}


async def test_finish_while_starting_charges_nothing(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await started(store, epoch, [0, 1], weight=4.0, run=False)
    job = await job_of(store, job_id)
    assert await store.finish(epoch, job, JobState.FAILED, None, "LaunchFailed", T0 + 50) == "OK"
    done = await job_of(store, job_id)
    assert done.state is JobState.FAILED and done.started_at is None
    assert done.billed == 0.0 and done.gpu_seconds == 0.0
    assert await usage_totals(store) == {"user": {}, "account": {}}
    assert await alloc(store) == {}


@pytest.mark.parametrize(
    ("gpus", "weight", "seconds"),
    [(1, 1.0, 100.0), (2, 3.0, 100.0), (4, 4.0, 0.5), (8, 0.5, 3600.0)],
)
async def test_finish_charges_gpu_seconds_times_weight(
    store: Store, gpus: int, weight: float, seconds: float
) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=8), now=T0)
    job_id = await started(store, epoch, list(range(gpus)), weight=weight, user="alice",
                           account="vision")
    job = await job_of(store, job_id)
    assert await store.finish(epoch, job, JobState.SUCCEEDED, 0, "Completed", T0 + seconds) \
        == "OK"

    gpu_s, billed = gpus * seconds, gpus * seconds * weight
    usage = await usage_totals(store)
    assert usage["user"] == {"alice": {"gpu_s": pytest.approx(gpu_s),
                                       "billed": pytest.approx(billed)}}
    assert usage["account"] == {"vision": {"gpu_s": pytest.approx(gpu_s),
                                           "billed": pytest.approx(billed)}}
    done = await job_of(store, job_id)
    assert done.gpu_seconds == pytest.approx(gpu_s) and done.billed == pytest.approx(billed)


async def test_usage_is_kept_per_user_and_per_account(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    jobs = [
        await started(store, epoch, [0], weight=2.0, user="alice", account="nlp"),
        await started(store, epoch, [1, 2], weight=2.0, user="bob", account="nlp"),
        await started(store, epoch, [3], weight=2.0, user="alice", account="vision"),
    ]
    for job_id in jobs:
        job = await job_of(store, job_id)
        assert await store.finish(epoch, job, JobState.SUCCEEDED, 0, "Completed", T0 + 10) \
            == "OK"
    usage = await usage_totals(store)
    assert usage["user"] == {
        "alice": {"gpu_s": pytest.approx(20.0), "billed": pytest.approx(40.0)},
        "bob": {"gpu_s": pytest.approx(20.0), "billed": pytest.approx(40.0)},
    }
    assert usage["account"] == {
        "nlp": {"gpu_s": pytest.approx(30.0), "billed": pytest.approx(60.0)},
        "vision": {"gpu_s": pytest.approx(10.0), "billed": pytest.approx(20.0)},
    }


# ------------------------------------------------------------------------------ charge


async def test_charge_accrues_while_running_and_finish_charges_only_the_rest(
    store: Store,
) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    job_id = await started(store, epoch, [0, 1], weight=3.0)  # running since T0

    assert await store.charge(epoch, [job_id], T0 + 30) == pytest.approx(2 * 30 * 3.0)
    assert (await usage_totals(store))["user"]["alice"]["gpu_s"] == pytest.approx(60.0)
    assert await store.charge(epoch, [job_id], T0 + 30) == 0.0  # same instant: nothing new
    assert await store.charge(epoch, [job_id], T0 + 20) == 0.0  # a clock behind: nothing
    assert await store.charge(epoch, [job_id], T0 + 40) == pytest.approx(2 * 10 * 3.0)

    job = await job_of(store, job_id)
    assert job.charged_until == T0 + 40
    assert await store.finish(epoch, job, JobState.SUCCEEDED, 0, "Completed", T0 + 100) == "OK"

    usage = await usage_totals(store)
    assert usage["user"]["alice"] == {"gpu_s": pytest.approx(200.0), "billed": pytest.approx(600.0)}
    assert usage["account"]["lab"] == {"gpu_s": pytest.approx(200.0),
                                       "billed": pytest.approx(600.0)}
    done = await job_of(store, job_id)
    assert done.gpu_seconds == pytest.approx(200.0) and done.billed == pytest.approx(600.0)


async def test_charge_skips_jobs_not_running_and_refuses_stale_epoch(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    running = await started(store, epoch, [0], weight=2.0)
    starting = await started(store, epoch, [1], weight=2.0, run=False)
    pending = await submit_one(store)

    assert await store.charge(epoch + 1, [running], T0 + 50) == 0.0
    assert await usage_totals(store) == {"user": {}, "account": {}}
    assert (await job_of(store, running)).charged_until == T0

    total = await store.charge(epoch, [running, starting, pending, "missing"], T0 + 50)
    assert total == pytest.approx(1 * 50 * 2.0)
    assert (await job_of(store, starting)).billed == 0.0
    assert (await job_of(store, pending)).billed == 0.0


# ------------------------------------------------------------------------------ requeue


@pytest.mark.parametrize("stop", [JobState.CANCELLED, JobState.TIMEOUT])
async def test_requeue_of_a_cancelled_or_timed_out_job_ends_it_instead(
    store: Store, stop: JobState
) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    job_id = await started(store, epoch, [1], weight=1.0)
    assert await store.request_stop(epoch, job_id, stop, T0 + 1) == "OK"
    assert await store.requeue(epoch, await job_of(store, job_id), "NodeLost", T0 + 10) == "ENDED"
    job = await job_of(store, job_id)
    assert job.state is stop and job.ended_at == T0 + 10 and job.restarts == 0
    assert await alloc(store) == {} and job_id in await done_ids(store)
    assert job_id not in await waiting_ids(store) and job_id not in await active_ids(store)


async def test_requeue_puts_job_back_to_pending_with_gpus_freed(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    job_id = await started(store, epoch, [1, 2], weight=1.0)
    submitted_at = (await job_of(store, job_id)).submitted_at
    assert await store.request_stop(epoch, job_id, JobState.PREEMPTED, T0 + 1) == "OK"

    assert await store.requeue(epoch, await job_of(store, job_id), "NodeLost", T0 + 10) == "OK"

    job = await job_of(store, job_id)
    assert job.state is JobState.PENDING and job.restarts == 1
    assert job.node is None and job.gpu_indices == [] and job.started_at is None
    assert job.charged_until is None and job.stop_request == ""
    assert job.reason == "NodeLost" and job.reasons[0]["code"] == "NodeLost"
    assert await alloc(store) == {}
    assert job_id not in await active_ids(store)
    assert await store.r.zscore(store.keys.waiting, job_id) == submitted_at
    assert job.gpu_seconds == pytest.approx(20.0)  # the 10 s it ran on 2 GPUs are charged

    # It can start again elsewhere, and a second requeue counts again.
    assert await start_job(store, epoch, job_id, "n1", [0, 3], 1.0, T0 + 20) == "OK"
    assert await store.requeue(epoch, await job_of(store, job_id), "LaunchFailed", T0 + 21) == "OK"
    assert (await job_of(store, job_id)).restarts == 2
    assert await alloc(store) == {}


async def test_requeue_refused_unless_active_or_with_stale_epoch(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    pending = await job_of(store, await submit_one(store))
    assert await store.requeue(epoch, pending, "x", T0) == "NOT_ACTIVE"
    assert (await job_of(store, pending.id)).restarts == 0

    job_id = await started(store, epoch, [0])
    job = await job_of(store, job_id)
    assert await store.requeue(epoch + 1, job, "x", T0 + 5) == "STALE_EPOCH"
    assert (await job_of(store, job_id)).state is JobState.RUNNING
    assert await alloc(store) == {"0": job_id}

    assert await store.finish(epoch, job, JobState.SUCCEEDED, 0, "Completed", T0 + 6) == "OK"
    assert await store.requeue(epoch, job, "x", T0 + 7) == "NOT_ACTIVE"
    assert (await job_of(store, job_id)).state is JobState.SUCCEEDED


# ------------------------------------------------------------------------------ cancel


@pytest.mark.parametrize(
    ("caller", "admin", "expected"),
    [
        ("alice", False, "CANCELLED"),
        ("bob", False, "FORBIDDEN"),
        ("bob", True, "CANCELLED"),
    ],
)
async def test_cancel_waiting_job(store: Store, caller: str, admin: bool, expected: str) -> None:
    job_id = await submit_one(store, user="alice")
    assert await store.cancel(job_id, caller, admin, T0 + 5) == expected
    job = await job_of(store, job_id)
    if expected == "CANCELLED":
        assert job.state is JobState.CANCELLED and job.ended_at == T0 + 5
        assert await waiting_ids(store) == [] and await done_ids(store) == [job_id]
    else:
        assert job.state is JobState.PENDING and job.ended_at is None
        assert await waiting_ids(store) == [job_id] and await done_ids(store) == []


async def test_cancel_held_job_ends_it_at_once(store: Store) -> None:
    job_id = await submit_one(store)
    await store.r.hset(store.keys.job(job_id), "state", "HELD")
    assert await store.cancel(job_id, "alice", False, T0) == "CANCELLED"
    assert (await job_of(store, job_id)).state is JobState.CANCELLED


@pytest.mark.parametrize(
    ("caller", "admin", "expected"),
    [
        ("alice", False, "STOPPING"),
        ("bob", False, "FORBIDDEN"),
        ("root", True, "STOPPING"),
    ],
)
async def test_cancel_running_job_asks_it_to_stop(
    store: Store, caller: str, admin: bool, expected: str
) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await started(store, epoch, [0, 1], user="alice")

    assert await store.cancel(job_id, caller, admin, T0 + 5) == expected

    job = await job_of(store, job_id)
    assert job.state is JobState.RUNNING  # the leader stops it on Ray, then finishes it
    assert job.stop_request == ("CANCELLED" if expected == "STOPPING" else "")
    assert await alloc(store) == {"0": job_id, "1": job_id}
    assert await active_ids(store) == {job_id}


async def test_cancel_keeps_the_first_stop_request(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await started(store, epoch, [0])
    assert await store.request_stop(epoch, job_id, JobState.TIMEOUT, T0 + 1) == "OK"
    assert await store.cancel(job_id, "alice", False, T0 + 2) == "STOPPING"
    assert (await job_of(store, job_id)).stop_request == "TIMEOUT"


async def test_cancel_unknown_and_finished_jobs(store: Store) -> None:
    assert await store.cancel("424242", "alice", True, T0) == "NO_SUCH_JOB"
    job_id = await submit_one(store)
    assert await store.cancel(job_id, "alice", False, T0) == "CANCELLED"
    assert await store.cancel(job_id, "alice", False, T0 + 9) == "ALREADY_DONE"
    job = await job_of(store, job_id)
    assert job.ended_at == T0
    assert await store.r.zscore(store.keys.done, job_id) == T0


# ------------------------------------------------------------------------------ request_stop


async def test_request_stop_sets_timeout_once(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await started(store, epoch, [0])
    assert await store.request_stop(epoch, job_id, JobState.TIMEOUT, T0 + 1) == "OK"
    assert await store.request_stop(epoch, job_id, JobState.CANCELLED, T0 + 2) \
        == "ALREADY_STOPPING"
    assert await store.request_stop(epoch, job_id, JobState.TIMEOUT, T0 + 3) == "ALREADY_STOPPING"
    job = await job_of(store, job_id)
    assert job.stop_request == "TIMEOUT" and job.state is JobState.RUNNING
    assert await store.r.hget(store.keys.job(job_id), "stop_requested_at") == str(T0 + 1)


async def test_request_stop_refused_for_waiting_job_and_stale_epoch(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    pending = await submit_one(store)
    assert await store.request_stop(epoch, pending, JobState.TIMEOUT, T0) == "NOT_ACTIVE"
    job_id = await started(store, epoch, [0], run=False)
    assert await store.request_stop(epoch + 1, job_id, JobState.TIMEOUT, T0) == "STALE_EPOCH"
    assert (await job_of(store, job_id)).stop_request == ""
    assert await store.request_stop(epoch, job_id, JobState.TIMEOUT, T0) == "OK"  # STARTING ok


# ------------------------------------------------------------------------------ set_reasons


async def test_set_reasons_only_touches_pending_and_held_jobs(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    pending = await submit_one(store)
    held = await submit_one(store)
    await store.r.hset(store.keys.job(held), "state", "HELD")
    running = await started(store, epoch, [0])
    cancelled = await submit_one(store)
    await store.cancel(cancelled, "alice", False, T0)

    why = [{"code": "Resources", "detail": "needs 2 GPUs"},
           {"code": "Priority", "detail": "1 job(s) ahead in line also wait"}]
    updated = await store.set_reasons(
        {pending: why, held: [why[1]], running: why, cancelled: why, "missing": why}
    )

    assert updated == 2
    p, h = await job_of(store, pending), await job_of(store, held)
    assert p.reason == "Resources" and p.reasons == why
    assert h.reason == "Priority" and h.reasons == [why[1]]
    r, c = await job_of(store, running), await job_of(store, cancelled)
    assert r.reasons == [] and r.reason == ""
    assert c.reasons == [] and c.reason == "Cancelled"
    assert await store.r.exists(store.keys.job("missing")) == 0


async def test_set_reasons_with_empty_list_clears_reason(store: Store) -> None:
    job_id = await submit_one(store)
    assert await store.set_reasons({job_id: []}) == 1
    job = await job_of(store, job_id)
    assert job.reason == "" and job.reasons == []
    assert await store.set_reasons({}) == 0


# ------------------------------------------------------------------------------ nodes


async def test_heartbeat_registers_node_up_with_its_report(store: Store) -> None:
    procs = [GpuProcess(pid=42, used_memory_bytes=1 << 20, name="python", labq_job="7"),
             GpuProcess(pid=43, used_memory_bytes=None, name="miner")]
    node_report = NodeReport(name="n1", gpus=[gpu(0, procs=procs), gpu(1)], simulated=True,
                             hostname="box1")
    assert await store.heartbeat(node_report, now=T0) == "UP"

    (node,) = await store.nodes()
    assert node.name == "n1" and node.state is NodeState.UP
    assert node.gpus_total == 2 and node.gpu_model == A100
    assert node.last_heartbeat == T0 and node.simulated and node.hostname == "box1"
    assert node.gpus == node_report.gpus
    assert node.allocations == {}
    assert node.foreign_processes() == [{"gpu": 0, "pid": 43, "name": "miner"}]


async def test_node_down_only_when_heartbeat_is_older_than_cutoff(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1"), now=T0)
    assert await store.node_down(epoch, "n1", cutoff=T0 - 1) == "ALIVE"
    assert await store.node_down(epoch, "n1", cutoff=T0) == "ALIVE"  # exactly at the cutoff
    assert (await store.nodes())[0].state is NodeState.UP

    assert await store.node_down(epoch + 1, "n1", cutoff=T0 + 15) == "STALE_EPOCH"
    assert (await store.nodes())[0].state is NodeState.UP

    assert await store.node_down(epoch, "n1", cutoff=T0 + 15) == "DOWN"
    assert (await store.nodes())[0].state is NodeState.DOWN
    assert await store.node_down(epoch, "n1", cutoff=T0 + 30) == "ALREADY_DOWN"

    # It heartbeats again: UP, and it can take jobs again.
    assert await store.heartbeat(report("n1"), now=T0 + 40) == "UP"
    node = (await store.nodes())[0]
    assert node.state is NodeState.UP and node.last_heartbeat == T0 + 40
    job_id = await submit_one(store)
    assert await start_job(store, epoch, job_id, "n1", [0], 1.0, T0 + 41) == "OK"


async def test_heartbeat_keeps_a_drained_node_drained(store: Store) -> None:
    await store.heartbeat(report("n1"), now=T0)
    assert (await store.drain_node("n1", "root", "disk swap", T0 + 1)).outcome == Outcome.OK
    assert await store.heartbeat(report("n1"), now=T0 + 2) == "UP"
    node = (await store.nodes())[0]
    assert node.state is NodeState.UP and node.drained and node.shown_state == "DRAINED"
    assert (node.drained_by, node.drain_reason, node.drained_at) == ("root", "disk swap", T0 + 1)


async def test_nodes_show_allocations(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("a", gpus=2), now=T0)
    await store.heartbeat(report("b", gpus=4), now=T0)
    job_id = await started(store, epoch, [1, 3], node="b")
    a, b = await store.nodes()
    assert (a.name, a.allocations, a.free_indices()) == ("a", {}, [0, 1])
    assert (b.name, b.allocations, b.free_indices()) == ("b", {1: job_id, 3: job_id}, [0, 2])


# ------------------------------------------------------------------------------ lease


async def test_lease_epochs_and_fencing(store: Store) -> None:
    assert await store.lease("c1", 100) == 1
    assert await store.leader() == "c1"
    assert await store.lease("c2", 100) == 0  # c1 still leads
    assert await store.lease("c1", 100) == 1  # renewal keeps the epoch
    assert await store.leader() == "c1"

    await asyncio.sleep(0.25)  # c1's lease runs out
    assert await store.leader() is None
    new_epoch = await store.lease("c2", 60_000)
    assert new_epoch > 1
    assert await store.leader() == "c2"
    assert await store.lease("c1", 60_000) == 0

    # The old leader's epoch is now stale: its writes are refused and write nothing.
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await submit_one(store)
    assert await start_job(store, 1, job_id, "n1", [0], 1.0, T0) == "STALE_EPOCH"
    assert (await job_of(store, job_id)).state is JobState.PENDING
    assert await alloc(store) == {}
    assert await start_job(store, new_epoch, job_id, "n1", [0], 1.0, T0) == "OK"


async def test_lease_renewal_extends_the_ttl(store: Store) -> None:
    assert await store.lease("c1", 300) == 1
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await store.lease("c1", 300) == 1
    assert await store.leader() == "c1"  # 450 ms after taking a 300 ms lease
    assert await store.lease("c2", 300) == 0


# ------------------------------------------------------------------------------ node runs


async def test_start_hands_the_node_a_record_and_the_end_takes_it_back(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    await store.heartbeat(report("n2", gpus=4), now=T0)
    job_id = await started(store, epoch, [1, 2], run=False)
    runs, stops, reported = await store.node_orders("n1")
    record = runs[job_id]
    assert (record.user, record.gpu_indices, record.attempt) == ("alice", [1, 2], 0)
    assert record.output.endswith(f"labq-{job_id}.out")
    assert (stops, reported) == ({}, {})
    assert await store.r.lrange(store.keys.node_wake("n1"), 0, -1) == [job_id]
    assert (await store.node_orders("n2"))[0] == {}  # another node sees nothing of it

    # The agent reports; a report for an attempt the node was not given is dropped.
    running = RunStatus(0, "RUNNING", T0 + 1)
    assert await store.report_runs("n1", {job_id: running, "999": running}) == 1
    assert await store.report_runs("n1", {job_id: running}) == 0  # unchanged: no wake-up
    assert await store.report_runs("n2", {job_id: running}) == 0  # not n2's job
    assert (await store.run_statuses(["n1", "n2"])) == {"n1": {job_id: running}, "n2": {}}

    # A stop goes to the node only once asked for, and only to the job's node.
    job = await job_of(store, job_id)
    assert await store.send_stop(epoch, job) == "NO_STOP"
    assert await store.request_stop(epoch, job_id, JobState.CANCELLED, T0 + 2) == "OK"
    job = await job_of(store, job_id)
    assert await store.send_stop(epoch + 1, job) == "STALE_EPOCH"
    assert await store.send_stop(epoch, job) == "OK"
    assert (await store.node_orders("n1"))[1] == {job_id: "CANCELLED"}

    # The end removes the record, the stop and the status: the agent then forgets the run.
    assert await store.finish(epoch, job, JobState.CANCELLED, 143, "Cancelled", T0 + 3) == "OK"
    assert await store.node_orders("n1") == ({}, {}, {})
    assert await store.report_runs("n1", {job_id: running}) == 0  # a late report is dropped


async def test_requeue_gives_the_next_attempt_a_new_record(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    job_id = await started(store, epoch, [0], run=True, requeue=True)
    await store.report_runs("n1", {job_id: RunStatus(0, "RUNNING", T0)})
    assert await store.requeue(epoch, await job_of(store, job_id), "NodeLost", T0 + 5) == "OK"
    assert await store.node_orders("n1") == ({}, {}, {})
    assert await start_job(store, epoch, job_id, "n1", [3], 1.0, T0 + 6) == "OK"
    runs, _, _ = await store.node_orders("n1")
    assert (runs[job_id].attempt, runs[job_id].key) == (1, f"{job_id}.1")
    # The earlier attempt's report is not this attempt's.
    assert await store.report_runs("n1", {job_id: RunStatus(0, "EXITED", T0, T0 + 1, 0)}) == 0


async def test_a_late_report_older_than_the_stored_one_changes_nothing(store: Store) -> None:
    """A heartbeat the agent made earlier, delivered after a newer one (its client tried it
    again; a connection given up on, retransmitted once the link came back), would put the
    node's last heartbeat back in time and make it look lost: it is ignored. A report older
    by 30 s or more is taken (the agent's clock was set back)."""
    await store.heartbeat(report("n1"), now=T0 + 10)
    assert await store.heartbeat(report("n1"), now=T0 + 4) == "UP"
    assert (await store.nodes())[0].last_heartbeat == T0 + 10
    await store.heartbeat(report("n1"), now=T0 - 60)
    assert (await store.nodes())[0].last_heartbeat == T0 - 60
