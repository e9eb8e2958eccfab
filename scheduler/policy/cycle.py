"""One scheduling cycle: order the queue (`ranking`) → place what fits → say why the rest
waits."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from scheduler.model import Reason
from scheduler.policy.backfill import MAX_ESTIMATES, Backfill, Reservation, utc
from scheduler.policy.budget import BudgetGate
from scheduler.policy.fairengine import FairShare
from scheduler.policy.fairshare import FairShareTable
from scheduler.policy.placement import FreePool, Part, Placement, fits_type, type_matches
from scheduler.policy.preemption import SCAVENGER, Preemption, plan_preemptions
from scheduler.policy.ranking import ordered
from scheduler.policy.snapshot import NodeView, PendingJob, ShareInputs, Snapshot
from scheduler.policy.walk import More, Walk
from scheduler.resources import Demand, format_mem


@dataclass(frozen=True)
class Start:
    """Start a job with `indices` on `node` (a multi-node job's head node) and, for a job of
    several nodes, the GPUs in `rest` on its other nodes."""

    job_id: str
    node: str
    indices: tuple[int, ...]
    rest: tuple[Part, ...] = ()

    @property
    def parts(self) -> tuple[Part, ...]:
        return ((self.node, self.indices), *self.rest)


@dataclass
class Decisions:
    starts: list[Start] = field(default_factory=list)
    reasons: dict[str, list[Reason]] = field(default_factory=dict)
    preemptions: list[Preemption] = field(default_factory=list)
    estimates: dict[str, float] = field(default_factory=dict)  # job id -> Unix time
    reservation: Reservation | None = None
    # The fair-share table the queue was ranked by (`fairengine.Ranking.table`), for reuse.
    fairshare: FairShareTable | None = None


def schedule(snapshot: Snapshot, max_estimates: int = MAX_ESTIMATES,
             explain: bool = True, fairshare: FairShare | None = None,
             more: More | None = None) -> Decisions:
    """`decide`, with Python's cyclic garbage collector paused (see `_collector_paused`)."""
    with _collector_paused():
        return decide(snapshot, max_estimates, explain, fairshare, more)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one cycle. A cycle makes tens of thousands of
    short-lived tuples, lists and dicts, all freed by reference counting (it makes no
    reference cycles); each time their count crosses the collector's threshold it would
    walk every tracked object, the snapshot's 10,000s of jobs included: 10-15 ms of an
    80 ms cycle of 10,000 pending jobs under fair_now (`bench/bench_cycle.py`). The previous
    state is restored, so nesting and a caller's own pause are kept."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def decide(snapshot: Snapshot, max_estimates: int = MAX_ESTIMATES,
           explain: bool = True, fairshare: FairShare | None = None,
           more: More | None = None) -> Decisions:
    """Decide which pending jobs start now and where, and why every other one waits.

    1. order the queue; 2. for each job, best-fit it on the GPUs still free; a job that fits
    starts (its GPUs leave the pool), unless a cap on GPUs held by its user or account stops
    it; the first job blocked for GPUs that can start at some known time gets a reservation,
    and lower jobs start only where they do not delay it (backfill, see `backfill`);
    3. a job that does not start gets every reason it waits: the cap, the resources it lacks,
    that no node has its GPU type, or the reservation it would delay, and its place in line
    behind the jobs ahead of it that also wait; 4. the first `max_estimates` waiting jobs not
    held by a cap get an estimated start time.

    `explain=False` (the simulator, which needs only the starts and preemptions): no reasons,
    and the walk down the queue stops once no free GPU is left and no scavenger job runs (no
    later job could start or preempt); the starts and preemptions are the same. The
    estimates are not valid then (they cover only the waiting jobs the shortened walk
    reached): pass ``max_estimates=0`` with it and do not use them.

    `fairshare`: the caller's fair-share engine, which keeps the account tree, the last
    split and the last table between cycles (None: the inputs' own `ShareInputs.engine`,
    else one for this call alone).

    `more` (a caller that shows only part of its queue, the simulator): asked, for each job
    the reservation delays, for jobs left out of the snapshot that rank after it, which the
    walk then meets in their places as if they had been in the snapshot (`walk`); not under
    fair_now, whose totals depend on the whole queue.
    """
    pool = FreePool(snapshot.nodes)
    backfill = Backfill(snapshot)
    decisions = Decisions()
    blocked: list[PendingJob] = []
    limited: dict[str, Reason] = {}
    delayed: dict[str, Reason] = {}
    # The totals only order the queue: one job (most cycles of a cluster with GPUs to
    # spare) has nothing to be ordered against.
    engine = fairshare or (snapshot.shares.engine if snapshot.shares else None) or FairShare()
    covering = engine.tree(snapshot.shares or ShareInputs()).covering  # caps' and budgets'
    held = _Held(snapshot, covering)
    budget = BudgetGate(snapshot.budgets, covering)
    weights = _Weights(snapshot.nodes)
    # The fewest GPUs a job of a GPU type (and CPU and memory ask) found no room for: free
    # GPUs, CPUs and memory only shrink within a cycle, and a job's CPUs and memory do not
    # shrink with more GPUs, so a job of as many GPUs or more finds none either.
    smallest_blocked: dict[tuple[str | None, Demand], int] = {}
    can_stop = not explain and not any(r.qos == SCAVENGER for r in snapshot.running)
    ranking = engine.rank(snapshot)
    totals, within = (ranking.totals, ranking.within) if len(snapshot.pending) > 1 else ({}, None)
    decisions.fairshare = ranking.table
    walk = Walk(snapshot.pending, totals, within) if more is not None else None
    for job in walk if walk is not None else ordered(snapshot.pending, totals, within):
        if can_stop and pool.left == 0:
            break
        over = held.over_limit(job)
        if over is None and budget.active and job.qos != SCAVENGER:  # scavengers: no budgets
            # On its cheapest possible node first; the node it gets is checked below.
            over = budget.check(job.user, job.account, job.gpus * job.time_limit_s
                                * weights.cheapest(job.gpu_type))
        if over is not None:
            limited[job.id] = over
            blocked.append(job)
            continue
        placement: Placement | Reason | None = None
        kind = (job.gpu_type, job.demand)
        if job.nodes > 1 or job.gpus < smallest_blocked.get(kind, job.gpus + 1):
            placement = backfill.place(job, pool)
        if isinstance(placement, Reason):  # it fits, but would delay the reserved job
            delayed[job.id] = placement
            blocked.append(job)
            if more is not None and walk is not None and backfill.reservation is not None:
                extra = more(job, backfill.reservation)
                if extra:  # (one job alone is ranked without totals: those added neither)
                    walk.add(job, extra,
                             ranking.totals_of(extra) if totals else [0.0] * len(extra))
            continue
        if placement is None:
            if job.nodes == 1:
                smallest_blocked[kind] = min(job.gpus, smallest_blocked.get(kind, job.gpus))
            blocked.append(job)
            if backfill.reservation is None:
                backfill.reserve(job, pool)
            continue
        if budget.active and job.qos != SCAVENGER:
            cost = (job.gpus * job.time_limit_s * weights.of(placement.node)
                    if not placement.rest else
                    job.time_limit_s * sum(len(indices) * weights.of(node)
                                           for node, indices in placement.parts))
            over = budget.check(job.user, job.account, cost)
            if over is not None:  # only a dearer node than the cheapest is free now
                limited[job.id] = over
                blocked.append(job)
                continue
            budget.commit(job.user, job.account, cost)
        decisions.starts.append(Start(job.id, placement.node, placement.indices, placement.rest))
        pool.take(placement, job.demand)
        held.add(job)
        backfill.started(job, placement)
    decisions.reservation = backfill.reservation
    if explain:
        decisions.reasons = _reasons(blocked, limited, delayed,
                                     _Explainer(snapshot.nodes, pool), backfill.reservation)
    decisions.estimates = backfill.estimates(
        [job for job in blocked if job.id not in limited], max_estimates)
    wanting = [job for job in blocked if job.id not in limited and job.id not in delayed]
    decisions.preemptions = plan_preemptions(
        wanting, snapshot.nodes, {n.name: len(pool.free_on(n.name)) for n in snapshot.nodes
                                  if n.open}, snapshot.running,
        {name: (pool.cpus_free[name], pool.mem_free[name]) for name in pool.nodes}
        if pool.counted else None)
    for plan in decisions.preemptions if explain else ():
        decisions.reasons[plan.for_job].append(Reason(
            "Preempting", f"stopping scavenger job(s) {', '.join(plan.victims)} on {plan.node} "
                          "to make room"))
    return decisions


