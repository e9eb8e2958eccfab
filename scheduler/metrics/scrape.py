"""`/metrics`: a collector built fresh at each scrape from the store (no stale series).

Every coordinator serves it, leader or not; what it shows comes from the store (read once per
scrape into the `ClusterState` every reader builds from: nodes, active jobs, the accounts,
the usage hash, and for /metrics the waiting jobs' rows and the stats hash), except
the scheduling cycle figures, which are this process's own. docs/metrics.md is the contract:
names, types and labels as written there.

A scrape while the store does not answer still answers: this process's own series, with
`labq_store_up` 0 (an alert says so), rather than an error that looks like a coordinator down.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from typing import Protocol

import redis.exceptions as redis_errors
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler.cluster.read import ClusterState, read_cluster
from scheduler.config import Settings
from scheduler.coordinator.idle import IdlePolicy
from scheduler.metrics.families import (
    counter_families,
    gpu_families,
    job_families,
    known_names,
    share_families,
    usage_families,
    user_gpu_families,
    wait_family,
)
from scheduler.metrics.hist import LocalHistogram
from scheduler.policy.fairengine import FairShare
from scheduler.policy.fairshare import FairShareTable
from scheduler.store import Store

log = logging.getLogger(__name__)


class MetricsSource(Protocol):
    """What the serving coordinator tells about itself (`Coordinator` is one)."""

    settings: Settings
    last_cycle_s: float
    cycle_durations: LocalHistogram
    # The fair-share engine /metrics ranks with (its own: the cycle's is the leader's).
    metrics_fair: FairShare

    @property
    def is_leader(self) -> bool: ...

    def fresh_fairshare(self, now: float) -> FairShareTable | None:
        """The last cycle's fair-share table (None: not leading, or not recent)."""
        ...


async def read_view(store: Store, settings: Settings, now: float) -> ClusterState:
    """What one scrape shows: the cluster read (`cluster.read.read_cluster`) with the waiting
    jobs' rows, the stats and the store's memory. `settings`: the source's (unused here;
    kept for callers that pass them)."""
    return await read_cluster(store, now, metrics=True)


class ClusterCollector(Collector):
    def __init__(self, state: ClusterState, source: MetricsSource) -> None:
        self.state = state
        self.source = source

    def collect(self) -> Iterator[Metric]:
        v, settings = self.state, self.source.settings
        active = [j for j in v.active if j.state.holds_gpus()]
        # Every known account and user has its counters, from 0: a new cluster's dashboards
        # show 0, not "No data".
        known = known_names(v.accounts, [*active, *v.waiting], v.usage,
                            settings.default_account)
        idle_policy = IdlePolicy.from_settings(settings)
        groups: list[tuple[str, Callable[[], Iterable[Metric]]]] = [
            ("GPUs", lambda: gpu_families(v.nodes, active, idle_policy, v.now)),
            ("GPUs per user", lambda: user_gpu_families(v.nodes, active, known)),
            ("jobs", lambda: job_families(active, v.waiting, known, v.now)),
            ("admission waits", lambda: [wait_family(v.stats, known)]),
            ("counters", lambda: counter_families(v.stats, known)),
            ("usage", lambda: usage_families(v.usage, known)),
            ("fair share and budgets", lambda: share_families(
                v.accounts, v.usage, v.waiting, settings, v.now,
                self.source.fresh_fairshare(v.now), self.source.metrics_fair)),
        ]
        for what, build in groups:
            # One broken group (say, a bad priority_weights setting) must not blank the rest.
            try:
                yield from list(build())
            except Exception:
                log.exception("metrics: cannot build the %s series; the others are served", what)
        yield from local_families(self.source, store_up=True)
        used, ceiling = v.store_memory
        yield _gauge("labq_store_memory_used_bytes", "Memory the store (Redis/Valkey) uses", used)
        yield _gauge("labq_store_memory_max_bytes", "The store's maxmemory (0: no ceiling); at "
                     "it, writes are refused (noeviction)", ceiling)


def local_families(s: MetricsSource, store_up: bool) -> Iterator[Metric]:
    """This process's own series: its cycles, whether it leads, its build, and whether the
    store answered this scrape."""
    yield s.cycle_durations.family("labq_scheduling_cycle_duration_seconds",
                                   "Duration of each scheduling cycle of this coordinator")
    yield _gauge("labq_scheduling_cycle_last_seconds", "Duration of the last scheduling cycle",
                 s.last_cycle_s)
    yield _gauge("labq_coordinator_leader", "1 if this coordinator leads",
                 1.0 if s.is_leader else 0.0)
    yield _gauge("labq_store_up", "1 if the store (Redis/Valkey) answered this scrape",
                 1.0 if store_up else 0.0)
    info = GaugeMetricFamily("labq_build_info", "Always 1: this coordinator's labq and Python "
                             "versions", labels=["version", "python"])
    info.add_metric([labq_version(), platform.python_version()], 1.0)
    yield info


def labq_version() -> str:
    try:
        return metadata.version("labq")
    except metadata.PackageNotFoundError:
        return "unknown"


class StoreDownCollector(Collector):
    """What a scrape serves while the store does not answer."""

    def __init__(self, source: MetricsSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from local_families(self.source, store_up=False)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


class PublicCollector(Collector):
    """The series anyone may read under private_data: no sample with a user in its labels
    (per-account and cluster series stay; an account budget's row has user="")."""

    def __init__(self, inner: Collector) -> None:
        self.inner = inner

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            family.samples = [s for s in family.samples if not s.labels.get("user")]
            yield family


async def render(store: Store, source: MetricsSource, now: float | None = None,
                 private: bool = False) -> bytes:
    """One scrape (`private`: without per-user series, for a scraper not holding the metrics
    token). Building and writing out the series is pure CPU (about 0.5 s for 60,000 series):
    it runs in a thread so that the API and the cycle on this loop are not held."""
    registry = CollectorRegistry(auto_describe=False)
    collector: Collector
    try:
        state = await read_view(store, source.settings, time.time() if now is None else now)
        collector = ClusterCollector(state, source)
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        # (BusyLoadingError, a store loading its data, is a ConnectionError.)
        log.warning("metrics: the store did not answer (%s): serving labq_store_up 0",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        collector = StoreDownCollector(source)
    registry.register(PublicCollector(collector) if private else collector)
    return await asyncio.to_thread(generate_latest, registry)
