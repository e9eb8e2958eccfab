"""Holds: a held job leaves the scheduler's queue; owners hold their own, admins any."""

from __future__ import annotations

from scheduler.store import Store
from tests.builders import T0, job_of, lead, report, start_job, submit_one


async def test_hold_and_release(store: Store) -> None:
    job_id = await submit_one(store, user="alice")
    assert await store.hold(job_id, "bob", False, release=False) == "FORBIDDEN"
    assert await store.hold(job_id, "alice", False, release=False) == "OK"
    job = await job_of(store, job_id)
    assert job.state.value == "HELD" and job.hold == "user" and job.reason == "UserHold"
    assert job_id not in await store.waiting_ids()  # the scheduler no longer sees it
    assert job_id in [j.id for j in await store.waiting_jobs()]  # `labq queue` still does
    assert await store.hold(job_id, "alice", False, release=False) == "ALREADY"
    # The policy's reasons and budget holds never touch a job a person holds.
    await store.set_reasons({job_id: [{"code": "Resources", "detail": "x"}]})
    assert (await job_of(store, job_id)).reason == "UserHold"
    assert await store.hold(job_id, "alice", False, release=True) == "OK"
    job = await job_of(store, job_id)
    assert job.state.value == "PENDING" and job.hold == "" and job_id in await store.waiting_ids()


async def test_admin_hold_needs_an_admin_to_release(store: Store) -> None:
    job_id = await submit_one(store, user="alice")
    assert await store.hold(job_id, "root", True, release=False) == "OK"
    assert (await job_of(store, job_id)).reason == "AdminHold"
    assert await store.hold(job_id, "alice", False, release=True) == "FORBIDDEN"
    assert await store.hold(job_id, "root", True, release=True) == "OK"


async def test_held_job_cannot_start_and_can_be_cancelled(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await submit_one(store, user="alice")
    await store.hold(job_id, "alice", False, release=False)
    assert await start_job(store, epoch, job_id, "n1", [0], 1.0, T0) == "NOT_PENDING"
    assert await store.cancel(job_id, "alice", False, T0) == "CANCELLED"
    assert job_id not in [j.id for j in await store.waiting_jobs()]


async def test_budget_held_job_can_start_when_it_fits_again(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await submit_one(store, user="alice")
    await store.set_reasons({job_id: [{"code": "BudgetExhausted", "detail": "x"}]}, {job_id})
    assert (await job_of(store, job_id)).state.value == "HELD"
    assert await start_job(store, epoch, job_id, "n1", [0], 1.0, T0) == "OK"


async def test_a_started_job_forgets_its_estimated_start(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await submit_one(store, user="alice")
    await store.set_reasons({job_id: [{"code": "Resources", "detail": "x"}]}, (),
                            {job_id: T0 + 60})
    assert (await job_of(store, job_id)).est_start == T0 + 60
    assert await start_job(store, epoch, job_id, "n1", [0], 1.0, T0) == "OK"
    assert (await job_of(store, job_id)).est_start is None