class _Weights:
    """Billing weight per node, and the cheapest weight among nodes of a GPU type."""

    def __init__(self, nodes: Sequence[NodeView]) -> None:
        self.nodes = nodes
        self.by_node = {n.name: n.billing_weight for n in nodes}
        self._cheapest: dict[str | None, float] = {}

    def of(self, node: str) -> float:
        return self.by_node.get(node, 1.0)

    def cheapest(self, gpu_type: str | None) -> float:
        if gpu_type not in self._cheapest:
            typed = [n.billing_weight for n in self.nodes if type_matches(gpu_type, n.gpu_model)]
            self._cheapest[gpu_type] = min(typed, default=1.0)
        return self._cheapest[gpu_type]


def _reasons(
    blocked: list[PendingJob], limited: dict[str, Reason], delayed: dict[str, Reason],
    explain: _Explainer, reservation: Reservation | None,
) -> dict[str, list[Reason]]:
    """Every reason each waiting job waits, in priority order (see `schedule`)."""
    result = {}
    ahead = 0  # jobs ahead in line that wait for GPUs (a job held by a cap blocks nobody)
    for job in blocked:
        reasons = [limited[job.id]] if job.id in limited else []
        if job.id in delayed:
            reasons.append(delayed[job.id])
        elif reservation is not None and job.id == reservation.job_id:
            (lack,) = explain.resources(job)
            reasons.append(Reason(lack.code, f"{lack.detail}; GPUs reserved from "
                                             f"{utc(reservation.start)} on {reservation.where}"))
        elif job.id not in limited or not explain.pool.fits(job.per_node, job.gpu_type,
                                                             job.nodes, job.demand):
            reasons += explain.resources(job)
        if ahead:
            reasons.append(Reason("Priority", ahead_in_line(ahead)))
        if job.id not in limited:
            ahead += 1
        result[job.id] = reasons
    return result


