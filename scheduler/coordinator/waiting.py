"""Before the policy: which waiting jobs may be scheduled at all (dependencies), which array
indices become tasks now (throttle), and how an array looks as a whole (queue, show, wait).

The policy stays pure and sees only jobs: a job whose dependency is not met is left out with a
reason in words; an array's indices become tasks (ordinary jobs) a few at a time.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from scheduler.cluster.views import pending_view
from scheduler.model import (
    GPU_HOLDING_STATES,
    TERMINAL_STATES,
    WAITING_STATES,
    ArrayState,
    Job,
    JobState,
    Reason,
    ReasonCode,
    state_names,
)
from scheduler.policy import PendingJob
from scheduler.policy.arrays import format_ranges, split_task_id
from scheduler.policy.dependency import (
    MET,
    NEVER,
    Dependency,
    DependencyError,
    Target,
    Verdict,
    evaluate,
    parse_dependency,
)
from scheduler.store import Store
from scheduler.store.arrays import ArrayRecord

SPAWN_MAX = 256  # tasks made per array per cycle at most
_ENDED = state_names(TERMINAL_STATES)


# The fields of a waiting job's record the leader reads to schedule it (`Queued.of`): its
# request as the policy sees it (`pending_view`), and its name, dependency and array.
QUEUE_FIELDS = ("id", "user", "account", "state", "submitted_at", "gpus", "gpu_type", "qos",
                "time_limit_s", "nodes", "cpus", "cpus_per_gpu", "mem", "mem_per_gpu", "name",
                "dependency", "array_job")


class Queueable(Protocol):
    """What the steps before the policy read of a job: a `Job`, or a `Queued` one."""

    @property
    def id(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> JobState: ...
    @property
    def submitted_at(self) -> float: ...
    @property
    def dependency(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Queued:
    """A waiting job as the leader keeps it between cycles: the policy's view of it and the
    few fields the steps before the policy read (dependency, singleton, arrays). Not the
    whole record: a 100,000-job queue is 100,000 of these, about a fifth of the memory of
    as many `Job`s (the start reads each job it starts in full)."""

    view: PendingJob
    name: str
    state: JobState  # as read (PENDING or HELD): only ever compared with ended and running
    dependency: str
    array_job: str  # "": not a task of an array

    @classmethod
    def of(cls, job: Job) -> Queued:
        """Raises ValueError for a record the policy refuses (`pending_view`)."""
        return cls(pending_view(job), sys.intern(job.name), job.state, job.dependency,
                   job.array_job)

    @property
    def id(self) -> str:
        return self.view.id

    @property
    def user(self) -> str:
        return self.view.user

    @property
    def submitted_at(self) -> float:
        return self.view.submitted_at


def spawn_count(array: ArrayRecord, waiting: int, active: int, cluster_gpus: int) -> int:
    """How many indices of `array` to make tasks now: up to its throttle counting those that
    wait or run; without one, enough waiting tasks to fill the cluster (the policy then sees
    the array's whole demand that could run), never more than remain."""
    if array.hold or array.state != ArrayState.PENDING:
        return 0
    if array.throttle:
        room = array.throttle - waiting - active
    else:
        room = max(1, cluster_gpus // max(1, array.template.gpus)) - waiting
    return max(0, min(room, SPAWN_MAX, len(array.remaining_indices)))


def _ended_badly(state: str, exit_code: str | None) -> str:
    if state == JobState.SUCCEEDED.value:
        return ""
    return f"{state} (exit {exit_code})" if exit_code not in (None, "") else state


def array_target(array: ArrayRecord, tasks: Sequence[Job | None]) -> Target:
    """An array as one dependency target: started when no task waits, ended when all did."""
    states = [t.state.value for t in tasks if t is not None]
    waiting = bool(array.remaining) or any(s in WAITING_STATES for s in states)
    ended = not array.remaining and all(s in _ENDED for s in states)
    failed = next((f"{_ended_badly(t.state.value, _code(t))} (task {t.id})" for t in tasks
                   if t is not None and t.state.value in _ENDED
                   and t.state != JobState.SUCCEEDED), "")
    if array.cancelled and not failed:
        failed = f"CANCELLED (task {array.id}_{array.cancelled[0]})"
    return Target(started=not waiting, ended=ended, failed=failed)


def _code(job: Job) -> str | None:
    return None if job.exit_code is None else str(job.exit_code)


async def read_targets(store: Store, ids: Iterable[str]) -> dict[str, Target | None]:
    """Each dependency target's state: a job or task, or an array (all its tasks)."""
    ids = sorted(set(ids))
    rows = await store.job_fields(ids, ["state", "started_at", "exit_code"])
    out: dict[str, Target | None] = {}
    missing = []
    for job_id, (state, started, code) in zip(ids, rows, strict=True):
        if state is None:
            missing.append(job_id)
            continue
        ended = state in _ENDED
        out[job_id] = Target(started=bool(started) or ended, ended=ended,
                             failed=_ended_badly(state, code) if ended else "")
    for array in await store.arrays([i for i in missing if i.isdigit()]):
        out[array.id] = array_target(array, await array_tasks(store, array))
    for job_id in missing:
        out.setdefault(job_id, None)  # gone (past retention): met, as in Slurm
    return out


async def array_tasks(store: Store, array: ArrayRecord) -> list[Job | None]:
    """The array's tasks that are jobs (None where one has left the store)."""
    ids = [f"{array.id}_{i}" for i in array.made]
    found = {j.id: j for j in await store.get_jobs(ids)}
    return [found.get(i) for i in ids]


def dependency_of(job: Queueable) -> Dependency | None:
    try:
        return parse_dependency(job.dependency) if job.dependency else None
    except DependencyError:
        return None  # checked at submit; an unreadable one never blocks


def singleton_blocker(job: Queueable, others: Iterable[Queueable]) -> str | None:
    """An earlier job of the same user and name still waiting or running."""
    for other in others:
        if (other.id != job.id and other.user == job.user and other.name == job.name
                and not other.state.is_terminal()
                and (other.state.holds_gpus() or other.submitted_at < job.submitted_at
                     or (other.submitted_at == job.submitted_at and other.id < job.id))):
            return other.id
    return None


def dependency_reason(verdict: Verdict) -> Reason:
    if verdict.state == NEVER:
        return Reason(ReasonCode.DEPENDENCY_NEVER_SATISFIED,
                      f"can never start: {verdict.detail}; cancel it, or change it with "
                      "`labq update ID --dependency ...`")
    return Reason("Dependency", f"waits for {verdict.detail}")


async def check_dependencies(store: Store, candidates: Sequence[Queueable],
                             everyone: Sequence[Queueable]) -> dict[str, Verdict]:
    """The verdict for every candidate with a dependency (`everyone`: the waiting and active
    jobs, for singleton)."""
    deps = {j.id: d for j in candidates if (d := dependency_of(j)) is not None}
    if not deps:
        return {}
    targets = await read_targets(store, {t for d in deps.values() for t in d.targets})
    jobs = {j.id: j for j in candidates}
    out = {}
    for job_id, dep in deps.items():
        blocker = (singleton_blocker(jobs[job_id], everyone)
                   if any(c.kind == "singleton" for c in dep.conditions) else None)
        out[job_id] = evaluate(dep, targets, blocker)
    return out


def is_met(verdict: Verdict) -> bool:
    return verdict.state == MET


# ------------------------------------------------------------------ arrays as one record


def aggregate(array: ArrayRecord, tasks: Sequence[Job | None]) -> dict[str, Any]:
    """An array as a whole: its state (RUNNING while a task runs, PENDING while one waits,
    else the worst way one ended), the highest exit code, and how many tasks are in each
    state."""
    counts: Counter[str] = Counter(t.state.value for t in tasks if t is not None)
    unmade = len(array.remaining_indices)
    if unmade:
        counts[JobState.HELD if array.hold else JobState.PENDING] += unmade
    if array.cancelled:
        counts[JobState.CANCELLED] += len(array.cancelled)
    if any(counts[s] for s in GPU_HOLDING_STATES):
        state = JobState.RUNNING
    elif counts[JobState.PENDING]:
        state = JobState.PENDING
    elif counts[JobState.HELD]:
        state = JobState.HELD
    else:
        state = next((s for s in (JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED)
                      if counts[s]), JobState.SUCCEEDED)
    codes = [t.exit_code for t in tasks if t is not None and t.exit_code is not None]
    return {"state": state, "exit_code": max(codes) if codes else None,
            "array_states": dict(counts)}


def array_line(array: ArrayRecord, waiting_tasks: Sequence[Job], running: int) -> dict[str, Any]:
    """The waiting part of an array as one queue line: `17_[4-99%8]`."""
    indices = sorted({*array.remaining_indices,
                      *(j.array_task for j in waiting_tasks if j.array_task is not None)})
    ranges = format_ranges(indices)
    throttle = f"%{array.throttle}" if array.throttle else ""
    if array.hold:
        reason: str = ReasonCode.USER_HOLD
        detail = "the array is held; `labq release` lets it run"
    elif array.throttle and running >= array.throttle:
        reason = "JobArrayTaskLimit"
        detail = (f"{running} of this array's tasks run and it allows {array.throttle} at once "
                  f"(--array ...%{array.throttle})")
    elif waiting_tasks and waiting_tasks[0].reasons:
        reason = waiting_tasks[0].reason
        detail = waiting_tasks[0].reasons[0].get("detail", "")
    else:
        reason, detail = "Priority", "its tasks are queued in turn"
    return {"id": f"{array.id}_[{ranges}{throttle}]", "array_tasks": ranges,
            "array_throttle": array.throttle,
            "state": JobState.HELD if array.hold else JobState.PENDING,
            "reason": reason, "reasons": [{"code": reason, "detail": detail}],
            "task_count": len(indices)}


def array_of(job_id: str) -> str | None:
    """The array id in a task id (`17_5` -> `17`)."""
    parts = split_task_id(job_id)
    return parts[0] if parts else None
