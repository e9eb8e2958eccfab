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
of them in the class do, nor take the reservation before them. In classes kept in submit
order (`labq-fairtree`, `slurm-classic`, `fifo-backfill`, `drf`), a job deeper in a class could
backfill before the reservation where its class-mates ahead cannot (a shorter time limit):
the policy's walk is told those as it meets their class-mates, in the same call
(`scheduler.sim.exactcut`). When a call starts every job shown of a class that has more, the
engine calls again at the same time. Under
budgets a job may be held (skipped by the walk): those classes are cut by
`scheduler.sim.budgetcut`.

Under fair now a job's priority also depends on the jobs ahead of it (its user's own, and its
tenant's at a lower level: see `scheduler.policy.fairnow`), so its cut is made otherwise
(`scheduler.sim.fairnowcut`): each user's first jobs in its own order and each tenant's jobs up
to the highest level shown, so every shown job has its priority on the whole queue, chosen by
the most each user's next job can rank; after the call, the jobs left out are checked against
the call's last start and reservation, and where one could have changed a decision the call
is made again with more shown. So every call starts what it would with the whole queue shown
(`show_all=True`; `tests/test_sim_matches_coordinator.py` checks it, and the same starts as the
live coordinator).

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
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from scheduler.policy.fairnow import FAIR_NOW
from scheduler.policy.placement import type_matches
from scheduler.policy.snapshot import (
    DEFAULT_PAST_WEIGHT,
    NodeView,
    PendingJob,
    RunningJob,
    Snapshot,
)
from scheduler.resources import Demand
from scheduler.sim.budgetcut import BudgetCut
from scheduler.sim.budgets import Ledger
from scheduler.sim.classes import ClassKey, ClassRank, Queued, class_key, demand, rank_of
from scheduler.sim.cluster import Cluster, Run, SimResult
from scheduler.sim.exactcut import ExactCut, Fenwick, Heads
from scheduler.sim.firstfit import FirstFit
from scheduler.sim.policies import ShareBuilder, SimPolicy, fifo_prefix
from scheduler.sim.tiresias import TiresiasQueues
from scheduler.sim.trace import SimJob
from scheduler.sim.usage import Usage

_MAX_CALLS = 10_000  # policy calls at one event time before the replay gives up


def _per_node(job: SimJob) -> int:
    return job.gpus // job.nodes


def _demand(job: SimJob) -> Demand:
    return demand(job.cpus, job.mem)


def _needs(job: SimJob, c: Cluster) -> tuple[int, int]:
    """The CPUs and MiB a job gets on each of its nodes (none where the cluster counts none)."""
    return _demand(job).on(_per_node(job), c.gpus_per_node, c.cpus, c.mem)


def _has_room(job: SimJob, c: Cluster) -> bool:
    cpus, mem = _needs(job, c)
    return (not c.cpus or cpus <= c.cpus) and (not c.mem or mem <= c.mem)


def _plus(used: tuple[int, int], need: tuple[int, int], sign: int) -> tuple[int, int]:
    return (used[0] + sign * need[0], used[1] + sign * need[1])


def _by_submit(job: SimJob) -> ClassRank:
    return (0.0, job.submit, len(job.id), job.id)


def _by_limit(job: SimJob) -> ClassRank:
    """fair_now's order of a user's own jobs of one size: shortest time limit first."""
    return (float(job.time_limit), job.submit, len(job.id), job.id)


def _submit_order(item: Queued) -> tuple[float, int, str]:
    job = item[1]
    return (job.submit, len(job.id), job.id)


