"""A pending job's priority: Slurm's multifactor sum of weighted factors, each in [0, 1].

    total = w_fairshare * fairshare + w_age * age + w_size * size + w_qos * qos

- fairshare: the association's fair-share factor (`FairShareTable.factor`), clamped to [0, 1];
- age: the time waited over `max_age_s`, capped at 1 (Slurm's PriorityMaxAge);
- size: GPUs asked for over the GPUs of the largest node, capped at 1; like Slurm's default
  (no PriorityFavorSmall) it favours large jobs, which are the hardest to place;
- qos: the QOS's factor from a map; a QOS the map does not know gets 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple, Protocol


@dataclass(frozen=True)
class PriorityWeights:
    fairshare: float = 10000.0
    age: float = 1000.0
    size: float = 1000.0
    qos: float = 2000.0
    max_age_s: float = 7 * 86400.0


DEFAULT_WEIGHTS = PriorityWeights()
DEFAULT_QOS_FACTORS: Mapping[str, float] = MappingProxyType({"normal": 0.5, "scavenger": 0.0})


@dataclass(frozen=True)
class Priority:
    total: float
    factors: dict[str, float]  # each in [0, 1]: fairshare, age, size, qos
    weighted: dict[str, float]  # factor * weight


class Weighed(Protocol):
    """What the sum weighs of a job besides its fair share (a `snapshot.PendingJob` is one)."""

    @property
    def submitted_at(self) -> float: ...
    @property
    def gpus(self) -> int: ...
    @property
    def qos(self) -> str: ...


class _Job(NamedTuple):
    submitted_at: float
    gpus: int
    qos: str


class Weighing:
    """The weighted sum of one ranking (`now`, the weights, the largest node): `totals` is the
    one place the sum is written; `priority` gives the factors behind one job's total."""

    def __init__(self, weights: PriorityWeights, qos_factors: Mapping[str, float], now: float,
                 largest_node_gpus: int) -> None:
        self.weights, self.qos_factors = weights, qos_factors
        self.now, self.largest = now, largest_node_gpus

    def totals(self, jobs: Sequence[Weighed], fairshare: Sequence[float],
               runs: Iterable[Sequence[int]] | None = None) -> list[float]:
        """w_age * age + w_size * size + w_qos * qos + w_fairshare * fairshare of each job,
        `fairshare[i]` being job i's fair-share factor (clamped to [0, 1]).

        `runs` (fair now: each association's jobs, as positions in `jobs`, in its own order):
        every job is in one run, and each total is kept just below (1e-6) the total of the
        job before it in its run."""
        w = self.weights
        now, max_age, width = self.now, w.max_age_s, max(1, self.largest)
        age, size, fs_weight = w.age, w.size, w.fairshare
        qos = {name: w.qos * _unit(f) for name, f in self.qos_factors.items()}
        sized: dict[int, float] = {}  # the size term per GPU count
        out = [0.0] * len(jobs)
        capped = runs is not None
        inf = math.inf
        for run in runs if runs is not None else (range(len(jobs)),):
            previous = inf  # the run's previous total (stays inf where not `capped`)
            for k in run:
                job = jobs[k]
                # `age_factor`, written out: min(1, max(0, waited) / max_age), or 0 or 1
                # where max_age <= 0 (the same floats: x / max_age >= 1 where x >= max_age).
                waited = now - job.submitted_at
                if waited <= 0.0:
                    aged = 0.0
                elif waited >= max_age:
                    aged = 1.0
                else:
                    aged = waited / max_age
                big = sized.get(job.gpus)
                if big is None:
                    big = sized[job.gpus] = size * _unit(job.gpus / width)
                fs = fairshare[k]
                total = ((age * aged + big + qos.get(job.qos, 0.0))
                         + fs_weight * (fs if 0.0 <= fs <= 1.0 else _unit(fs)))
                if total >= previous:
                    total = previous - 1e-6
                if capped:
                    previous = total
                out[k] = total
        return out

    def priority(self, job: Weighed, fairshare: float) -> Priority:
        """The job's total (`totals`) and the factors behind it (what `labq priority` shows,
        as `sprio` would)."""
        w = self.weights
        factors = {
            "fairshare": _unit(fairshare),
            "age": age_factor(job.submitted_at, self.now, w.max_age_s),
            "size": size_factor(job.gpus, self.largest),
            "qos": _unit(self.qos_factors.get(job.qos, 0.0)),
        }
        weight_of = {"fairshare": w.fairshare, "age": w.age, "size": w.size, "qos": w.qos}
        weighted = {name: value * weight_of[name] for name, value in factors.items()}
        return Priority(self.totals((job,), (fairshare,))[0], factors, weighted)


def job_priority(
    *, fairshare: float, submitted_at: float, gpus: int, qos: str, now: float,
    largest_node_gpus: int, weights: PriorityWeights = DEFAULT_WEIGHTS,
    qos_factors: Mapping[str, float] = DEFAULT_QOS_FACTORS,
) -> Priority:
    """One job's priority and the factors behind it (`Weighing.priority`)."""
    return Weighing(weights, qos_factors, now, largest_node_gpus).priority(
        _Job(submitted_at, gpus, qos), fairshare)


def age_factor(submitted_at: float, now: float, max_age_s: float) -> float:
    """min(1, waited / max_age_s); a clock that went backwards counts as no wait.

    A `max_age_s` of 0 or less means every job that has waited at all is at the cap, as in
    Slurm where a wait is compared with PriorityMaxAge before dividing by it.
    """
    waited = max(0.0, now - submitted_at)
    if max_age_s <= 0:
        return 1.0 if waited > 0 else 0.0
    return _unit(waited / max_age_s)


def size_factor(gpus: int, largest_node_gpus: int) -> float:
    """min(1, gpus / largest node's GPUs); no node yet counts as a 1-GPU node."""
    return _unit(gpus / max(1, largest_node_gpus))


def _unit(x: float) -> float:
    """x clamped to [0, 1]; NaN counts as 0."""
    if math.isnan(x):
        return 0.0
    return min(1.0, max(0.0, x))
