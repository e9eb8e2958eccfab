"""One scheduling cycle: order the queue → place what fits → say why the rest waits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from scheduler.model import Reason
from scheduler.policy.placement import Placement, best_fit, fits_type
from scheduler.policy.snapshot import NodeView, PendingJob, Snapshot

QOS_RANK = {"normal": 0, "scavenger": 1}


@dataclass(frozen=True)
class Start:
    job_id: str
    node: str
    indices: tuple[int, ...]


@dataclass
class Decisions:
    starts: list[Start] = field(default_factory=list)
    reasons: dict[str, list[Reason]] = field(default_factory=dict)


def order_queue(pending: tuple[PendingJob, ...]) -> list[PendingJob]:
    """Priority order. First come, first served within a QOS (fair share replaces this)."""
    return sorted(pending, key=lambda j: (QOS_RANK.get(j.qos, 0), j.submitted_at, _id_key(j.id)))


def schedule(snapshot: Snapshot) -> Decisions:
    """Decide which pending jobs start now and where, and why every other one waits.

    1. order the queue; 2. for each job, best-fit it on the GPUs still free; a job that fits
    starts (its GPUs are taken from the local view); 3. a job that does not fit gets every
    reason it waits: the resources it lacks, or that no node has its GPU type, and its place
    in line behind the jobs ahead of it that also wait.
    """
    nodes = {n.name: n for n in snapshot.nodes}
    decisions = Decisions()
    blocked_ahead = 0
    for job in order_queue(snapshot.pending):
        placement = best_fit(job, nodes.values())
        if placement is not None:
            decisions.starts.append(Start(job.id, placement.node, placement.indices))
            nodes[placement.node] = _take(nodes[placement.node], placement)
            continue
        reasons = _why_waiting(job, snapshot.nodes, nodes.values())
        if blocked_ahead:
            reasons.append(Reason("Priority", f"{blocked_ahead} job(s) ahead in line also wait"))
        decisions.reasons[job.id] = reasons
        blocked_ahead += 1
    return decisions


def _take(node: NodeView, placement: Placement) -> NodeView:
    taken = set(placement.indices)
    return replace(node, free=tuple(i for i in node.free if i not in taken))


def _why_waiting(
    job: PendingJob, all_nodes: tuple[NodeView, ...], free_now: Iterable[NodeView]
) -> list[Reason]:
    typed = [n for n in all_nodes if fits_type(job, n)]
    kind = job.gpu_type or "any type"
    if not typed:
        if job.gpu_type is None:
            return [Reason("Resources", "no GPU node has registered yet")]
        return [Reason("GpuTypeUnavailable", f"no node has GPUs of type {job.gpu_type}")]
    up = [n for n in typed if n.up]
    if not up:
        if job.gpu_type is None:
            return [Reason("Resources", "every GPU node is down")]
        return [Reason("GpuTypeUnavailable", f"every node with {kind} GPUs is down")]
    if max(n.gpus_total for n in up) < job.gpus:
        return [Reason("Resources", f"needs {job.gpus} GPUs ({kind}) on one node; "
                                    f"no node that is up has that many")]
    most_free = max((len(n.free) for n in free_now if n.up and fits_type(job, n)), default=0)
    return [Reason("Resources", f"needs {job.gpus} GPUs ({kind}) on one node; "
                                f"at most {most_free} free now")]


def _id_key(job_id: str) -> tuple[int, str]:
    return (int(job_id), job_id) if job_id.isdigit() else (1 << 62, job_id)