EXACT_AHEAD = 100  # a place in line further back is told to two significant digits


def ahead_in_line(ahead: int) -> str:
    """How many jobs ahead in line also wait: exact near the head, else rounded to two
    significant digits ("about 12,000"). When the head of a long queue starts, every later
    job moves up one: told exactly, each one's reason would change (100,000 writes in one
    cycle); rounded, about one in a hundred does."""
    if ahead < EXACT_AHEAD:
        return f"{ahead} job(s) ahead in line also wait"
    step = 10 ** (len(str(ahead)) - 2)
    return f"about {round(ahead / step) * step:,} jobs ahead in line also wait"


class _Held:
    """GPUs held per user and per account (with its ancestors), against their caps."""

    def __init__(self, snapshot: Snapshot, covering: Callable[[str], list[str]]) -> None:
        self.limits = snapshot.limits
        self.covering = covering  # the account, its ancestors and root: whose caps count
        self.capped = bool(self.limits.user_gpus or self.limits.account_gpus)
        self.user: dict[str, int] = {}
        self.account: dict[str, int] = {}
        for job in snapshot.running if self.capped else ():  # nothing to hold against
            self._count(job.user, job.account, job.gpus)

    def _count(self, user: str, account: str, gpus: int) -> None:
        if not self.capped:  # nothing to hold against: no need to count
            return
        self.user[user] = self.user.get(user, 0) + gpus
        for name in self.covering(account):
            self.account[name] = self.account.get(name, 0) + gpus

    def add(self, job: PendingJob) -> None:
        self._count(job.user, job.account, job.gpus)

    def over_limit(self, job: PendingJob) -> Reason | None:
        if not self.capped:
            return None
        cap = self.limits.user_gpus.get(job.user)
        if cap is not None and self.user.get(job.user, 0) + job.gpus > cap:
            return Reason("UserGpuLimit", f"{job.user} may hold {cap} GPUs at once and holds "
                                          f"{self.user.get(job.user, 0)}")
        for name in self.covering(job.account):
            cap = self.limits.account_gpus.get(name)
            if cap is not None and self.account.get(name, 0) + job.gpus > cap:
                return Reason("AccountGpuLimit", f"account {name} may hold {cap} GPUs at once "
                                                 f"and holds {self.account.get(name, 0)}")
        return None


