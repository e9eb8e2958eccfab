"""The store's side of preemption: PREEMPTED while stopping, then PENDING again (or CANCELLED)."""

from __future__ import annotations

from scheduler.model import JobState
from scheduler.store import Store
from tests.builders import T0, alloc, job_of, lead, report, started


async def test_preempted_job_holds_its_gpus_until_requeued(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await started(store, epoch, [0, 1], qos="scavenger")
    assert await store.request_stop(epoch, job_id, JobState.PREEMPTED, T0 + 5) == "OK"
    job = await job_of(store, job_id)
    assert job.state == JobState.PREEMPTED and job.stop_request == "PREEMPTED"
    assert await alloc(store) == {"0": job_id, "1": job_id}  # still held while it stops
    assert job_id in {j.id for j in await store.active_jobs()}
    assert await store.requeue(epoch, job, "Preempted", T0 + 8) == "OK"
    job = await job_of(store, job_id)
    assert job.state == JobState.PENDING and job.restarts == 1 and job.reason == "Preempted"
    assert await alloc(store) == {}


async def test_cancel_during_preemption_ends_cancelled(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await started(store, epoch, [0], qos="scavenger", user="sam")
    await store.request_stop(epoch, job_id, JobState.PREEMPTED, T0 + 1)
    assert await store.cancel(job_id, "sam", False, T0 + 2) == "STOPPING"
    job = await job_of(store, job_id)
    assert job.stop_request == "CANCELLED"  # the coordinator finishes it CANCELLED, no requeue
    assert await store.finish(epoch, job, JobState.CANCELLED, None, "Cancelled", T0 + 3) == "OK"
    assert (await job_of(store, job_id)).state == JobState.CANCELLED
