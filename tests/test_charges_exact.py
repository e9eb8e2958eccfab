"""Charges are exact (issue 21, item 1), against a real Valkey: a job is charged for the time
its node's runner recorded it ran, whatever the coordinator believed meanwhile. A node that
went silent is charged no further than its last heartbeat; time charged past a run's real end
is given back when it ends; a requeued job's attempts each charge what they ran; the usage
that budgets and fair share read follows."""

from __future__ import annotations

import pytest

from scheduler.model import JobState
from scheduler.store import Outcome, Store
from tests.builders import T0, job_of, lead, report, start_job, started, usage_totals

pytestmark = pytest.mark.store


async def ready(store: Store) -> int:
    """The leader's epoch, with node n1 (4 GPUs) up."""
    await store.heartbeat(report("n1"), T0)
    return await lead(store)


async def charged(store: Store, job_id: str) -> float:
    return (await job_of(store, job_id)).gpu_seconds


async def test_time_charged_past_the_runs_end_is_given_back(store: Store) -> None:
    epoch = await ready(store)
    job_id = await started(store, epoch, [0, 1], user="ann")  # RUNNING from T0, 2 GPUs
    # the coordinator charged it to T0 + 40 (its node silent, the job believed running)...
    await store.charge(epoch, [job_id], T0 + 40)
    assert await charged(store, job_id) == pytest.approx(80)
    # ...but its runner recorded the end at T0 + 4: 4 s on 2 GPUs, exactly
    job = await job_of(store, job_id)
    assert await store.finish(epoch, job, JobState.SUCCEEDED, 0, "Completed",
                              T0 + 4) == Outcome.OK
    done = await job_of(store, job_id)
    assert done.gpu_seconds == pytest.approx(8) and done.billed == pytest.approx(8)
    assert done.ended_at == pytest.approx(T0 + 4)
    totals = await usage_totals(store)
    assert totals["user"]["ann"]["gpu_s"] == pytest.approx(8)


async def test_nothing_is_charged_past_the_nodes_last_heartbeat(store: Store) -> None:
    epoch = await ready(store)
    job_id = await started(store, epoch, [0], user="bob")
    await store.charge(epoch, [job_id], T0 + 30, {job_id: T0 + 10})
    assert await charged(store, job_id) == pytest.approx(10)
    # a limit never takes back what was charged: a periodic charge only adds
    await store.charge(epoch, [job_id], T0 + 30, {job_id: T0 + 5})
    assert await charged(store, job_id) == pytest.approx(10)
    # the node speaks again: the time it was silent is charged, the run having gone on
    await store.charge(epoch, [job_id], T0 + 30)
    assert await charged(store, job_id) == pytest.approx(30)


async def test_a_lost_node_is_charged_up_to_its_last_heartbeat(store: Store) -> None:
    epoch = await ready(store)
    job_id = await started(store, epoch, [0], user="cat")
    await store.charge(epoch, [job_id], T0 + 20)
    job = await job_of(store, job_id)
    # ended NodeLost at T0 + 320 (the node timeout), its node last heard at T0 + 12
    assert await store.finish(epoch, job, JobState.FAILED, None, "NodeLost", T0 + 320,
                              charge_until=T0 + 12) == Outcome.OK
    done = await job_of(store, job_id)
    assert done.gpu_seconds == pytest.approx(12) and done.ended_at == pytest.approx(T0 + 320)


async def test_each_attempt_of_a_requeued_job_charges_what_it_ran(store: Store) -> None:
    epoch = await ready(store)
    job_id = await started(store, epoch, [0, 1], user="dan", requeue=True)
    await store.charge(epoch, [job_id], T0 + 50)
    job = await job_of(store, job_id)
    assert await store.requeue(epoch, job, "NodeLost", T0 + 300,
                               charge_until=T0 + 7) == Outcome.OK
    assert await charged(store, job_id) == pytest.approx(14)  # 7 s on 2 GPUs
    # the second attempt, from T0 + 400 to T0 + 403 (its runner's record)
    job = await job_of(store, job_id)
    assert job.state == JobState.PENDING
    assert await start_job(store, epoch, job_id, "n1", [0, 1], 1.0, T0 + 399) == "OK"
    assert await store.mark_running(epoch, job_id, T0 + 400) == "OK"
    await store.charge(epoch, [job_id], T0 + 420)
    job = await job_of(store, job_id)
    assert await store.finish(epoch, job, JobState.SUCCEEDED, 0, "Completed",
                              T0 + 403) == Outcome.OK
    assert await charged(store, job_id) == pytest.approx(14 + 6)
    assert (await usage_totals(store))["user"]["dan"]["gpu_s"] == pytest.approx(20)
