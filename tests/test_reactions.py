"""The coordinator's reaction to what a node reported: stored job × run status × now → actions.

Pure and table-tested: no store, no processes (scheduler.coordinator.reactions)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from scheduler.coordinator.reactions import (
    Action,
    EndOrRequeue,
    Finish,
    MarkRunning,
    RequestStop,
    Requeue,
    SendStop,
    react,
)
from scheduler.model import Job, JobState
from scheduler.noderun import EXITED, FAILED, RUNNING, STARTING, RunStatus

NOW = 10_000.0


def job(state: JobState = JobState.RUNNING, started: float | None = NOW - 100,
        stop: str = "", limit: int = 3600, restarts: int = 0, stop_reason: str = "",
        starting: float = NOW - 5, stop_at: float | None = None) -> Job:
    return Job(id="7", user="alice", account="lab", state=state, gpus=1, command=["x"],
               submitted_at=NOW - 1000, time_limit_s=limit, started_at=started,
               stop_request=stop, restarts=restarts, stop_reason=stop_reason, node="n1",
               starting_at=starting, stop_requested_at=stop_at)


@dataclass
class Case:
    name: str
    job: Job
    status: RunStatus | None
    want: list[Action] = field(default_factory=list)


CASES = [
    Case("starting, nothing reported yet", job(JobState.STARTING, None), None, []),
    Case("starting, runner preparing", job(JobState.STARTING, None),
         RunStatus(0, STARTING), []),
    Case("starting, now running: the real start time", job(JobState.STARTING, None),
         RunStatus(0, RUNNING, NOW - 3), [MarkRunning(NOW - 3)]),
    Case("a start time in the future is clamped to now", job(JobState.STARTING, None),
         RunStatus(0, RUNNING, NOW + 50), [MarkRunning(NOW)]),
    Case("running, nothing new", job(), RunStatus(0, RUNNING, NOW - 100), []),
    Case("ran and ended between two looks", job(JobState.STARTING, None),
         RunStatus(0, EXITED, NOW - 5, NOW - 1, 0),
         [MarkRunning(NOW - 5), Finish(JobState.SUCCEEDED, 0, "Completed", NOW - 1)]),
    Case("exit 0", job(), RunStatus(0, EXITED, NOW - 100, NOW - 2, 0),
         [Finish(JobState.SUCCEEDED, 0, "Completed", NOW - 2)]),
    Case("exit 3", job(), RunStatus(0, EXITED, NOW - 100, NOW - 2, 3),
         [Finish(JobState.FAILED, 3, "NonZeroExitCode 3", NOW - 2)]),
    Case("killed by a signal of its own", job(), RunStatus(0, EXITED, NOW - 100, NOW, 137, 9),
         [Finish(JobState.FAILED, 137, "Signal 9", NOW)]),
    Case("never started: no such user", job(JobState.STARTING, None),
         RunStatus(0, FAILED, None, NOW - 1, message="user 'alice' does not exist on node n1"),
         [Finish(JobState.FAILED, None,
                 "LaunchFailed: user 'alice' does not exist on node n1", NOW - 1)]),
    Case("over its time limit: stop it", job(started=NOW - 3601),
         RunStatus(0, RUNNING, NOW - 3601), [RequestStop(JobState.TIMEOUT), SendStop()]),
    Case("cancelled, still running: (re)send the stop", job(stop="CANCELLED"),
         RunStatus(0, RUNNING, NOW - 100), [SendStop()]),
    Case("cancelled and stopped", job(stop="CANCELLED"),
         RunStatus(0, EXITED, NOW - 100, NOW - 1, 143, 15, stopped=True),
         [Finish(JobState.CANCELLED, 143, "Cancelled", NOW - 1)]),
    Case("timed out and stopped", job(stop="TIMEOUT"),
         RunStatus(0, EXITED, NOW - 100, NOW, 143, 15, stopped=True),
         [Finish(JobState.TIMEOUT, 143, "TimeLimit", NOW)]),
    Case("idle GPUs: the stop's own reason", job(stop="CANCELLED", stop_reason="IdleGpu"),
         RunStatus(0, EXITED, NOW - 100, NOW, 143, 15, stopped=True),
         [Finish(JobState.CANCELLED, 143, "IdleGpu", NOW)]),
    Case("preempted and stopped: back in the queue", job(JobState.PREEMPTED, stop="PREEMPTED"),
         RunStatus(0, EXITED, NOW - 100, NOW, 143, 15, stopped=True),
         [Requeue("Preempted", NOW)]),
    Case("cancelled before it ever started", job(JobState.STARTING, None, stop="CANCELLED"),
         RunStatus(0, EXITED, None, NOW, stopped=True),
         [Finish(JobState.CANCELLED, None, "Cancelled", NOW)]),
    Case("a stop that came too late: the job's own end counts", job(stop="CANCELLED"),
         RunStatus(0, EXITED, NOW - 100, NOW, 0), [Finish(JobState.SUCCEEDED, 0, "Completed",
                                                         NOW)]),
    Case("stopped though labq never asked: the node shut down", job(),
         RunStatus(0, EXITED, NOW - 100, NOW, 143, 15, stopped=True),
         [EndOrRequeue("NodeShutdown", NOW)]),
    Case("stopped by the agent's policy: the reason it gives", job(),
         RunStatus(0, EXITED, NOW - 100, NOW, 143, 15, stopped=True,
                   message="GpuMisuse: process 12 (python) of job 7 ran on GPU 3"),
         [Finish(JobState.FAILED, 143, "GpuMisuse: process 12 (python) of job 7 ran on GPU 3",
                 NOW)]),
    Case("its runner died under it: lost, requeued if it asked", job(),
         RunStatus(0, EXITED, NOW - 100, NOW, None, None, stopped=True, lost=True),
         [EndOrRequeue("RunnerLost", NOW)]),
    Case("a report of an earlier attempt is not this attempt's", job(JobState.STARTING, None,
                                                                     restarts=1),
         RunStatus(0, EXITED, NOW - 100, NOW, 0), []),
    Case("never reported within launch_timeout_s: LaunchTimeout, GPUs freed",
         job(JobState.STARTING, None, starting=NOW - 301), None,
         [Finish(JobState.FAILED, None, "LaunchTimeout: its node did not start it within "
                 "300 s", NOW)]),
    Case("a runner stuck preparing (a FIFO as output) times out too",
         job(JobState.STARTING, None, starting=NOW - 301), RunStatus(0, STARTING),
         [Finish(JobState.FAILED, None, "LaunchTimeout: its node did not start it within "
                 "300 s", NOW)]),
    Case("starting for a while, within the launch timeout: wait",
         job(JobState.STARTING, None, starting=NOW - 299), RunStatus(0, STARTING), []),
    Case("cancelled while starting, never confirmed: it ends anyway after grace + margin",
         job(JobState.STARTING, None, stop="CANCELLED", stop_at=NOW - 41), None,
         [Finish(JobState.CANCELLED, None, "Cancelled", NOW)]),
    Case("cancelled while starting, within grace + margin: (re)send the stop",
         job(JobState.STARTING, None, stop="CANCELLED", stop_at=NOW - 39), None, [SendStop()]),
    Case("preempted while starting, never confirmed: back in the queue",
         job(JobState.PREEMPTED, None, stop="PREEMPTED", stop_at=NOW - 41), None,
         [Requeue("Preempted", NOW)]),
    Case("an end before the start is clamped to the start", job(started=NOW - 10),
         RunStatus(0, EXITED, NOW - 10, NOW - 20, 0),
         [Finish(JobState.SUCCEEDED, 0, "Completed", NOW - 10)]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reaction(case: Case) -> None:
    assert react(case.job, case.status, NOW) == case.want
