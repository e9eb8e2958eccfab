"""The replay's queue in classes: the waiting jobs of one account, user, GPU count, GPU
type, node count, CPUs and memory, which differ only in submit time and time limit (see
`scheduler.sim.engine`), each class in the policy's order of its own jobs."""

from __future__ import annotations

import functools

from scheduler.policy.snapshot import PendingJob
from scheduler.resources import Demand
from scheduler.sim.trace import SimJob

ClassKey = tuple[str, str, int, str | None, int, int, int]  # (account, user, GPUs, type,
# nodes, CPUs, memory)
ClassRank = tuple[float, float, int, str]  # a job's place in its class
Queued = tuple[ClassRank, SimJob, PendingJob]  # a queued job, and the view the policy sees


def class_key(job: SimJob) -> ClassKey:
    return (job.account, job.user, job.gpus, job.gpu_type, job.nodes, job.cpus, job.mem)


def rank_of(item: Queued) -> ClassRank:
    return item[0]


@functools.cache
def demand(cpus: int, mem: int) -> Demand:
    """One `Demand` per ask: the policy looks jobs' asks up in dicts many times a call, and an
    object is found equal to itself at once."""
    return Demand(cpus=cpus, mem=mem)
