"""Histograms built at scrape time from bucket counts (kept in-process or in the store)."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# Bounds in seconds, as docs/metrics.md fixes them (+Inf is implicit).
CYCLE_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                                   60)


def cumulative(bounds: Sequence[float], counts: Mapping[float, float]) -> list[tuple[str, float]]:
    """Prometheus buckets from per-bucket counts keyed by upper bound (math.inf for +Inf).

    A count kept under a bound that is not in `bounds` (the bounds changed since) counts in
    every bucket at or above it, so the buckets stay cumulative and +Inf is the total.
    """
    out = []
    for bound in (*bounds, math.inf):
        out.append((floatToGoString(bound), sum(n for le, n in counts.items() if le <= bound)))
    return out


class LocalHistogram:
    """A histogram of one process's own observations (e.g. its scheduling cycles)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation)
        per_bound = dict(zip((*self.bounds, math.inf), self.counts, strict=True))
        family.add_metric([], cumulative(self.bounds, per_bound), self.total)
        return family
