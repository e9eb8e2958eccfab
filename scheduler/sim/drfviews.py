"""drf's view of the replay's queue: each waiting job keyed by progressive filling (its
tenant's GPUs held plus those of its jobs ahead of it, against the tenant's entitlement; see
`scheduler.sim.engine`). A mixin of the replay, whose state it reads (declared below)."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from scheduler.policy.snapshot import PendingJob
from scheduler.sim.classes import demand
from scheduler.sim.policies import drf_key
from scheduler.sim.trace import SimJob

if TYPE_CHECKING:
    from scheduler.sim.classes import ClassKey, Queued
    from scheduler.sim.exactcut import Fenwick


class DrfViews:
    """The policy's views of jobs under drf, kept per tenant until its keys change."""

    classes: dict[ClassKey, deque[Queued]]
    drf_views: dict[str, dict[str, PendingJob]]
    held: dict[str, int]
    entitled: dict[str, float]
    ahead: dict[str, Fenwick]
    rank: dict[str, int]

    def _drf_views(self, shown: Mapping[ClassKey, int]) -> list[PendingJob]:
        """The shown jobs under drf, keyed by progressive filling (see the module docstring).
        A tenant's keys change only when it starts, stops or queues a job, so they are kept
        until then."""
        pending: list[PendingJob] = []
        caches, classes = self.drf_views, self.classes
        for key, n in shown.items():
            tenant = key[0]
            cache = caches.get(tenant)
            if cache is None:
                cache = caches[tenant] = {}
            for _, job, _ in itertools.islice(classes[key], n):
                view = cache.get(job.id)
                pending.append(view if view is not None else self._drf_view(tenant, cache, job))
        return pending

    def _drf_jobs(self, tenant: str, jobs: Iterable[SimJob]) -> list[PendingJob]:
        """The views of `tenant`'s `jobs` under drf."""
        cache = self.drf_views.setdefault(tenant, {})
        return [cache.get(job.id) or self._drf_view(tenant, cache, job) for job in jobs]

    def _drf_submitted(self, tenant: str, job: SimJob) -> float:
        """The `submitted_at` of `tenant`'s `job` under drf, without making its view."""
        cache = self.drf_views.get(tenant)
        view = cache.get(job.id) if cache is not None else None
        if view is not None:
            return view.submitted_at
        gpus_ahead = self.ahead[tenant].prefix(self.rank[job.id] - 1)
        return drf_key(job.submit, self.held.get(tenant, 0) + gpus_ahead, self.entitled[tenant])

    def _drf_view(self, tenant: str, cache: dict[str, PendingJob], job: SimJob) -> PendingJob:
        gpus_ahead = self.ahead[tenant].prefix(self.rank[job.id] - 1)
        view = cache[job.id] = PendingJob(
            job.id, job.user, job.account, job.gpus,
            drf_key(job.submit, self.held.get(tenant, 0) + gpus_ahead, self.entitled[tenant]),
            job.gpu_type, time_limit_s=job.time_limit, nodes=job.nodes,
            demand=demand(job.cpus, job.mem))
        return view
