"""When the CPUs and memory a job needs are free on a node, for backfill's timeline.

Each UP node that reports its CPUs or memory keeps what is free now and a list of changes
in time: a running job's end gives back what it was given there; a job the timeline plans
(started this cycle, reserved, or estimated) takes its share from its start and gives it back
at its end. `ready_at` answers the earliest time from which a job's CPUs and memory stay free
(every later change included: a planned job is never pushed past by a later one's start,
which keeps the answer conservative and simple). A node that reports neither is not counted
(always ready); a need larger than the node's total is never ready (infinity).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from scheduler.policy.snapshot import NodeView, RunningJob
from scheduler.resources import Demand

INF = math.inf
Change = tuple[float, int, int]  # (when, CPUs given back (+) or taken (-), MiB likewise)


class ResourceTimeline:
    """CPUs and memory of the UP nodes over time (see the module's docstring)."""

    def __init__(self, nodes: Iterable[NodeView], running: Iterable[RunningJob],
                 now: float) -> None:
        self.nodes = {n.name: n for n in nodes if n.open and (n.cpus or n.mem)}
        self.now = now
        self.changes: dict[str, list[Change]] = {name: [] for name in self.nodes}
        for job in running:
            for name, indices in job.parts:
                node = self.nodes.get(name)
                if node is not None and job.ends_at != INF:
                    cpus, mem = node.need(job.demand, len(indices))
                    self.changes[name].append((max(job.ends_at, now), cpus, mem))

    @property
    def counted(self) -> bool:
        return bool(self.nodes)

    def need(self, name: str, demand: Demand, gpus: int) -> tuple[int, int]:
        node = self.nodes.get(name)
        return (0, 0) if node is None else node.need(demand, gpus)

    def take(self, name: str, demand: Demand, gpus: int, start: float, until: float) -> None:
        """A job planned on the node from `start` to `until` holds its CPUs and memory."""
        cpus, mem = self.need(name, demand, gpus)
        if (cpus or mem) and name in self.changes:
            self.changes[name] += [(max(start, self.now), -cpus, -mem), (until, cpus, mem)]

    def ready_at(self, name: str, demand: Demand, gpus: int, after: float) -> float:
        """The earliest time >= `after` from which the node keeps the job's CPUs and memory
        free (`after` itself for a node not counted; infinity if it never does)."""
        node = self.nodes.get(name)
        if node is None:
            return after
        cpus, mem = node.need(demand, gpus)
        if (node.cpus and cpus > node.cpus) or (node.mem and mem > node.mem):
            return INF
        free_cpus, free_mem = node.cpus_free, node.mem_free
        points: list[tuple[float, int, int]] = []  # (time, free CPUs, free MiB) from then on
        for when, d_cpus, d_mem in sorted(self.changes[name]):
            if when == INF:
                break
            free_cpus, free_mem = free_cpus + d_cpus, free_mem + d_mem
            points.append((when, free_cpus, free_mem))

        def fits(have_cpus: int, have_mem: int) -> bool:
            return (not node.cpus or cpus <= have_cpus) and (not node.mem or mem <= have_mem)

        # walk back from the end: the earliest point after which every later one fits
        ready = INF
        for when, have_cpus, have_mem in reversed(points):
            if not fits(have_cpus, have_mem):
                break
            ready = when
        if fits(node.cpus_free, node.mem_free) and all(fits(c, m) for _, c, m in points):
            ready = self.now
        return INF if ready == INF else max(after, ready)
