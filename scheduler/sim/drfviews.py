"""drf's view of the replay's queue: each waiting job keyed by progressive filling (its
tenant's GPUs held plus those of its jobs ahead of it, against the tenant's entitlement; see
`scheduler.sim.engine`). A mixin of the replay, whose state it reads (declared below)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from scheduler.policy.snapshot import PendingJob
from scheduler.resources import Demand
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
        pending = []
        for key, n in shown.items():
            q = self.classes[key]
            pending += self._drf_jobs(key[0], [q[i][1] for i in range(n)])
        return pending

    def _drf_jobs(self, tenant: str, jobs: Iterable[SimJob]) -> list[PendingJob]:
        """The views of `tenant`'s `jobs` under drf."""
        cache = self.drf_views.setdefault(tenant, {})
        held, entitled, ahead = self.held.get(tenant, 0), self.entitled[tenant], self.ahead
        out = []
        for job in jobs:
            view = cache.get(job.id)
            if view is None:
                gpus_ahead = ahead[tenant].prefix(self.rank[job.id] - 1)
                view = cache[job.id] = PendingJob(
                    job.id, job.user, job.account, job.gpus,
                    drf_key(job.submit, held + gpus_ahead, entitled), job.gpu_type,
                    time_limit_s=job.time_limit, nodes=job.nodes,
                    demand=Demand(cpus=job.cpus, mem=job.mem))
            out.append(view)
        return out
