"""Idle GPUs: GPUs held by a running job whose utilization stays below a threshold (pure).

A GPU allocated to a RUNNING job is *below* from the first agent report under
`idle_gpu_threshold` until a report at or above it; it is *idle* once it has been below for
`idle_gpu_after_s`. A report the agent made before the job started, a GPU whose utilization the
agent could not read, and a node that is not UP or stopped reporting say nothing: the GPU keeps
the state it had. The leader keeps this state in the store (`gpu_idle_since` on the job), so a
new leader carries on where the old one was.

What the admin's `idle_gpu_policy` does with it:
  off  — nothing is tracked; nothing shows.
  warn — idle GPUs show in `labq nodes`, `labq show` and the metrics; the owner is notified
         (`notify_command`) once per idle spell: when the first of the job's GPUs becomes idle.
  stop — as warn, and a job whose GPUs have *all* been below the threshold for
         `idle_gpu_stop_after_s` is stopped like a cancel (SIGTERM, grace, SIGKILL) and ends
         CANCELLED with reason `IdleGpu` (a job still using some of its GPUs is not stopped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.config import Settings
from scheduler.model import Job, JobState, Node, NodeState, ReasonCode

IDLE_REASON = ReasonCode.IDLE_GPU  # the end reason of a job stopped for idle GPUs
EVENT_IDLE = "gpu_idle"
EVENT_STOPPED = "gpu_idle_stopped"


@dataclass(frozen=True)
class IdlePolicy:
    threshold: float = 0.05
    after_s: float = 1800.0
    action: str = "warn"  # off | warn | stop
    stop_after_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> IdlePolicy:
        return cls(settings.idle_gpu_threshold, settings.idle_gpu_after_s,
                   settings.idle_gpu_policy, settings.idle_gpu_stop_after_s)

    def describe(self) -> str:
        if self.action == "stop":
            return f"policy: stop after {_minutes(self.stop_after_s)}"
        return "policy: warn only"


@dataclass(frozen=True)
class Reading:
    """One GPU's utilization as an agent reported it, and when."""

    utilization: float | None
    at: float


@dataclass(frozen=True)
class RunningGpus:
    """What the check needs of a running job."""

    job_id: str
    node: str
    indices: tuple[int, ...]
    started_at: float
    idle_since: Mapping[int, float]  # as stored: GPU index -> below the threshold since
    notified: bool
    stopping: bool  # a stop was already asked (cancel, time limit, ...)


@dataclass(frozen=True)
class IdleDecision:
    job_id: str
    idle_since: dict[int, float]  # the new state
    notified: bool
    write: bool  # the state differs from the stored one
    notify: bool  # tell the owner: the job's first GPU became idle
    stop: bool  # policy stop: stop the job now
    idle_gpus: tuple[int, ...]  # GPUs below the threshold for at least `after_s`
    idle_for_s: float  # how long all of `idle_gpus` have been below (0 if none)


def check_idle(jobs: Iterable[RunningGpus], readings: Mapping[tuple[str, int], Reading],
               policy: IdlePolicy, now: float) -> list[IdleDecision]:
    """The new idle state of each running job, and what to do; only jobs with something to
    write or do are returned. `readings` holds fresh reports only, keyed by (node, GPU index)."""
    out = []
    for job in jobs:
        since, seen_low = ({}, set()) if policy.action == "off" else _next_since(
            job, readings, policy.threshold)
        idle = tuple(i for i in job.indices if i in since and now - since[i] >= policy.after_s)
        notified = job.notified and bool(since)  # a fully busy job starts a new spell
        notify = bool(idle) and not notified
        notified = notified or notify
        # Stopping needs fresh evidence: every GPU of the job read below the threshold now
        # (a lost GPU or a failed NVML read keeps its old state, but never kills a job).
        stop = (policy.action == "stop" and not job.stopping and len(idle) == len(job.indices)
                and bool(idle) and set(job.indices) <= seen_low
                and all(now - since[i] >= policy.stop_after_s for i in idle))
        write = since != dict(job.idle_since) or notified != job.notified
        if write or notify or stop:
            idle_for = min((now - since[i] for i in idle), default=0.0)
            out.append(IdleDecision(job.job_id, since, notified, write, notify and not stop,
                                    stop, idle, idle_for))
    return out


