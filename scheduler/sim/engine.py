"""Discrete-event replay of a trace in virtual time through the live policy.

Events are submissions, job ends and (under `tiresias-las`) a running job's crossing of a
queue threshold. At each event time (simultaneous events batched) the engine builds a
`Snapshot` and calls `schedule()`, unless no start is possible (no node has as many free GPUs
as the smallest pending job needs). A job runs for its true duration, but never past its time
limit (stopped there, as the coordinator times a job out); the policy sees the limit
(`ends_at` = start + limit). A preempted job is requeued with its original submit time, one
`Run` per run; it restarts from scratch (the live policy's scavenger preemption), or, under
`tiresias-las`, resumes with its remaining duration (see `scheduler.sim.tiresias`).

Speed. The queue of a saturated replay holds tens of thousands of jobs, and the policy is
O(queue) per call. Jobs of one class (account, user, GPUs, GPU type) differ only in submit
time (and time limit), and every policy here orders a class by submit time (fair now: by time
limit, then submit time, its order of a user's own jobs), so the global priority order is a
merge of the classes. The snapshot holds the first jobs of each class that the free GPUs
could start (free GPUs // the class's GPUs) and one more, which may take the backfill
reservation; just the first one if no node has that many GPUs free (it cannot start, but may
take the reservation). A class's later jobs cannot start in this call unless all those ahead
of them in the class do, nor take the reservation before them. Under fair now a job's priority
also depends on the jobs ahead of it (its user's own, and its tenant's at a lower level: see
`scheduler.policy.fairnow`), which the cut leaves out: each call, `_fair_now_exact` computes
every shown job's levels on the cut and on the whole queue; where they differ in a way that
could matter (the whole queue would rank the job higher, or it started or took the
reservation), the call is made again with every job of its tenant up to its level shown
(`_fair_now_closure`). In classes kept in submit order (`labq-fairtree`, `slurm-classic`,
`fifo-backfill`, `drf`), a job deeper in a class could backfill before the reservation where
its class-mates ahead cannot (a shorter time limit): such jobs are added and the call made
again (`_deeper_backfill`). So every call starts what it would with the whole queue shown
(`show_all=True`; `tests/test_sim_matches_coordinator.py` checks it, and the same starts as the
live coordinator). When a call starts every job shown of a class that has more, the engine
calls again at the same time.

`drf` is progressive filling within a call: a job's key is its tenant's GPUs held plus the
GPUs of all its tenant's jobs ahead of it in submit order (shown or not), over the tenant's
entitled GPUs, so freed GPUs are shared out max-min rather than all to one tenant.

Usage for fair share: billed GPU-seconds per (account, user), accrued continuously while a job
runs and decayed with `half_life` in virtual time (`scheduler.sim.usage`), refreshed every
`calc_period` of virtual time.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from scheduler.policy.cycle import Decisions, schedule
from scheduler.policy.fairnow import FAIR_NOW, waterfill
from scheduler.policy.placement import type_matches
from scheduler.policy.snapshot import (
    DEFAULT_PAST_WEIGHT,
    NodeView,
    PendingJob,
    RunningJob,
    Snapshot,
)
from scheduler.sim.budgets import Ledger
from scheduler.sim.policies import ShareBuilder, SimPolicy, drf_key, fifo_prefix
from scheduler.sim.tiresias import TiresiasQueues
from scheduler.sim.trace import SimJob
from scheduler.sim.usage import Usage


@dataclass(frozen=True)
class Cluster:
    nodes: int
    gpus_per_node: int
    model: str = "gpu"
    billing_weight: float = 1.0

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @classmethod
    def parse(cls, text: str) -> Cluster:
        """``NODESxGPUS[:MODEL]``, e.g. ``8x8:A100``."""
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*(?::\s*(\S+))?\s*", text)
        if not m or int(m[1]) < 1 or int(m[2]) < 1:
            raise ValueError(f"bad --cluster {text!r}: use NODESxGPUS[:MODEL], e.g. 8x8:A100")
        return cls(int(m[1]), int(m[2]), m[3] or "gpu")


@dataclass(frozen=True)
class Run:
    """One run of a job: it started at `start` and ended (or was preempted) at `end`."""

    job: SimJob
    start: float
    end: float
    node: str
    indices: tuple[int, ...]
    preempted: bool = False
    rest: tuple[tuple[str, tuple[int, ...]], ...] = ()  # a job across nodes: its other nodes


@dataclass
class SimResult:
    policy: str
    cluster: Cluster
    jobs: list[SimJob]  # the jobs replayed (placeable ones)
    runs: list[Run]
    skipped: list[SimJob]  # jobs no node could ever hold (too many GPUs, unknown type)
    wall_s: float = 0.0
    policy_calls: int = 0
    queue_samples: list[tuple[float, int]] = field(default_factory=list)  # (time, pending)
    tenant_shares: dict[str, float] = field(default_factory=dict)  # every tenant's shares
    budgets: dict[str, float] | None = None  # --budgets: billed GPU-hours per tenant
    never_started: list[SimJob] = field(default_factory=list)  # still waiting at the end


ClassKey = tuple[str, str, int, str | None, int]  # (account, user, GPUs, type, nodes)
_LEVEL_MARGIN = 1e-9  # relative: fair now's levels here and in the policy differ by float noise
ClassRank = tuple[float, float, int, str]
_Queued = tuple[ClassRank, SimJob, PendingJob]  # a queued job, and the view the policy sees
_MAX_CALLS = 10_000  # policy calls at one event time before the replay gives up


def _class_key(job: SimJob) -> ClassKey:
    return (job.account, job.user, job.gpus, job.gpu_type, job.nodes)


def _per_node(job: SimJob) -> int:
    return job.gpus // job.nodes


def _by_submit(job: SimJob) -> ClassRank:
    return (0.0, job.submit, len(job.id), job.id)


def _by_limit(job: SimJob) -> ClassRank:
    """fair_now's order of a user's own jobs of one size: shortest time limit first."""
    return (float(job.time_limit), job.submit, len(job.id), job.id)


def _rank_of(item: _Queued) -> ClassRank:
    return item[0]


def _submit_order(item: _Queued) -> tuple[float, int, str]:
    job = item[1]
    return (job.submit, len(job.id), job.id)


class _Replay:
    def __init__(self, jobs: Sequence[SimJob], cluster: Cluster, policy: SimPolicy,
                 half_life: float, calc_period: float,
                 tenant_shares: Mapping[str, float] | None = None,
                 budgets: Mapping[str, float] | None = None,
                 past_weight: float = DEFAULT_PAST_WEIGHT, show_all: bool = False,
                 exact: bool = True) -> None:
        self.cluster, self.policy = cluster, policy
        width = len(str(cluster.nodes - 1))
        self.names = [f"n{i:0{width}d}" for i in range(cluster.nodes)]
        self.free = {name: list(range(cluster.gpus_per_node)) for name in self.names}
        self.views = {name: self._view(name) for name in self.names}
        self.free_total = cluster.gpus
        # A job across nodes needs its GPUs per node on each of as many nodes (Tiresias
        # places on one node only: it skips them).
        def placeable(j: SimJob) -> bool:
            return (_per_node(j) <= cluster.gpus_per_node and j.nodes <= cluster.nodes
                    and type_matches(j.gpu_type, cluster.model)
                    and (j.nodes == 1 or not policy.tiresias))

        fits = [j for j in jobs if placeable(j)]
        self.jobs = fits
        self.skipped = [j for j in jobs if not placeable(j)]
        self.by_id = {j.id: j for j in fits}
        self.left = {j.id: min(j.duration, float(j.time_limit)) for j in fits}  # run time left
        self.classes: dict[ClassKey, deque[_Queued]] = {}
        self.limits: dict[ClassKey, list[int]] = {}  # each class's time limits, sorted
        self.n_pending = 0
        self.sizes: dict[int, int] = {}  # classes queued per GPU count
        self.running: dict[str, tuple[RunningJob, float]] = {}  # id -> (view, start)
        self.run_no: dict[str, int] = {}
        self.ends: list[tuple[float, int, str]] = []  # (end, run number, job id)
        self.runs: list[Run] = []
        self.usage = Usage(half_life)
        self.shares = ShareBuilder(policy, [(j.account, j.user) for j in fits], tenant_shares,
                                   half_life, past_weight)
        self.tenant_shares = tenant_weights({j.account for j in fits}, tenant_shares)
        total = sum(self.tenant_shares.values()) or 1.0
        # each tenant's entitled GPUs (drf): its shares' part of the cluster
        self.entitled = {t: cluster.gpus * w / total for t, w in self.tenant_shares.items()}
        self.held: dict[str, int] = {}  # GPUs held per tenant (drf)
        # drf: each tenant's queued GPUs by its jobs' rank in submit order, and cached views
        self.rank: dict[str, int] = {}
        self.ahead: dict[str, _Fenwick] = {}
        self.drf_views: dict[str, dict[str, PendingJob]] = {}
        if policy.drf:
            by_tenant: dict[str, list[SimJob]] = {}
            for j in fits:
                by_tenant.setdefault(j.account, []).append(j)
            for tenant, mine in by_tenant.items():
                mine.sort(key=lambda j: (j.submit, len(j.id), j.id))
                self.rank.update((j.id, r) for r, j in enumerate(mine, 1))
                self.ahead[tenant] = _Fenwick(len(mine))
        self.queued: dict[tuple[str, str], int] = {}  # GPUs pending per (account, user)
        self.calls = 0
        self.calc_period = calc_period
        self._usage_at = -math.inf
        self._usage_now: dict[tuple[str, str], float] = {}
        self.queue_samples: list[tuple[float, int]] = []
        self.ledger = Ledger(budgets if policy.budgets else None)
        self.tiresias = TiresiasQueues(cluster.gpus) if policy.tiresias else None
        self.class_order = _by_limit if policy.algorithm == FAIR_NOW else _by_submit
        self.cut = not show_all  # False: every waiting job in every snapshot (slow)
        self.exact = exact  # False: fair now's cut unchecked (faster, not exact)
        self._tenant_entitled: dict[str, float] = {}  # fair now's split, last computed
        # users' fair GPUs now (`_entitled`) until a job is queued, started or stopped
        self._entitled_now: dict[tuple[str, str], float] | None = None
        self.user_held: dict[tuple[str, str], int] = {}  # GPUs held per (account, user)

    def _view(self, name: str) -> NodeView:
        c = self.cluster
        return NodeView(name, c.model, c.gpus_per_node, tuple(self.free[name]),
                        billing_weight=c.billing_weight)

    # -------------------------------------------------------------- queue
    def enqueue(self, job: SimJob) -> None:
        self.n_pending += 1
        self._entitled_now = None
        owner = (job.account, job.user)
        self.queued[owner] = self.queued.get(owner, 0) + job.gpus
        if self.policy.drf:
            self.ahead[job.account].add(self.rank[job.id], job.gpus)
            self.drf_views.pop(job.account, None)
        if self.tiresias is not None:
            self.tiresias.enqueue(job)
            return
        key = _class_key(job)
        q = self.classes.get(key)
        if q is None:
            q = self.classes[key] = deque()
            self.limits[key] = []
            self.sizes[_per_node(job)] = self.sizes.get(_per_node(job), 0) + 1
        bisect.insort(self.limits[key], job.time_limit)
        rank = self.class_order(job)
        item = (rank, job, PendingJob(job.id, job.user, job.account, job.gpus, job.submit,
                                      job.gpu_type, time_limit_s=job.time_limit,
                                      nodes=job.nodes))
        if not q or q[-1][0] <= rank:
            q.append(item)
        else:  # a requeued job (or, by time limit, a shorter one) goes back to its place
            q.insert(bisect.bisect_right(q, rank, key=_rank_of), item)

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
                    time_limit_s=job.time_limit, nodes=job.nodes)
            out.append(view)
        return out

    def _most_free(self) -> int:
        """The most free GPUs on one node (0: none free)."""
        return max(map(len, self.free.values())) if self.free_total else 0

    def _can_start(self) -> bool:
        if self.free_total == 0 or not self.classes:
            return False
        most = self._most_free()
        if not self.policy.backfill:
            # Strict fifo starts nothing while the first job in submit order does not fit on
            # any node: skip the policy call (exact; it is most events of a blocked queue).
            head = min((q[0] for q in self.classes.values()), key=_submit_order)[1]
            return _per_node(head) <= most
        return min(self.sizes) <= most

    def _shown(self) -> tuple[list[PendingJob], dict[ClassKey, int],
                              tuple[float, int, str] | None]:
        """The pending jobs the snapshot holds (see the module docstring), how many of each
        class, and, for strict fifo, the queue order of the first job left out (None: none
        is, or a policy with backfill, which does not use it)."""
        pending: list[PendingJob] = []
        shown: dict[ClassKey, int] = {}
        cutoff: tuple[float, int, str] | None = None
        most, free = self._most_free(), self.free_total
        if not self.policy.backfill:
            # Strict fifo starts a prefix of the submit order, at most one job per free GPU:
            # the first `free` jobs are exactly what it can start (the first left out: cutoff).
            order = heapq.merge(*self.classes.values(), key=_submit_order)
            head = list(itertools.islice(order, free + 1))
            pending = [view for _, _, view in head[:free]]
            if len(head) > free:
                cutoff = _submit_order(head[free])
            return pending, shown, cutoff
        for key, q in self.classes.items():
            gpus = key[2]
            if not self.cut:
                shown[key] = len(q)
            elif gpus > most:  # cannot start: only its first may take the reservation
                shown[key] = 1
            else:  # as many as could start, and the next, which may take the reservation
                shown[key] = min(len(q), free // gpus + 1)
        return self._views(shown), shown, None

    def _views(self, shown: Mapping[ClassKey, int]) -> list[PendingJob]:
        """The policy's views of the first `shown[key]` jobs of each class."""
        if self.policy.drf:
            return self._drf_views(shown)
        pending: list[PendingJob] = []
        for key, n in shown.items():
            q = self.classes[key]
            pending.extend([q[i][2] for i in range(n)])
        return pending

    def _deeper_backfill(self, decisions: Decisions, shown: Mapping[ClassKey, int],
                         now: float) -> list[PendingJob]:
        """The jobs left out that could backfill under the reservation, where a class is in
        submit order (every policy but fair now, whose classes are in time-limit order): a job
        deeper in a class whose class-mate ahead was shown and did not start (so the
        reservation's job ranks before it, and the reservation stays the same with it shown),
        whose GPUs per node the reserved node has free and whose time limit ends by the
        reservation's start. None most of the time."""
        reservation = decisions.reservation
        if (reservation is None or not self.cut or self.policy.algorithm == FAIR_NOW
                or not self.policy.backfill):
            return []
        window = reservation.start - now
        # Outside the reservation it could not fit where its class-mate ahead did not: only
        # the reserved nodes' GPUs (free before this call) are left to it.
        room = max(len(self.free[name]) for name, _ in reservation.parts)
        started: dict[ClassKey, int] = {}
        for start in decisions.starts:
            key = _class_key(self.by_id[start.job_id])
            started[key] = started.get(key, 0) + 1
        found: list[PendingJob] = []
        for key, n in shown.items():
            q, limits = self.classes[key], self.limits[key]
            if (n >= len(q) or started.get(key, 0) >= n or limits[0] > window
                    or key[2] // key[4] > room):
                continue
            fitting = bisect.bisect_right(limits, window)
            if fitting <= sum(1 for i in range(n) if q[i][1].time_limit <= window):
                continue
            deeper = [item for item in itertools.islice(q, n, None)
                      if item[1].time_limit <= window]
            if self.policy.drf:
                found += self._drf_jobs(key[0], [job for _, job, _ in deeper])
            else:
                found += [view for _, _, view in deeper]
        return found

    def _entitled(self) -> dict[tuple[str, str], float]:
        """Each active user's fair GPUs now, as fair now splits them on the replay's flat tree
        (tenants by their shares, then users with 1 share each; max-min among those with
        demand, capped at it): the same `waterfill` as `scheduler.policy.fairnow`."""
        if self._entitled_now is not None:
            return self._entitled_now
        demand: dict[tuple[str, str], float] = {}
        for owner, gpus in self.user_held.items():
            if gpus:
                demand[owner] = float(gpus)
        for owner, gpus in self.queued.items():
            demand[owner] = demand.get(owner, 0.0) + gpus
        users_of: dict[str, list[tuple[str, str]]] = {}
        for owner in demand:
            users_of.setdefault(owner[0], []).append(owner)
        tenants = list(users_of)
        got = waterfill(float(self.cluster.gpus),
                        [(self.tenant_shares.get(t, 1.0), sum(demand[o] for o in users_of[t]))
                         for t in tenants])
        entitled: dict[tuple[str, str], float] = {}
        self._tenant_entitled = dict(zip(tenants, got, strict=True))
        for tenant, fair in zip(tenants, got, strict=True):
            owners = users_of[tenant]
            entitled.update(zip(owners, waterfill(fair, [(1.0, demand[o]) for o in owners]),
                                strict=True))
        self._entitled_now = entitled
        return entitled

    def _fair_now_exact(self, shown: Mapping[ClassKey, int], decisions: Decisions
                        ) -> dict[str, float] | None:
        """Whether fair now decided on the cut as it would on the whole queue.

        Each shown job's levels (user: (held + GPUs of its user's jobs ahead) / entitled;
        tenant: (held + GPUs of the tenant's jobs at a lower user-level) / entitled) are
        computed here twice, on the shown jobs and on the whole queue. A job whose levels
        differ is harmless if the whole queue only lowers its priority (its levels are no
        lower there) and it neither started nor took the reservation: moved later in the
        queue it still does nothing. Returns None if so, else per tenant with a job that is
        not harmless the highest such job's user-level (infinite: show the tenant's whole
        queue), for `_fair_now_closure`."""
        started = {st.job_id for st in decisions.starts}
        held_by = decisions.reservation.job_id if decisions.reservation is not None else None
        entitled = self._entitled()
        tenants: dict[str, list[tuple[str, str]]] = {}
        runs: dict[tuple[str, str], list[tuple[ClassKey, float, float]]] = {}
        for key in self.classes:
            owner = (key[0], key[1])
            if owner not in runs:
                tenants.setdefault(key[0], []).append(owner)
            runs.setdefault(owner, []).append((key, 0.0, 0.0))
        for run in runs.values():
            run.sort(key=lambda r: r[0][2])
            before = before_shown = 0.0
            for i, (key, _, _) in enumerate(run):
                if i and run[i - 1][0][2] == key[2]:
                    return {t: math.inf for t in tenants}  # own order interleaves them
                run[i] = (key, before, before_shown)
                before += key[2] * len(self.classes[key])
                before_shown += key[2] * shown[key]
        bad: dict[str, float] = {}
        for tenant, owners in tenants.items():
            owners.sort()
            if self._tenant_entitled.get(tenant, 0.0) <= 0:
                bad[tenant] = math.inf
                continue
            jobs: list[tuple[float, float, int, int, int, str]] = []  # levels, for the tenant
            # The first job left out in the tenant's merged order: (its level, its user's rank).
            first_out = (math.inf, len(owners))
            for rank, owner in enumerate(owners):
                held, share = float(self.user_held.get(owner, 0)), entitled.get(owner, 0.0)
                if share <= 0:
                    bad[tenant] = math.inf
                    continue
                out = False
                for key, before, before_shown in runs[owner]:
                    gpus = key[2]
                    q = self.classes[key]
                    for i in range(shown[key]):
                        jobs.append(((held + before + gpus * i) / share,
                                     (held + before_shown + gpus * i) / share,
                                     rank, i, gpus, q[i][1].id))
                    if not out and shown[key] < len(q):
                        out = True  # levels grow along the user's order: its first left out
                        first_out = min(first_out,
                                        ((held + before + gpus * shown[key]) / share, rank))
            if tenant in bad:
                continue
            # The most its tenant-level can be on the cut: every shown GPU of the tenant ahead.
            most = ((self.held.get(tenant, 0) + sum(job[4] for job in jobs))
                    / self._tenant_entitled[tenant])
            for level, level_shown, rank, _, _, job_id in jobs:
                if level == level_shown and (level, rank) < first_out:
                    # Every job before it in the tenant's merged order is shown, at its
                    # level on the whole queue; a shown job after one left out is after it.
                    continue
                if level == level_shown and self._ahead_same(
                        owners, runs, shown, entitled, level, level_shown, rank):
                    continue
                if level < level_shown or job_id in started or job_id == held_by:
                    bad[tenant] = max(bad.get(tenant, -math.inf), level)
                    continue
                if level >= most:
                    continue  # its x on the whole queue is at least its x on the cut
                if not (self._ahead(owners, runs, entitled, level, rank, shown=None)
                        < self._ahead(owners, runs, entitled, level_shown, rank, shown)):
                    continue
                bad[tenant] = max(bad.get(tenant, -math.inf), level)
        return bad or None

    def _ahead_same(self, owners: Sequence[tuple[str, str]],
                    runs: Mapping[tuple[str, str], list[tuple[ClassKey, float, float]]],
                    shown: Mapping[ClassKey, int], entitled: Mapping[tuple[str, str], float],
                    level: float, level_shown: float, rank: int) -> bool:
        return (self._ahead(owners, runs, entitled, level, rank, shown=None)
                == self._ahead(owners, runs, entitled, level_shown, rank, shown))

    def _ahead(self, owners: Sequence[tuple[str, str]],
               runs: Mapping[tuple[str, str], list[tuple[ClassKey, float, float]]],
               entitled: Mapping[tuple[str, str], float], level: float, rank: int,
               shown: Mapping[ClassKey, int] | None) -> float:
        """GPUs of the tenant's jobs (all, or the shown ones) before a job of user-level
        `level` of the `rank`-th user in the tenant's merged order (by level, ties to the
        user listed first)."""
        total = 0.0
        for other, owner in enumerate(owners):
            held, share = float(self.user_held.get(owner, 0)), entitled[owner]
            for key, before, before_shown in runs[owner]:
                gpus, size = key[2], len(self.classes[key])
                base = held + (before if shown is None else before_shown)
                n = size if shown is None else shown[key]
                # the jobs i < n of the class whose level is below (or tied, listed first)
                lo, hi = 0, n
                while lo < hi:
                    mid = (lo + hi) // 2
                    at = (base + gpus * mid) / share
                    if at < level or (at == level and other < rank):
                        lo = mid + 1
                    else:
                        hi = mid
                total += gpus * lo
                if lo < n:
                    break  # levels only grow along a user's own order
        return total

    def _fair_now_closure(self, wanted: Mapping[ClassKey, int],
                          bounds: Mapping[str, float]) -> dict[ClassKey, int]:
        """`wanted`, with every job of each tenant of `bounds` whose user-level ((held + GPUs
        of its user's jobs ahead) / entitled) is at most the tenant's bound (with a margin far
        above float noise; infinite: all of its jobs). Fair now then computes the levels of
        those jobs as on the whole queue: the jobs ahead of them, at either level, are all
        shown. Levels only grow along a user's own order, so this is a prefix of each class."""
        entitled = self._entitled()
        classes_of: dict[tuple[str, str], list[ClassKey]] = {}
        for key in self.classes:
            if key[0] in bounds:
                classes_of.setdefault((key[0], key[1]), []).append(key)
        shown = dict(wanted)
        for owner, keys in classes_of.items():
            bound = bounds[owner[0]]
            held, share = float(self.user_held.get(owner, 0)), entitled.get(owner, 0.0)
            if math.isinf(bound) or share <= 0:
                for key in keys:
                    shown[key] = len(self.classes[key])
                continue
            bound = bound * (1 + _LEVEL_MARGIN) + _LEVEL_MARGIN
            keys.sort(key=lambda k: (k[2], k[3] or "", k[4]))
            if any(keys[i][2] == keys[i - 1][2] for i in range(1, len(keys))):
                for key in keys:  # two classes of one size: own order interleaves them
                    shown[key] = len(self.classes[key])
                continue
            before = 0.0
            for key in keys:
                gpus, size = key[2], len(self.classes[key])
                room = bound * share - held - before  # GPUs ahead a shown job may have
                if room < 0:
                    break
                n = min(size, int(room // gpus) + 1)
                while n < size and (held + before + gpus * n) / share <= bound:
                    n += 1
                while n and (held + before + gpus * (n - 1)) / share > bound:
                    n -= 1
                shown[key] = max(shown[key], n)
                before += gpus * size
        return shown

    # -------------------------------------------------------------- cycle
    def cycle(self, now: float) -> None:
        if self.tiresias is not None:
            self._tiresias_cycle(now)
            return
        for calls in itertools.count():
            if not self._can_start():
                return
            if calls == _MAX_CALLS:
                raise RuntimeError(
                    f"the replay made {_MAX_CALLS} policy calls at t={now:g} s and could still "
                    "start a job; this is a simulator bug: please report it with the trace and "
                    "the command")
            pending, shown, cutoff = self._shown()
            if now - self._usage_at >= self.calc_period:
                self._usage_now, self._usage_at = self.usage.at_time(now), now
            snap = Snapshot(tuple(self.views.values()), tuple(pending), now,
                            tuple(r for r, _ in self.running.values()),
                            shares=self.shares.build(self._usage_now),
                            budgets=self.ledger.state(now), queued_gpus=self.queued)
            decisions = schedule(snap, max_estimates=0, explain=False)
            self.calls += 1
            while self.cut and self.exact and self.policy.algorithm == FAIR_NOW:
                bounds = self._fair_now_exact(shown, decisions)
                if bounds is None:
                    break
                # The same call again, with every job of those tenants up to those levels.
                shown = self._fair_now_closure(shown, bounds)
                pending = self._views(shown)
                snap = replace(snap, pending=tuple(pending))
                decisions = schedule(snap, max_estimates=0, explain=False)
                self.calls += 1
            deeper = self._deeper_backfill(decisions, shown, now)
            if deeper:  # the same call on a snapshot that holds them too
                pending += deeper
                snap = replace(snap, pending=tuple(pending))
                decisions = schedule(snap, max_estimates=0, explain=False)
                self.calls += 1
            if not self.policy.backfill:
                fifo_prefix(decisions, pending, cutoff)
            started: dict[ClassKey, int] = {}
            for start in decisions.starts:
                job = self.by_id[start.job_id]
                key = _class_key(job)
                started[key] = started.get(key, 0) + 1
                self._start(job, start.node, start.indices, now, start.rest)
            for plan in decisions.preemptions:
                for victim in plan.victims:
                    self._stop(victim, now, preempted=True)
            if decisions.preemptions:
                continue
            if not self.policy.backfill:  # strict fifo: until the cut stops it
                if not decisions.starts or cutoff is None:
                    return
                continue
            # Again only if a class had every job shown started and has more waiting.
            if not any(n == shown[key] and key in self.classes for key, n in started.items()):
                return

    def _tiresias_cycle(self, now: float) -> None:
        assert self.tiresias is not None
        decision = self.tiresias.decide(self.free, self.free_total)
        if decision is None:
            return
        self.calls += 1
        for job_id in decision.preempt:
            self._stop(job_id, now, preempted=True)
        for job_id, node, indices in decision.starts:
            self._start(self.by_id[job_id], node, indices, now)

    def _start(self, job: SimJob, node: str, indices: tuple[int, ...], now: float,
               rest: tuple[tuple[str, tuple[int, ...]], ...] = ()) -> None:
        if self.tiresias is not None:
            self.tiresias.started(job, node, tuple(indices), now)
        else:
            key = _class_key(job)
            q = self.classes[key]
            for i, (_, queued, _) in enumerate(q):
                if queued is job:
                    del q[i]
                    break
            limits = self.limits[key]
            del limits[bisect.bisect_left(limits, job.time_limit)]
            if not q:
                del self.classes[key]
                del self.limits[key]
                self.sizes[_per_node(job)] -= 1
                if not self.sizes[_per_node(job)]:
                    del self.sizes[_per_node(job)]
        self.n_pending -= 1
        self._entitled_now = None
        owner = (job.account, job.user)
        self.queued[owner] -= job.gpus
        if not self.queued[owner]:  # no longer active for fair_now's split: leave it out
            del self.queued[owner]
        for name, held in ((node, indices), *rest):
            taken = set(held)
            self.free[name] = [i for i in self.free[name] if i not in taken]
            self.views[name] = self._view(name)
        self.free_total -= job.gpus
        rate = job.gpus * self.cluster.billing_weight
        view = RunningJob(job.id, job.user, job.account, job.gpus, node, tuple(indices),
                          now + job.time_limit, rate=rate, rest=tuple(rest))
        self.running[job.id] = (view, now)
        self.run_no[job.id] = number = self.run_no.get(job.id, 0) + 1
        heapq.heappush(self.ends, (now + self.left[job.id], number, job.id))
        self.usage.add_rate((job.account, job.user), now, rate)
        self.ledger.started(job.account, rate, now, view.ends_at)
        self.held[job.account] = self.held.get(job.account, 0) + job.gpus
        self.user_held[owner] = self.user_held.get(owner, 0) + job.gpus
        if self.policy.drf:
            self.ahead[job.account].add(self.rank[job.id], -job.gpus)
            self.drf_views.pop(job.account, None)

    def _stop(self, job_id: str, now: float, preempted: bool = False) -> None:
        view, start = self.running.pop(job_id)
        job = self.by_id[job_id]
        self._entitled_now = None
        for name, held in view.parts:
            self.free[name] = sorted(self.free[name] + list(held))
            self.views[name] = self._view(name)
        self.free_total += job.gpus
        self.usage.add_rate((job.account, job.user), now, -view.rate)
        self.ledger.stopped(job.account, view.rate, start, view.ends_at, now)
        self.held[job.account] -= job.gpus
        self.user_held[(job.account, job.user)] -= job.gpus
        self.drf_views.pop(job.account, None)
        self.runs.append(Run(job, start, now, view.node, view.indices, preempted, view.rest))
        if self.tiresias is not None:
            self.tiresias.stopped(job, start, now)
        if preempted:
            if self.policy.resumes:
                self.left[job_id] -= now - start
            self.run_no[job_id] += 1  # its end event is now stale
            self.enqueue(job)

    # -------------------------------------------------------------- loop
    def run(self) -> None:
        jobs, i, n = self.jobs, 0, len(self.jobs)
        las = self.tiresias
        while i < n or self.ends:
            t = min(jobs[i].submit if i < n else math.inf,
                    self.ends[0][0] if self.ends else math.inf,
                    las.next_nudge() if las is not None else math.inf)
            while self.ends and self.ends[0][0] <= t:
                _, number, job_id = heapq.heappop(self.ends)
                if self.run_no.get(job_id) == number and job_id in self.running:
                    self._stop(job_id, t)
            if las is not None:
                las.advance(t)
            while i < n and jobs[i].submit <= t:
                self.enqueue(jobs[i])
                i += 1
            self.cycle(t)
            self.queue_samples.append((t, self.n_pending))

    def never_started(self) -> list[SimJob]:
        ran = {r.job.id for r in self.runs} | set(self.running)
        return [j for j in self.jobs if j.id not in ran]


class _Fenwick:
    """Prefix sums over positions 1..n with point updates, both O(log n)."""

    def __init__(self, n: int) -> None:
        self.tree = [0] * (n + 1)

    def add(self, i: int, delta: int) -> None:
        tree = self.tree
        while i < len(tree):
            tree[i] += delta
            i += i & -i

    def prefix(self, i: int) -> int:
        """The sum over positions 1..i."""
        tree, total = self.tree, 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total


def simulate(jobs: Sequence[SimJob], cluster: Cluster, policy: SimPolicy, *,
             half_life: float = 7 * 86400.0,
             calc_period: float = 300.0,
             tenant_shares: Mapping[str, float] | None = None,
             budgets: Mapping[str, float] | None = None,
             past_weight: float = DEFAULT_PAST_WEIGHT,
             show_all: bool = False, exact: bool = True) -> SimResult:
    """Replay `jobs` (sorted by submit time) on `cluster` under `policy`.

    `calc_period`: how often (virtual seconds) the fair-share usage is refreshed, like
    Slurm's PriorityCalcPeriod (5 minutes by default there and here); 0: on every call.
    `tenant_shares`: each tenant's fair-share shares (``--accounts``); a tenant not named
    gets 1, so the default is equal shares. `past_weight`: fair now's weight of past usage
    (``labq`` only, see `scheduler.policy.fairnow`). `budgets`: billed GPU-hours per tenant for the
    whole replay (``--budgets``); only policies that honour budgets (`labq`) see them.
    `show_all`: every waiting job in every snapshot instead of the class cut (see the module
    docstring; the same starts, far slower: for tests). `exact=False`: fair now's cut is not
    checked against the whole queue (`_fair_now_exact`): several times faster on long queues
    (the full Philly table), but its starts are not the coordinator's.
    """
    began = time.perf_counter()
    ordered = sorted(jobs, key=lambda j: (j.submit, len(j.id), j.id))  # the queue order
    replay = _Replay(ordered, cluster, policy, half_life, calc_period, tenant_shares, budgets,
                     past_weight, show_all, exact)
    replay.run()
    return SimResult(policy.name, cluster, replay.jobs, replay.runs, replay.skipped,
                     time.perf_counter() - began, replay.calls, replay.queue_samples,
                     replay.tenant_shares, dict(budgets) if budgets else None,
                     replay.never_started())


def tenant_weights(tenants: Iterable[str],
                   shares: Mapping[str, float] | None = None) -> dict[str, float]:
    """Every tenant's shares: from `shares`, 1 for a tenant it does not name."""
    given = shares or {}
    return {t: float(given.get(t, 1.0)) for t in sorted(tenants)}
