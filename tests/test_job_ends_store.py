"""What the store keeps when a job ends: the ended-jobs counter (per state, reason code and
account, for labq_jobs_ended_total) and what the node measured of the run (for `labq eff`)."""

from __future__ import annotations

from scheduler.coordinator.reactions import Finish, merged_usage, react
from scheduler.model import JobState
from scheduler.noderun import EXITED, RunStatus
from scheduler.store import Store
from scheduler.store.records import job_from_spec
from tests.builders import T0, job_of, lead, report, spec, started, submit_one


async def ended_counts(store: Store) -> dict[str, int]:
    stats = await store.r.hgetall(store.keys.stats)
    return {k: int(v) for k, v in stats.items() if k.startswith("ended|")}


async def test_finish_counts_the_end_by_reason_code_and_keeps_the_measured_usage(
        store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    failed = await started(store, epoch, [0])
    ok = await started(store, epoch, [1])
    job = await job_of(store, failed)
    assert await store.finish(epoch, job, JobState.FAILED, 3, "NonZeroExitCode 3", T0 + 5,
                              usage={"cpu_usec": 2_500_000, "memory_peak_bytes": 7 << 20}) == "OK"
    assert await store.finish(epoch, await job_of(store, ok), JobState.SUCCEEDED, 0,
                              "Completed", T0 + 6) == "OK"
    assert await ended_counts(store) == {"ended|FAILED|NonZeroExitCode|lab": 1,
                                         "ended|SUCCEEDED|Completed|lab": 1}
    measured = await job_of(store, failed)
    assert (measured.cpu_seconds, measured.memory_peak_bytes) == (2.5, 7 << 20)
    unmeasured = await job_of(store, ok)
    assert (unmeasured.cpu_seconds, unmeasured.memory_peak_bytes) == (None, None)
    # a second finish of the same job counts nothing more
    assert await store.finish(epoch, job, JobState.FAILED, 3, "NonZeroExitCode 3",
                              T0 + 7) == "ALREADY_DONE"
    assert sum((await ended_counts(store)).values()) == 2


async def test_a_cancelled_waiting_job_and_a_stop_that_ends_a_requeue_are_counted(
        store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    waiting = await submit_one(store, account="physics")
    assert await store.cancel(waiting, "alice", False, T0 + 1) == "CANCELLED"
    running = await started(store, epoch, [0])
    assert await store.cancel(running, "alice", False, T0 + 2) == "STOPPING"
    # its node lost it while it stopped: the requeue ends it CANCELLED instead
    assert await store.requeue(epoch, await job_of(store, running), "NodeLost",
                               T0 + 3) == "ENDED"
    assert await ended_counts(store) == {"ended|CANCELLED|Cancelled|physics": 1,
                                         "ended|CANCELLED|Cancelled|lab": 1}


def test_a_run_that_exits_carries_its_usage_into_the_finish() -> None:
    job = job_from_spec(spec(), "7", T0)
    job.state, job.started_at, job.node = JobState.RUNNING, T0, "n1"
    status = RunStatus(phase=EXITED, started_at=T0, ended_at=T0 + 9, exit_code=0,
                       usage={"cpu_usec": 4_000_000})
    [finish] = react(job, status, T0 + 10)
    assert isinstance(finish, Finish) and finish.state is JobState.SUCCEEDED
    assert finish.usage == {"cpu_usec": 4_000_000}


def test_a_multinode_jobs_usage_sums_cpu_and_takes_the_largest_node_peak() -> None:
    parts: list[RunStatus | None] = [
        RunStatus(usage={"cpu_usec": 10, "memory_peak_bytes": 5}),
        RunStatus(usage={"cpu_usec": 7, "memory_peak_bytes": 9}),
    ]
    assert merged_usage(parts) == {"cpu_usec": 17, "memory_peak_bytes": 9}
    # a part that measured no memory: the peak is not known
    parts.append(RunStatus(usage={"cpu_usec": 1}))
    assert merged_usage(parts) == {"cpu_usec": 18}
    assert merged_usage([None]) == {}