def _next_since(job: RunningGpus, readings: Mapping[tuple[str, int], Reading],
                threshold: float) -> tuple[dict[int, float], set[int]]:
    """The GPUs' new below-since times, and the GPUs a fresh reading shows below now."""
    since: dict[int, float] = {}
    seen_low: set[int] = set()
    for index in job.indices:
        reading = readings.get((job.node, index))
        previous = job.idle_since.get(index)
        if reading is None or reading.utilization is None or reading.at < job.started_at:
            if previous is not None:
                since[index] = previous  # nothing new about this GPU: keep what we knew
        elif reading.utilization < threshold:
            since[index] = previous if previous is not None else reading.at
            seen_low.add(index)
    return since, seen_low


# ---------------------------------------------------------------------------- from the store


def running_gpus(job: Job) -> RunningGpus:
    return RunningGpus(job.id, job.node or "", tuple(job.gpu_indices), job.started_at or 0.0,
                       dict(job.gpu_idle_since), job.idle_notified, bool(job.stop_request))


def fresh_readings(nodes: Sequence[Node], oldest: float) -> dict[tuple[str, int], Reading]:
    """Readings of UP nodes whose last report is not older than `oldest`."""
    return {(n.name, g.index): Reading(g.utilization, n.last_heartbeat)
            for n in nodes if n.state == NodeState.UP and n.last_heartbeat >= oldest
            for g in n.gpus}


def idle_seconds(job: Job, index: int, now: float) -> float:
    """How long GPU `index` of `job` has been below the threshold (0 if it is not)."""
    since = job.gpu_idle_since.get(index)
    return 0.0 if since is None else max(0.0, now - since)


def job_idle(job: Job, policy: IdlePolicy, now: float) -> dict[str, Any] | None:
    """A running job's idle GPUs for `labq show` (None when it has none or tracking is off)."""
    if policy.action == "off" or job.state != JobState.RUNNING:
        return None
    idle = [i for i in job.gpu_indices if idle_seconds(job, i, now) >= policy.after_s]
    if not idle:
        return None
    idle_for = min(idle_seconds(job, i, now) for i in idle)
    noun = "GPU" if len(idle) == 1 else "GPUs"
    text = (f"{noun} {','.join(map(str, idle))} idle for {_minutes(idle_for)} "
            f"(utilization < {policy.threshold:.0%}); {policy.describe()}")
    return {"gpus": idle, "idle_for_s": idle_for, "threshold": policy.threshold,
            "policy": policy.action, "stop_after_s": policy.stop_after_s, "text": text}


def annotate_nodes(nodes: list[dict[str, Any]], active: Sequence[Job], policy: IdlePolicy,
                   now: float) -> None:
    """Add `idle_s` (below the threshold this long; 0 if not) and `idle` to each allocated GPU
    of `nodes` (as `Node.to_dict` makes them), for `labq nodes`."""
    jobs = {j.id: j for j in active if j.state == JobState.RUNNING}
    for node in nodes:
        for gpu in node["gpus"]:
            job = jobs.get(node["allocations"].get(str(gpu["index"]), ""))
            if job is None or policy.action == "off":
                gpu["idle_s"], gpu["idle"] = None, False
                continue
            gpu["idle_s"] = idle_seconds(job, gpu["index"], now)
            gpu["idle"] = gpu["idle_s"] >= policy.after_s


def notify_message(event: str, job: Job, decision: IdleDecision, policy: IdlePolicy) -> str:
    gpus = ",".join(map(str, decision.idle_gpus))
    where = f"GPU(s) {gpus} on {job.node}"
    below = f"utilization < {policy.threshold:.0%}"
    if event == EVENT_STOPPED:
        return (f"labq stopped job {job.id} of {job.user}: its {where} were idle for "
                f"{_minutes(decision.idle_for_s)} ({below}; {policy.describe()})")
    return (f"labq job {job.id} of {job.user}: {where} idle for {_minutes(decision.idle_for_s)} "
            f"({below}); {policy.describe()}")


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"
