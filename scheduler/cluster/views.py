"""Stored records -> the policy's snapshot views (no I/O)."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from scheduler.model import Job, Node, NodeState
from scheduler.policy import NodeView, PendingJob, RunningJob
from scheduler.resources import Demand


def running_view(job: Job, now: float) -> RunningJob:
    started = job.started_at or now  # STARTING: counts from now
    rest = tuple((str(node), tuple(indices)) for node, indices in job.parts[1:])
    return RunningJob(job.id, job.user, job.account, job.gpus, job.node or "",
                      tuple(job.gpu_indices), started + job.time_limit_s, job.qos,
                      job.gpus * job.billing_weight, rest, job.demand)


def node_view(node: Node, billing_weight: float = 1.0, avoid_foreign: bool = True,
              running: Iterable[RunningJob] = ()) -> NodeView:
    """The policy's view of a node. A GPU running a process labq did not start counts as
    unhealthy when `avoid_foreign`: no job gets it, nothing plans on it, until it is free.
    Its free CPUs and memory: what its agent reports less what the `running` jobs (those
    holding GPUs, anywhere) were given here, each resolved as at its placement."""
    cpus = mem = 0
    for job in running:
        for name, indices in job.parts:
            if name == node.name:
                got = job.demand.on(len(indices), node.gpus_total, node.cpus, node.memory_mb)
                cpus, mem = cpus + got[0], mem + got[1]
    return NodeView(node.name, node.gpu_model, node.gpus_total,
                    tuple(node.free_indices(avoid_foreign)), up=node.state == NodeState.UP,
                    billing_weight=billing_weight,
                    unhealthy=tuple(sorted(node.unusable(avoid_foreign))),
                    foreign=tuple(sorted(node.unusable(avoid_foreign) - node.unusable(False))),
                    drained=(node.drain_reason or "drained") if node.drained else "",
                    cpus=node.cpus, mem=node.memory_mb, cpus_free=node.cpus - cpus,
                    mem_free=node.memory_mb - mem)


_DEMANDS: dict[Demand, Demand] = {}  # each distinct demand once (most jobs ask the same)


def pending_view(job: Job) -> PendingJob:
    """The policy's view of a waiting job. The leader keeps one per waiting job between
    cycles: the names many jobs share (user, account, QoS, GPU type) and their demands are
    kept once, not once per job as each record's read gave them."""
    demand = job.demand
    if len(_DEMANDS) < 10_000:
        demand = _DEMANDS.setdefault(demand, demand)
    return PendingJob(job.id, sys.intern(job.user), sys.intern(job.account), job.gpus,
                      job.submitted_at, job.gpu_type and sys.intern(job.gpu_type),
                      sys.intern(job.qos), job.time_limit_s, job.nodes, demand)
