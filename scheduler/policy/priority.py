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
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


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


def job_priority(
    *, fairshare: float, submitted_at: float, gpus: int, qos: str, now: float,
    largest_node_gpus: int, weights: PriorityWeights = DEFAULT_WEIGHTS,
    qos_factors: Mapping[str, float] = DEFAULT_QOS_FACTORS,
) -> Priority:
    """The job's priority and the factors behind it (what `labq` shows as `sprio` would)."""
    factors = {
        "fairshare": _unit(fairshare),
        "age": age_factor(submitted_at, now, weights.max_age_s),
        "size": size_factor(gpus, largest_node_gpus),
        "qos": _unit(qos_factors.get(qos, 0.0)),
    }
    weight_of = {"fairshare": weights.fairshare, "age": weights.age,
                 "size": weights.size, "qos": weights.qos}
    weighted = {name: value * weight_of[name] for name, value in factors.items()}
    return Priority(total=sum(weighted.values()), factors=factors, weighted=weighted)


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


def priority_total(
    *, fairshare: float, submitted_at: float, gpus: int, qos: str, now: float,
    largest_node_gpus: int, weights: PriorityWeights = DEFAULT_WEIGHTS,
    qos_factors: Mapping[str, float] = DEFAULT_QOS_FACTORS,
) -> float:
    """`job_priority(...).total` without building the breakdown (the cycle's hot path)."""
    return (weights.fairshare * _unit(fairshare)
            + weights.age * age_factor(submitted_at, now, weights.max_age_s)
            + weights.size * size_factor(gpus, largest_node_gpus)
            + weights.qos * _unit(qos_factors.get(qos, 0.0)))