class _Explainer:
    """Why a job does not fit, from the pool as the cycle left it; cached per (type, GPUs)."""

    def __init__(self, nodes: tuple[NodeView, ...], pool: FreePool) -> None:
        self.nodes = nodes
        self.pool = pool
        self._cache: dict[tuple[str | None, int, int, Demand], tuple[Reason, ...]] = {}

    def resources(self, job: PendingJob) -> tuple[Reason, ...]:
        key = (job.gpu_type, job.gpus, job.nodes, job.demand)
        if key not in self._cache:
            short = self._short(job) if self.pool.counted else None
            self._cache[key] = (short or (self._why(job) if job.nodes == 1
                                          else self._why_many(job)),)
        return self._cache[key]

    def _short(self, job: PendingJob) -> Reason | None:
        """Why a job whose GPUs are free (on enough nodes of its type) waits: the CPUs or the
        memory it asks for, named, with the most any such node has free now (or ever)."""
        need = job.per_node
        nodes = [self.pool.nodes[name] for name in self.pool.nodes
                 if len(self.pool.free_on(name)) >= need and fits_type(job, self.pool.nodes[name])]
        if len(nodes) < job.nodes or not nodes:
            return None
        asks = {n.name: n.need(job.demand, need) for n in nodes}
        cpu_ok = [n for n in nodes if not n.cpus or asks[n.name][0] <= self.pool.cpus_free[n.name]]
        mem_ok = [n for n in nodes if not n.mem or asks[n.name][1] <= self.pool.mem_free[n.name]]
        both = [n for n in cpu_ok if n in mem_ok]
        if len(both) >= job.nodes:
            return None  # (the reservation holds it, or its GPUs are reserved)
        where = f"on each of {job.nodes} nodes" if job.nodes > 1 else "on one node"
        parts = []
        for index, (ok, total, left) in enumerate((
                (cpu_ok, "cpus", self.pool.cpus_free), (mem_ok, "mem", self.pool.mem_free))):
            show = _cpus if index == 0 else _memory
            counted = [n for n in nodes if getattr(n, total)]
            if len(ok) >= job.nodes or not counted:
                continue
            least = min(asks[n.name][index] for n in counted)
            most = max(getattr(n, total) for n in counted)
            now = max(0, max(left[n.name] for n in counted))
            parts.append(f"needs {show(least)} {where}: the nodes with its GPUs free have "
                         f"{show(now)} free at most" + (f", {show(most)} in all" if least > most
                                                         else ""))
        return Reason("Resources", "; ".join(parts)) if parts else None

    def _why_many(self, job: PendingJob) -> Reason:
        """Why a multi-node job does not fit: too few nodes of its type are up with its GPUs
        per node, or too few have them free now."""
        typed = [n for n in self.nodes if fits_type(job, n)]
        kind = job.gpu_type or "any type"
        need = f"needs {job.per_node} GPUs ({kind}) on each of {job.nodes} nodes"
        if not typed:
            if job.gpu_type is None:
                return Reason("Resources", "no GPU node has registered yet")
            return Reason("GpuTypeUnavailable", f"no node has GPUs of type {job.gpu_type}")
        large = [n for n in typed if n.open and n.gpus_usable >= job.per_node]
        if len(large) < job.nodes:
            return Reason("Resources", f"{need}; {len(large)} node(s) that are up have that "
                                       f"many usable GPUs{_drained_note(typed)}")
        free = sum(1 for n in large if len(self.pool.free_on(n.name)) >= job.per_node)
        return Reason("Resources", f"{need}; {free} node(s) have that many free now")

    def _why(self, job: PendingJob) -> Reason:
        typed = [n for n in self.nodes if fits_type(job, n)]
        kind = job.gpu_type or "any type"
        if not typed:
            if job.gpu_type is None:
                return Reason("Resources", "no GPU node has registered yet")
            return Reason("GpuTypeUnavailable", f"no node has GPUs of type {job.gpu_type}")
        up = [n for n in typed if n.open]
        if not up:
            drained = _drained_note(typed)
            if drained:
                return Reason("Resources", f"every node with {kind} GPUs is down or "
                                           f"drained{drained}")
            if job.gpu_type is None:
                return Reason("Resources", "every GPU node is down")
            return Reason("GpuTypeUnavailable", f"every node with {kind} GPUs is down")
        if max(n.gpus_usable for n in up) < job.gpus:
            if max(n.gpus_total for n in up) >= job.gpus:
                return Reason("Resources", f"needs {job.gpus} GPUs ({kind}) on one node; no "
                                           f"node that is up has that many usable GPUs "
                                           f"({_held_back(up)}: see `labq nodes`)")
            return Reason("Resources", f"needs {job.gpus} GPUs ({kind}) on one node; "
                                       f"no node that is up has that many{_drained_note(typed)}")
        return Reason("Resources", f"needs {job.gpus} GPUs ({kind}) on one node; "
                                   f"at most {self.pool.most_free(job.gpu_type)} free now"
                                   f"{_drained_note(typed)}")


def _cpus(count: int) -> str:
    return f"{count} CPUs"


def _memory(mib: int) -> str:
    return f"{format_mem(mib)} memory"


def _drained_note(nodes: Sequence[NodeView]) -> str:
    """'; drained by an admin: a3 (disk swap)': the up nodes an admin drained."""
    drained = [f"{n.name} ({n.drained})" for n in nodes if n.up and n.drained]
    return f"; drained by an admin: {', '.join(drained)}" if drained else ""


def _held_back(nodes: Sequence[NodeView]) -> str:
    """Why GPUs of these nodes are out of use, in words: a process labq did not start runs
    on them (named per node, at most three), or they are reported unhealthy."""
    busy = [f"{n.name} GPU {', '.join(map(str, n.foreign))}" for n in nodes if n.foreign]
    sick = any(set(n.unhealthy) - set(n.foreign) for n in nodes)
    parts = []
    if busy:
        more = f" and {len(busy) - 3} more node(s)" if len(busy) > 3 else ""
        parts.append(f"a process labq did not start runs on {'; '.join(busy[:3])}{more}")
    if sick or not busy:
        parts.append("some are reported unhealthy")
    return "; ".join(parts)
