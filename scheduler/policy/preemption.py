"""Preemption: scavenger jobs run on idle GPUs and give them back when normal work needs them.

Pure. After placement, each normal-QOS job still blocked for GPUs (in priority order) may claim
the GPUs of running scavenger jobs: on the UP node of its type where the fewest scavenger GPUs
must be freed (youngest scavenger jobs first), if free + scavenger GPUs there are enough. Each
scavenger job is preempted for at most one waiting job per cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scheduler.policy.placement import fits_type
from scheduler.policy.snapshot import NodeView, PendingJob, RunningJob

SCAVENGER = "scavenger"


@dataclass(frozen=True)
class Preemption:
    for_job: str
    node: str
    victims: tuple[str, ...]  # running scavenger job ids to stop and requeue


def plan_preemptions(blocked: Iterable[PendingJob], nodes: Sequence[NodeView],
                     free_after: dict[str, int], running: Sequence[RunningJob]
                     ) -> list[Preemption]:
    """`blocked`: jobs blocked for GPUs, in priority order; `free_after`: free GPUs per node
    once this cycle's starts are placed."""
    by_node: dict[str, list[RunningJob]] = {}
    for held in running:
        if held.qos == SCAVENGER:
            by_node.setdefault(held.node, []).append(held)
    for victims in by_node.values():  # youngest first: they lose the least work
        victims.sort(key=lambda j: -j.ends_at)
    taken: set[str] = set()
    plans = []
    free = dict(free_after)
    candidates = sorted((n for n in nodes if n.up and n.name in by_node), key=lambda n: n.name)
    untaken = sum(len(v) for v in by_node.values())
    smallest_failed: dict[str | None, int] = {}  # victims only get fewer: bigger jobs fail too
    for job in blocked:
        if untaken == 0:
            break
        if job.qos == SCAVENGER or job.gpus >= smallest_failed.get(job.gpu_type, job.gpus + 1):
            continue
        best: tuple[int, str, list[RunningJob]] | None = None
        for node in candidates:
            if node.gpus_usable < job.gpus or not fits_type(job, node):
                continue
            need = job.gpus - free.get(node.name, 0)
            if need <= 0:
                continue  # it fits already: placement or a reservation decides
            chosen, got = [], 0
            for victim in by_node[node.name]:
                if got >= need:
                    break
                if victim.id not in taken:
                    chosen.append(victim)
                    got += _healthy_count(victim, node)
            if got >= need and (best is None or (got, node.name) < (best[0], best[1])):
                best = (got, node.name, chosen)
                if got == need:
                    break  # nothing frees fewer GPUs, and later nodes sort after this one
        if best is None:
            smallest_failed[job.gpu_type] = job.gpus
            continue
        got, node_name, chosen = best
        taken.update(v.id for v in chosen)
        untaken -= len(chosen)
        free[node_name] = free.get(node_name, 0) + got - job.gpus  # what is left over
        plans.append(Preemption(job.id, node_name, tuple(v.id for v in chosen)))
    return plans


def _healthy_count(victim: RunningJob, node: NodeView) -> int:
    """GPUs a victim frees for other jobs: its unhealthy GPUs stay out of use."""
    if not victim.indices:
        return victim.gpus
    return sum(1 for i in victim.indices if i not in node.unhealthy)