class _Replay(ExactCut, BudgetCut):
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
        self.used = {name: (0, 0) for name in self.names}  # CPUs and MiB given to its jobs
        self.views = {name: self._view(name) for name in self.names}
        self.free_total = cluster.gpus
        # A job across nodes needs its GPUs per node on each of as many nodes (Tiresias
        # places on one node only: it skips them).
        def placeable(j: SimJob) -> bool:
            return (_per_node(j) <= cluster.gpus_per_node and j.nodes <= cluster.nodes
                    and type_matches(j.gpu_type, cluster.model) and _has_room(j, cluster)
                    and (j.nodes == 1 or not policy.tiresias))

        fits = [j for j in jobs if placeable(j)]
        self.jobs = fits
        self.skipped = [j for j in jobs if not placeable(j)]
        self.by_id = {j.id: j for j in fits}
        self.left = {j.id: min(j.duration, float(j.time_limit)) for j in fits}  # run time left
        self.classes: dict[ClassKey, deque[Queued]] = {}
        self.shapes: dict[tuple[int, int], dict[ClassKey, deque[Queued]]] = {}  # by GPUs, nodes
        self.heads: dict[tuple[int, int], Heads] = {}  # kept while no class's first job changes
        self.limits: dict[ClassKey, list[int]] = {}  # each class's time limits, sorted
        self.first_fit: dict[ClassKey, FirstFit] | None = (  # (`scheduler.sim.exactcut`)
            {} if not show_all and policy.backfill and policy.algorithm != FAIR_NOW else None)
        self.user_classes: dict[tuple[str, str], list[ClassKey]] = {}  # each user's classes
        self._fair_now_state()
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
        self.ahead: dict[str, Fenwick] = {}
        self.drf_views: dict[str, dict[str, PendingJob]] = {}
        if policy.drf:
            by_tenant: dict[str, list[SimJob]] = {}
            for j in fits:
                by_tenant.setdefault(j.account, []).append(j)
            for tenant, mine in by_tenant.items():
                mine.sort(key=lambda j: (j.submit, len(j.id), j.id))
                self.rank.update((j.id, r) for r, j in enumerate(mine, 1))
                self.ahead[tenant] = Fenwick(len(mine))
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
        # submit order under budgets: a job may be held (`scheduler.sim.budgetcut`)
        self.gated = (self.cut and bool(self.ledger.budgets) and policy.backfill
                      and policy.algorithm != FAIR_NOW)
        # classes in submit order, no budgets, no CPUs or memory counted (`ExactCut._counts`)
        self.lone = (self.cut and policy.backfill and policy.algorithm != FAIR_NOW
                     and not self.gated and not policy.tiresias and not cluster.cpus
                     and not cluster.mem)
        self.now = 0.0  # the time of the call being made
        self.user_held: dict[tuple[str, str], int] = {}  # GPUs held per (account, user)

    def _view(self, name: str) -> NodeView:
        c, (cpus, mem) = self.cluster, self.used[name]
        return NodeView(name, c.model, c.gpus_per_node, tuple(self.free[name]),
                        billing_weight=c.billing_weight, cpus=c.cpus, mem=c.mem,
                        cpus_free=c.cpus - cpus, mem_free=c.mem - mem)

    # -------------------------------------------------------------- queue
    def enqueue(self, job: SimJob) -> None:
        self.n_pending += 1
        owner = (job.account, job.user)
        self.queued[owner] = self.queued.get(owner, 0) + job.gpus
        self.changed.add(owner)  # (fair now's cut makes its own order again)
        if self.policy.drf:
            self.ahead[job.account].add(self.rank[job.id], job.gpus)
            self.drf_views.pop(job.account, None)
        if self.tiresias is not None:
            self.tiresias.enqueue(job)
            return
        key = class_key(job)
        q = self.classes.get(key)
        if q is None:
            q = self.classes[key] = deque()
            self.shapes.setdefault((job.gpus, job.nodes), {})[key] = q
            self.limits[key] = []
            if self.first_fit is not None:
                self.first_fit[key] = FirstFit()
            if owner not in self.user_classes:
                self._grouping = None  # a user more
            self.user_classes.setdefault(owner, []).append(key)
            self.sizes[_per_node(job)] = self.sizes.get(_per_node(job), 0) + 1
        bisect.insort(self.limits[key], job.time_limit)
        rank = self.class_order(job)
        item = (rank, job, PendingJob(job.id, job.user, job.account, job.gpus, job.submit,
                                      job.gpu_type, time_limit_s=job.time_limit,
                                      nodes=job.nodes, demand=_demand(job)))
        fits = self.first_fit
        if not q or q[-1][0] <= rank:
            q.append(item)
            if fits is not None:
                fits[key].append(item)
        else:  # a requeued job (or, by time limit, a shorter one) goes back to its place
            q.insert(bisect.bisect_right(q, rank, key=rank_of), item)
            if fits is not None:
                fits[key].rebuild(q)
        if q[0] is item:
            self.heads.pop((job.gpus, job.nodes), None)

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
        free = self.free_total
        if not self.policy.backfill:
            # Strict fifo starts a prefix of the submit order, at most one job per free GPU:
            # the first `free` jobs are exactly what it can start (the first left out: cutoff).
            order = heapq.merge(*self.classes.values(), key=_submit_order)
            head = list(itertools.islice(order, free + 1))
            cutoff = _submit_order(head[free]) if len(head) > free else None
            return [view for _, _, view in head[:free]], {}, cutoff
        if self.policy.drf:
            shown = self._counts()
            return self._drf_views(shown), shown, None
        pending: list[PendingJob] = []
        return pending, self._counts(pending), None

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
            if now - self._usage_at >= self.calc_period:
                self._usage_now, self._usage_at = self.usage.at_time(now), now
            fair_now, self.now = self.cut and self.policy.algorithm == FAIR_NOW, now
            plain = not (fair_now or self.gated)  # (else the snapshot's jobs are chosen there)
            pending, shown, cutoff = self._shown() if plain else ([], {}, None)
            snap = Snapshot(tuple(self.views.values()), tuple(pending), now,
                            tuple([r for r, _ in self.running.values()]),
                            shares=self.shares.build(self._usage_now),
                            budgets=self.ledger.state(now), queued_gpus=self.queued)
            if plain:
                decisions = self._submit_order_call(snap, shown)
            else:
                decisions, shown = (self._fair_now_call(snap) if fair_now
                                    else self._budget_call(snap))
            if not self.policy.backfill:
                fifo_prefix(decisions, pending, cutoff)
            started: dict[ClassKey, int] = {}
            for start in decisions.starts:
                job = self.by_id[start.job_id]
                key = class_key(job)
                started[key] = started.get(key, 0) + 1
                self._start(job, start.node, start.indices, now, start.rest)
            for plan in decisions.preemptions:
                for victim in plan.victims:
                    self._stop(victim, now, preempted=True)
            if decisions.preemptions:
                continue
            if fair_now and self.exact:
                return  # the whole queue's decisions: a call again would start nothing more
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
            key = class_key(job)
            q = self.classes[key]
            if q[0][1] is job:
                q.popleft()
                self.heads.pop((job.gpus, job.nodes), None)
            else:  # (a job of the class is found by its rank, which is its own)
                i = bisect.bisect_left(q, self.class_order(job), key=rank_of)
                assert q[i][1] is job
                del q[i]
            limits = self.limits[key]
            del limits[bisect.bisect_left(limits, job.time_limit)]
            if self.first_fit is not None:
                self.first_fit[key].remove(job.id)
            if not q:
                del self.classes[key]
                shape = self.shapes[(job.gpus, job.nodes)]
                del shape[key]
                if not shape:
                    del self.shapes[(job.gpus, job.nodes)]
                del self.limits[key]
                if self.first_fit is not None:
                    del self.first_fit[key]
                mine = self.user_classes[(job.account, job.user)]
                mine.remove(key)
                if not mine:
                    del self.user_classes[(job.account, job.user)]
                    self.owns.pop((job.account, job.user), None)  # (fair now's cut)
                    self._grouping = None  # a user less
                self.sizes[_per_node(job)] -= 1
                if not self.sizes[_per_node(job)]:
                    del self.sizes[_per_node(job)]
        self.n_pending -= 1
        owner = (job.account, job.user)
        self.changed.add(owner)  # (fair now's cut makes its own order again)
        self.queued[owner] -= job.gpus
        if not self.queued[owner]:  # no longer active for fair_now's split: leave it out
            del self.queued[owner]
        need = _needs(job, self.cluster)
        for name, held in ((node, indices), *rest):
            taken = set(held)
            self.free[name] = [i for i in self.free[name] if i not in taken]
            self.used[name] = _plus(self.used[name], need, 1)
            self.views[name] = self._view(name)
        self.free_total -= job.gpus
        rate = job.gpus * self.cluster.billing_weight
        view = RunningJob(job.id, job.user, job.account, job.gpus, node, tuple(indices),
                          now + job.time_limit, rate=rate, rest=tuple(rest), demand=_demand(job))
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
        need = _needs(job, self.cluster)
        for name, held in view.parts:
            self.free[name] = sorted(self.free[name] + list(held))
            self.used[name] = _plus(self.used[name], need, -1)
            self.views[name] = self._view(name)
        self.free_total += job.gpus
        self.usage.add_rate((job.account, job.user), now, -view.rate)
        self.ledger.stopped(job.account, view.rate, start, view.ends_at, now)
        self.held[job.account] -= job.gpus
        self.user_held[(job.account, job.user)] -= job.gpus
        self.held_changed.add((job.account, job.user))
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
    whole replay (``--budgets``); only policies that honour budgets (`labq`, `labq-fairtree`)
    see them.
    `show_all`: every waiting job in every snapshot instead of the class cut (see the module
    docstring; the same starts, far slower: for tests). `exact=False`: fair now's jobs left
    out are not checked (`scheduler.sim.fairnowcut`): one call per step on the jobs it picks,
    a little faster, but its starts are not the coordinator's.
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
