"""One scheduling cycle: order the queue → place what fits → say why the rest waits."""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.model import Reason
from scheduler.policy.fairshare import FairShareTable, compute_fairshare
from scheduler.policy.placement import FreePool, fits_type
from scheduler.policy.priority import Priority, job_priority
from scheduler.policy.snapshot import NodeView, PendingJob, Snapshot

QOS_RANK = {"normal": 0, "scavenger": 1}


@dataclass(frozen=True)
class Start:
    job_id: str
    node: str
    indices: tuple[int, ...]


@dataclass
class Decisions:
    starts: list[Start] = field(default_factory=list)
    reasons: dict[str, list[Reason]] = field(default_factory=dict)
    priorities: dict[str, Priority] = field(default_factory=dict)


def priorities(snapshot: Snapshot) -> tuple[FairShareTable | None, dict[str, Priority]]:
    """Each pending job's priority: fair share (of its association), age, size and QOS."""
    inputs = snapshot.shares
    if inputs is None:
        return None, {}
    table = compute_fairshare(inputs.accounts, inputs.assocs, inputs.usage, inputs.algorithm)
    largest = max((n.gpus_total for n in snapshot.nodes), default=1)
    factors: dict[tuple[str, str], float] = {}
    result = {}
    for job in snapshot.pending:
        key = (job.account, job.user)
        if key not in factors:
            factors[key] = table.factor(job.account, job.user)
        result[job.id] = job_priority(
            fairshare=factors[key], submitted_at=job.submitted_at, gpus=job.gpus, qos=job.qos,
            now=snapshot.now, largest_node_gpus=largest, weights=inputs.weights,
            qos_factors=inputs.qos_factors)
    return table, result


def order_queue(
    pending: tuple[PendingJob, ...], ranked: dict[str, Priority] | None = None
) -> list[PendingJob]:
    """Priority order: normal QOS before scavenger, then highest priority, then oldest.

    Without priorities (no fair-share inputs), first come, first served within a QOS.
    """
    ranked = ranked or {}

    def key(job: PendingJob) -> tuple[int, float, float, tuple[int, str]]:
        total = ranked[job.id].total if job.id in ranked else 0.0
        return (QOS_RANK.get(job.qos, 0), -total, job.submitted_at, _id_key(job.id))

    return sorted(pending, key=key)


def schedule(snapshot: Snapshot) -> Decisions:
    """Decide which pending jobs start now and where, and why every other one waits.

    1. order the queue; 2. for each job, best-fit it on the GPUs still free; a job that fits
    starts (its GPUs leave the pool), unless a cap on GPUs held by its user or account stops
    it; 3. a job that does not start gets every reason it waits: the cap,
    the resources it lacks, or that no node has its GPU type, and its place in line behind the
    jobs ahead of it that also wait.
    """
    pool = FreePool(snapshot.nodes)
    decisions = Decisions()
    blocked: list[PendingJob] = []
    limited: dict[str, Reason] = {}
    held = _Held(snapshot)
    smallest_blocked: dict[str | None, int] = {}  # free GPUs only shrink within a cycle
    _table, decisions.priorities = priorities(snapshot)
    for job in order_queue(snapshot.pending, decisions.priorities):
        over = held.over_limit(job)
        if over is not None:
            limited[job.id] = over
            blocked.append(job)
            continue
        placement = None
        if job.gpus < smallest_blocked.get(job.gpu_type, job.gpus + 1):
            placement = pool.best_fit(job.gpus, job.gpu_type)
        if placement is None:
            smallest_blocked[job.gpu_type] = min(job.gpus,
                                                 smallest_blocked.get(job.gpu_type, job.gpus))
            blocked.append(job)
            continue
        decisions.starts.append(Start(job.id, placement.node, placement.indices))
        pool.take(placement)
        held.add(job)
    explain = _Explainer(snapshot.nodes, pool)
    ahead = 0  # jobs ahead in line that wait for GPUs (a job held by a cap blocks nobody)
    for job in blocked:
        reasons = [limited[job.id]] if job.id in limited else []
        if job.id not in limited or not _fits_now(job, pool):
            reasons += explain.resources(job)
        if ahead:
            reasons.append(Reason("Priority", f"{ahead} job(s) ahead in line also wait"))
        if job.id not in limited:
            ahead += 1
        decisions.reasons[job.id] = reasons
    return decisions


def _fits_now(job: PendingJob, pool: FreePool) -> bool:
    return pool.best_fit(job.gpus, job.gpu_type) is not None


class _Held:
    """GPUs held per user and per account (with its ancestors), against their caps."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.limits = snapshot.limits
        self.user: dict[str, int] = {}
        self.account: dict[str, int] = {}
        for job in snapshot.running:
            self._count(job.user, job.account, job.gpus)

    def _count(self, user: str, account: str, gpus: int) -> None:
        self.user[user] = self.user.get(user, 0) + gpus
        for name in self.limits.account_chain(account):
            self.account[name] = self.account.get(name, 0) + gpus

    def add(self, job: PendingJob) -> None:
        self._count(job.user, job.account, job.gpus)

    def over_limit(self, job: PendingJob) -> Reason | None:
        cap = self.limits.user_gpus.get(job.user)
        if cap is not None and self.user.get(job.user, 0) + job.gpus > cap:
            return Reason("UserGpuLimit", f"{job.user} may hold {cap} GPUs at once and holds "
                                          f"{self.user.get(job.user, 0)}")
        for name in self.limits.account_chain(job.account):
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
        self._cache: dict[tuple[str | None, int], tuple[Reason, ...]] = {}

    def resources(self, job: PendingJob) -> tuple[Reason, ...]:
        key = (job.gpu_type, job.gpus)
        if key not in self._cache:
            self._cache[key] = (self._why(job),)
        return self._cache[key]

    def _why(self, job: PendingJob) -> Reason:
        typed = [n for n in self.nodes if fits_type(job, n)]
        kind = job.gpu_type or "any type"
        if not typed:
            if job.gpu_type is None:
                return Reason("Resources", "no GPU node has registered yet")
            return Reason("GpuTypeUnavailable", f"no node has GPUs of type {job.gpu_type}")
        up = [n for n in typed if n.up]
        if not up:
            if job.gpu_type is None:
                return Reason("Resources", "every GPU node is down")
            return Reason("GpuTypeUnavailable", f"every node with {kind} GPUs is down")
        if max(n.gpus_total for n in up) < job.gpus:
            return Reason("Resources", f"needs {job.gpus} GPUs ({kind}) on one node; "
                                       "no node that is up has that many")
        return Reason("Resources", f"needs {job.gpus} GPUs ({kind}) on one node; "
                                   f"at most {self.pool.most_free(job.gpu_type)} free now")


def _id_key(job_id: str) -> tuple[int, str]:
    return (int(job_id), job_id) if job_id.isdigit() else (1 << 62, job_id)
