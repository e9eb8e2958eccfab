"""What the coordinator does about one active job, given what its node's agent reported.

Pure: stored job × reported run status × now → the transitions to make, in order. The
coordinator applies them with fenced store scripts; tests/test_reactions.py tables them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from scheduler.model import Job, JobState, ReasonCode
from scheduler.noderun import EXITED, FAILED, RunStatus
from scheduler.noderun import STARTING as STARTING_PHASE


@dataclass(frozen=True)
class MarkRunning:
    at: float


@dataclass(frozen=True)
class Finish:
    state: JobState
    exit_code: int | None
    reason: str
    at: float
    # what its node measured of the run (the cgroup's cpu_usec, memory_peak_bytes), if any
    usage: Mapping[str, int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Requeue:
    """Back in the queue (a preempted job; a job submitted with --requeue whose node went)."""

    reason: str
    at: float


@dataclass(frozen=True)
class EndOrRequeue:
    """Requeue if the job asked for it (--requeue), else end FAILED with `reason`."""

    reason: str
    at: float
    usage: Mapping[str, int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class RequestStop:
    state: JobState  # TIMEOUT


@dataclass(frozen=True)
class SendStop:
    """Hand the stored stop request to the node (idempotent; the agent's runner does it)."""


Action = MarkRunning | Finish | Requeue | EndOrRequeue | RequestStop | SendStop


FENCED = "NodeFenced"  # agents.agent.Agent.fence: the runner's recorded reason starts so
STOP_BACKSTOP_S = 30.0  # beyond the grace: a stop the node never confirms ends the job anyway


def react(job: Job, status: RunStatus | None, now: float, launch_timeout_s: float = 300.0,
          stop_grace_s: float = 10.0) -> list[Action]:
    """The actions for an active (STARTING, RUNNING or PREEMPTED) job."""
    if status is not None and status.attempt != job.restarts:
        status = None  # a report of an earlier attempt: the agent has not seen this one yet
    never_ran = job.started_at is None and (status is None or status.phase == STARTING_PHASE)
    if never_ran and job.state != JobState.RUNNING:
        overdue = _launch_overdue(job, now, launch_timeout_s, stop_grace_s)
        if overdue is not None:
            return [overdue]
    if status is not None and status.phase == FAILED:
        message = status.message or "the node could not start it"
        return [Finish(JobState.FAILED, None, f"LaunchFailed: {message}"[:300],
                       status.ended_at or now)]
    actions: list[Action] = []
    started = job.started_at
    if started is None and status is not None and status.started_at is not None:
        started = min(status.started_at, now)
        actions.append(MarkRunning(started))
    if status is not None and status.phase == EXITED:
        ended = max(min(status.ended_at or now, now), started or 0.0)
        actions.append(_ended(job, status, ended))
        return actions
    if (not job.stop_request and started is not None
            and now >= started + job.time_limit_s):
        actions.append(RequestStop(JobState.TIMEOUT))
        actions.append(SendStop())
    elif job.stop_request:
        actions.append(SendStop())
    return actions


def combined_status(job: Job, statuses: Mapping[str, RunStatus | None]) -> RunStatus | None:
    """A multi-node job's run as one status, from what each of its nodes reported: the head
    node's run (rank 0, the one that runs the command) is the job's; it is not RUNNING until
    every node runs its part; a part that could not start fails the job; a part that ended
    under it (its runner died, its node was shut down) ends the job (or requeues it, with
    --requeue) as `lost`. For a job of one node: that node's status."""
    names = job.node_names
    if not names:
        return None

    def current(name: str) -> RunStatus | None:
        status = statuses.get(name)
        return status if status is not None and status.attempt == job.restarts else None

    head = current(names[0])
    others = [current(name) for name in names[1:]]
    for part in others:
        if part is not None and part.phase == FAILED:
            return part
    measured = merged_usage([head, *others])
    if head is not None and head.ended:
        return replace(head, usage=measured)
    for part in others:
        if part is not None and part.phase == EXITED:
            return replace(part, lost=True, stopped=False, usage=measured)
    if head is not None and head.started_at is not None and any(
            part is None or part.started_at is None for part in others):
        return replace(head, phase=STARTING_PHASE, started_at=None)
    return head


def merged_usage(parts: list[RunStatus | None]) -> dict[str, int]:
    """A multi-node job's usage from its parts': CPU time summed, peak memory the largest
    of one node's (a job's memory limit is per node). Only what every part measured."""
    measured = [p.usage for p in parts if p is not None]
    out: dict[str, int] = {}
    if measured and all("cpu_usec" in u for u in measured):
        out["cpu_usec"] = sum(u["cpu_usec"] for u in measured)
    if measured and all("memory_peak_bytes" in u for u in measured):
        out["memory_peak_bytes"] = max(u["memory_peak_bytes"] for u in measured)
    return out


def _launch_overdue(job: Job, now: float, launch_timeout_s: float,
                    stop_grace_s: float) -> Action | None:
    """A job whose node never reported it running: ended once it was asked to stop (cancel,
    preemption) and the grace and a margin passed, or once `launch_timeout_s` passed since
    its GPUs were allocated (LaunchTimeout). Its GPUs are freed; the node's agent kills what
    it may have started when the start record is gone."""
    if job.stop_request and job.stop_requested_at is not None and (
            now - job.stop_requested_at > stop_grace_s + STOP_BACKSTOP_S):
        if job.stop_request == JobState.PREEMPTED.value:
            return Requeue(job.stop_reason or ReasonCode.PREEMPTED, now)
        return Finish(JobState(job.stop_request), None, stop_reason(job), now)
    if job.starting_at is not None and now - job.starting_at > launch_timeout_s:
        return Finish(JobState.FAILED, None, "LaunchTimeout: its node did not start it within "
                      f"{launch_timeout_s:.0f} s", now)
    return None


def _ended(job: Job, status: RunStatus, ended: float) -> Action:
    """The end of a run: as asked if labq stopped it, else as the job's exit says; with what
    its node measured of it."""
    action = _end_of_run(job, status, ended)
    if isinstance(action, Finish | EndOrRequeue) and status.usage:
        return replace(action, usage=dict(status.usage))
    return action


def _end_of_run(job: Job, status: RunStatus, ended: float) -> Action:
    if status.stopped and job.stop_request == JobState.PREEMPTED.value:
        return Requeue(job.stop_reason or ReasonCode.PREEMPTED, ended)  # or Requeued (by hand)
    if status.stopped and job.stop_request:
        return Finish(JobState(job.stop_request), status.exit_code, stop_reason(job), ended)
    if status.lost:
        return EndOrRequeue("RunnerLost", ended)  # its runner died under it
    if status.stopped and status.message.startswith(FENCED):
        # its agent, cut off from the store past its fence, stopped it before labq could
        # declare the node lost: as if it had (requeued with --requeue)
        return EndOrRequeue(ReasonCode.NODE_LOST, ended)
    if status.stopped and status.message:  # stopped by an agent policy (GpuMisuse): why
        return Finish(JobState.FAILED, status.exit_code, status.message[:300], ended)
    if status.stopped:
        # The runner stopped it though labq never asked: the node was shut down under it.
        return EndOrRequeue("NodeShutdown", ended)
    if status.exit_code == 0:
        return Finish(JobState.SUCCEEDED, 0, "Completed", ended)
    if status.signal:
        return Finish(JobState.FAILED, status.exit_code, f"Signal {status.signal}", ended)
    return Finish(JobState.FAILED, status.exit_code, f"NonZeroExitCode {status.exit_code}",
                  ended)


def stop_reason(job: Job) -> str:
    """The end reason of a job labq stopped: as recorded with the stop, else the usual one."""
    if job.stop_reason:
        return job.stop_reason
    if job.stop_request == JobState.TIMEOUT:
        return ReasonCode.TIME_LIMIT
    return ReasonCode.CANCELLED
