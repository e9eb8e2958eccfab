"""`/metrics`: a collector built fresh at each scrape from the store (no stale series).

Every coordinator serves it, leader or not; what it shows comes from the store (read once per
scrape: nodes, active and waiting jobs, the usage hash, the stats hash, the accounts), except
the scheduling cycle figures, which are this process's own. docs/metrics.md is the contract:
names, types and labels as written there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler.accounts import Accounts
from scheduler.config import Settings
from scheduler.idle import IdlePolicy
from scheduler.metrics_families import (
    counter_families,
    gpu_families,
    job_families,
    share_families,
    usage_families,
    wait_family,
)
from scheduler.metrics_hist import LocalHistogram
from scheduler.model import Job, Node
from scheduler.store import Store

log = logging.getLogger(__name__)


class MetricsSource(Protocol):
    """What the serving coordinator tells about itself (`Coordinator` is one)."""

    settings: Settings
    last_cycle_s: float
    cycle_durations: LocalHistogram

    @property
    def is_leader(self) -> bool: ...


@dataclass
class ClusterView:
    """Everything one scrape shows, read from the store once."""

    now: float
    nodes: list[Node]
    active: list[Job]
    waiting: list[Job]  # PENDING and HELD (budget or a person)
    usage: dict[str, str]  # the raw usage hash
    stats: dict[str, str]  # the raw stats hash (persisted counters)
    accounts: Accounts
    settings: Settings

    @property
    def idle_policy(self) -> IdlePolicy:
        return IdlePolicy.from_settings(self.settings)


async def read_view(store: Store, settings: Settings, now: float) -> ClusterView:
    return ClusterView(
        now=now, nodes=await store.nodes(), active=await store.active_jobs(),
        waiting=await store.waiting_jobs(), usage=await store.usage_hash(),
        stats=await store.stats(), accounts=await store.accounts(), settings=settings)


class ClusterCollector(Collector):
    def __init__(self, view: ClusterView, source: MetricsSource) -> None:
        self.view = view
        self.source = source

    def collect(self) -> Iterator[Metric]:
        v = self.view
        groups: list[tuple[str, Callable[[], Iterable[Metric]]]] = [
            ("GPUs", lambda: gpu_families(v.nodes, v.active, v.idle_policy, v.now)),
            ("jobs", lambda: job_families(v.active, v.waiting, v.now)),
            ("admission waits", lambda: [wait_family(v.stats)]),
            ("counters", lambda: counter_families(v.stats)),
            ("usage", lambda: usage_families(v.usage)),
            ("fair share and budgets", lambda: share_families(
                v.accounts, v.usage, v.waiting, v.settings, v.now)),
        ]
        for what, build in groups:
            # One broken group (say, a bad priority_weights setting) must not blank the rest.
            try:
                yield from list(build())
            except Exception:
                log.exception("metrics: cannot build the %s series; the others are served", what)
        s = self.source
        yield s.cycle_durations.family("labq_scheduling_cycle_duration_seconds",
                                       "Duration of each scheduling cycle of this coordinator")
        yield _gauge("labq_scheduling_cycle_last_seconds", "Duration of the last scheduling cycle",
                     s.last_cycle_s)
        yield _gauge("labq_coordinator_leader", "1 if this coordinator leads",
                     1.0 if s.is_leader else 0.0)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


async def render(store: Store, source: MetricsSource, now: float | None = None) -> bytes:
    view = await read_view(store, source.settings, time.time() if now is None else now)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(view, source))
    return generate_latest(registry)
