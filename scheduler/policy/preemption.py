"""Preemption: scavenger jobs run on idle GPUs and give them back when normal work needs them.

Pure. After placement, each normal-QOS job of one node still blocked for GPUs (in priority
order) may claim the GPUs of running scavenger jobs: on the UP node of its type where the
fewest scavenger GPUs must be freed (youngest scavenger jobs first), if free + scavenger GPUs
there are enough. A job across K nodes claims them on as few nodes as it must: the nodes of
its type that already have its per-node GPUs free count first, then the nodes where the
fewest scavenger GPUs free enough. Each scavenger job is preempted for at most one waiting job
per cycle. A scavenger job across nodes is counted where its head node is (it frees more than
counted: never less).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from scheduler.policy.placement import type_matches
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
    if not by_node:
        return []
    victims: dict[str, _Victims] = {}
    candidates: list[tuple[str, int, str]] = []  # (name, usable GPUs, model), by name
    for node in sorted((n for n in nodes if n.open and n.name in by_node), key=lambda n: n.name):
        # youngest first: they lose the least work
        ordered = sorted(by_node[node.name], key=lambda j: -j.ends_at)
        victims[node.name] = _Victims(ordered, [_healthy_count(v, node) for v in ordered])
        candidates.append((node.name, node.gpus_usable, node.gpu_model))
    typed: dict[str | None, list[tuple[str, int, _Victims]]] = {}
    plans = []
    free = dict(free_after)
    untaken = sum(len(v.jobs) for v in victims.values())
    smallest_failed: dict[str | None, int] = {}  # victims only get fewer: bigger jobs fail too
    for job in blocked:
        if untaken == 0:
            break
        if job.qos == SCAVENGER:
            continue
        if job.nodes > 1:
            taken = _across_nodes(job, nodes, free, candidates, victims)
            untaken -= sum(len(plan.victims) for plan in taken)
            plans += taken
            continue
        if job.gpus >= smallest_failed.get(job.gpu_type, job.gpus + 1):
            continue
        if job.gpu_type not in typed:
            typed[job.gpu_type] = [(name, usable, victims[name])
                                   for name, usable, model in candidates
                                   if type_matches(job.gpu_type, model)]
        best: tuple[int, str, _Victims, int] | None = None
        for name, usable, there in typed[job.gpu_type]:
            if usable < job.gpus:
                continue
            need = job.gpus - free.get(name, 0)
            if need <= 0 or not there.cum or there.cum[-1] < need:
                continue  # it fits already (placement or a reservation decides), or cannot
            k = bisect_left(there.cum, need)  # the fewest youngest victims that free enough
            got = there.cum[k]
            if best is None or (got, name) < (best[0], best[1]):
                best = (got, name, there, k + 1)
                if got == need:
                    break  # nothing frees fewer GPUs, and later nodes sort after this one
        if best is None:
            smallest_failed[job.gpu_type] = job.gpus
            continue
        got, node_name, there, count = best
        chosen = there.take(count)
        untaken -= count
        free[node_name] = free.get(node_name, 0) + got - job.gpus  # what is left over
        plans.append(Preemption(job.id, node_name, tuple(v.id for v in chosen)))
    return plans


def _across_nodes(job: PendingJob, nodes: Sequence[NodeView], free: dict[str, int],
                  candidates: Sequence[tuple[str, int, str]], victims: dict[str, _Victims]
                  ) -> list[Preemption]:
    """Preemptions that give a job across `job.nodes` nodes its per-node GPUs on each, taking
    the fewest scavenger GPUs (none if enough nodes fit already: placement decides); updates
    `free` and `victims` for the jobs after it. Empty if it cannot be done."""
    each = job.per_node
    fitting = sorted(n.name for n in nodes if n.open and n.gpus_usable >= each
                     and free.get(n.name, 0) >= each and type_matches(job.gpu_type, n.gpu_model))
    missing = job.nodes - len(fitting)
    if missing <= 0:
        return []  # it fits already (placement or a reservation decides)
    costs = []  # (GPUs freed, node, victims to take) where victims make room
    for name, usable, model in candidates:
        there = victims[name]
        if name in fitting or usable < each or not type_matches(job.gpu_type, model):
            continue
        need = each - free.get(name, 0)
        if not there.cum or there.cum[-1] < need:
            continue
        k = bisect_left(there.cum, need)
        costs.append((there.cum[k], name, k + 1))
    if len(costs) < missing:
        return []
    plans = []
    for name in fitting:
        free[name] -= each
    for got, name, count in sorted(costs)[:missing]:
        chosen = victims[name].take(count)
        free[name] = free.get(name, 0) + got - each
        plans.append(Preemption(job.id, name, tuple(v.id for v in chosen)))
    return plans


class _Victims:
    """A node's scavenger jobs not yet chosen this cycle, youngest first, with the running
    sum of the healthy GPUs each frees: the fewest victims that free `need` GPUs are the
    prefix up to the first sum >= need."""

    __slots__ = ("cum", "jobs")

    def __init__(self, jobs: list[RunningJob], frees: list[int]) -> None:
        self.jobs = jobs
        self.cum = list(accumulate(frees))

    def take(self, count: int) -> list[RunningJob]:
        chosen, self.jobs = self.jobs[:count], self.jobs[count:]
        freed = self.cum[count - 1]
        self.cum = [c - freed for c in self.cum[count:]]
        return chosen


def _healthy_count(victim: RunningJob, node: NodeView) -> int:
    """GPUs a victim frees for other jobs: its unhealthy GPUs stay out of use."""
    if not victim.indices:
        return victim.gpus
    return sum(1 for i in victim.indices if i not in node.unhealthy)
