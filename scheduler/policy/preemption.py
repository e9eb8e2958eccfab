"""Preemption: scavenger jobs run on idle GPUs and give them back when normal work needs them.

Pure. After placement, each normal-QOS job of one node still blocked for GPUs (in priority
order) may claim the GPUs of running scavenger jobs: on the UP node of its type where the
fewest scavenger GPUs must be freed (youngest scavenger jobs first), if free + scavenger GPUs
there are enough. A job across K nodes claims them on as few nodes as it must: the nodes of
its type that already have its per-node GPUs free count first, then the nodes where the
fewest scavenger GPUs free enough. Each scavenger job is preempted for at most one waiting job
per cycle. A scavenger job across nodes is counted where its head node is (it frees more than
counted: never less). Where nodes report CPUs and memory (`rooms`: what the cycle left free on
each), the victims must free the job's CPUs and memory too: more of them are taken if need
be, and a node where they cannot is not used.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
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


Room = tuple[int, int]  # CPUs and MiB free on a node


def plan_preemptions(blocked: Iterable[PendingJob], nodes: Sequence[NodeView],
                     free_after: dict[str, int], running: Sequence[RunningJob],
                     rooms: Mapping[str, Room] | None = None) -> list[Preemption]:
    """`blocked`: jobs blocked for GPUs, in priority order; `free_after`: free GPUs per node
    once this cycle's starts are placed; `rooms`: CPUs and memory free per node then (None:
    not counted)."""
    by_node: dict[str, list[RunningJob]] = {}
    for held in running:
        if held.qos == SCAVENGER:
            by_node.setdefault(held.node, []).append(held)
    if not by_node:
        return []
    victims: dict[str, _Victims] = {}
    candidates: list[tuple[str, int, str]] = []  # (name, usable GPUs, model), by name
    views = {n.name: n for n in nodes}
    room = dict(rooms or {})
    for node in sorted((n for n in nodes if n.open and n.name in by_node), key=lambda n: n.name):
        # youngest first: they lose the least work
        ordered = sorted(by_node[node.name], key=lambda j: -j.ends_at)
        victims[node.name] = _Victims(ordered, [_healthy_count(v, node) for v in ordered],
                                      [node.need(v.demand, len(v.indices) or v.gpus)
                                       for v in ordered])
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
            taken = _across_nodes(job, nodes, free, candidates, victims, room)
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
            k = there.enough(bisect_left(there.cum, need),  # the fewest youngest that free
                             _short(views[name], job, job.gpus, room))  # enough, CPUs too
            if k is None:
                continue
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
        _give(room, views[node_name], chosen, job, job.gpus)
        plans.append(Preemption(job.id, node_name, tuple(v.id for v in chosen)))
    return plans


def _across_nodes(job: PendingJob, nodes: Sequence[NodeView], free: dict[str, int],
                  candidates: Sequence[tuple[str, int, str]], victims: dict[str, _Victims],
                  room: dict[str, Room]) -> list[Preemption]:
    """Preemptions that give a job across `job.nodes` nodes its per-node GPUs on each, taking
    the fewest scavenger GPUs (none if enough nodes fit already: placement decides); updates
    `free` and `victims` for the jobs after it. Empty if it cannot be done."""
    each = job.per_node
    views = {n.name: n for n in nodes}
    fitting = sorted(n.name for n in nodes if n.open and n.gpus_usable >= each
                     and free.get(n.name, 0) >= each and type_matches(job.gpu_type, n.gpu_model)
                     and _short(n, job, each, room) == (0, 0))
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
        k = there.enough(bisect_left(there.cum, max(need, 1)),
                         _short(views[name], job, each, room))
        if k is not None:
            costs.append((there.cum[k], name, k + 1))
    if len(costs) < missing:
        return []
    plans = []
    for name in fitting:
        free[name] -= each
        _give(room, views[name], [], job, each)
    for got, name, count in sorted(costs)[:missing]:
        chosen = victims[name].take(count)
        free[name] = free.get(name, 0) + got - each
        _give(room, views[name], chosen, job, each)
        plans.append(Preemption(job.id, name, tuple(v.id for v in chosen)))
    return plans


def _short(node: NodeView, job: PendingJob, gpus: int, room: Mapping[str, Room]) -> Room:
    """The CPUs and memory the job lacks on the node after the cycle (0, 0: none lacking, or
    not counted)."""
    if node.name not in room:
        return (0, 0)
    cpus, mem = node.need(job.demand, gpus)
    have_cpus, have_mem = room[node.name]
    return (max(0, cpus - have_cpus) if node.cpus else 0, max(0, mem - have_mem) if node.mem
            else 0)


def _give(room: dict[str, Room], node: NodeView, chosen: Sequence[RunningJob], job: PendingJob,
          gpus: int) -> None:
    """The node's room once the victims are gone and the job has its CPUs and memory."""
    if node.name not in room:
        return
    cpus, mem = room[node.name]
    for victim in chosen:
        freed = node.need(victim.demand, len(victim.indices) or victim.gpus)
        cpus, mem = cpus + freed[0], mem + freed[1]
    need = node.need(job.demand, gpus)
    room[node.name] = (cpus - need[0], mem - need[1])


class _Victims:
    """A node's scavenger jobs not yet chosen this cycle, youngest first, with the running
    sum of the healthy GPUs each frees: the fewest victims that free `need` GPUs are the
    prefix up to the first sum >= need."""

    __slots__ = ("cum", "jobs", "res")

    def __init__(self, jobs: list[RunningJob], frees: list[int], res: list[Room]) -> None:
        self.jobs = jobs
        self.cum = list(accumulate(frees))
        # the CPUs and memory the first k+1 free, as the GPUs in `cum`
        self.res = list(accumulate(res, lambda a, b: (a[0] + b[0], a[1] + b[1])))

    def enough(self, k: int, short: Room) -> int | None:
        """The fewest victims, k+1 at least, that free the CPUs and memory `short` too (their
        index, as `k`); None if all of them do not."""
        for i in range(k, len(self.jobs)):
            if self.res[i][0] >= short[0] and self.res[i][1] >= short[1]:
                return i
        return None

    def take(self, count: int) -> list[RunningJob]:
        chosen, self.jobs = self.jobs[:count], self.jobs[count:]
        freed, freed_res = self.cum[count - 1], self.res[count - 1]
        self.cum = [c - freed for c in self.cum[count:]]
        self.res = [(c - freed_res[0], m - freed_res[1]) for c, m in self.res[count:]]
        return chosen


def _healthy_count(victim: RunningJob, node: NodeView) -> int:
    """GPUs a victim frees for other jobs: its unhealthy GPUs stay out of use."""
    if not victim.indices:
        return victim.gpus
    return sum(1 for i in victim.indices if i not in node.unhealthy)
