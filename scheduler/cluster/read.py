"""Read the cluster once, and turn it into the policy's pure snapshot.

The scheduling cycle, `labq quota`, `labq priority` and `/metrics` all read what they need
here (`read_cluster`) into one type, `ClusterState`, and the policy's input is built with
`build_snapshot`: the same inputs, assembled in one place, whoever asks.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from scheduler.accounts.tree import Accounts
from scheduler.cluster.budgets import budget_state
from scheduler.cluster.shares import share_inputs, usage_since_reset
from scheduler.cluster.views import node_view, running_view
from scheduler.config import Settings
from scheduler.model import Job, JobState, Node
from scheduler.policy import Limits, PendingJob, RunningJob, Snapshot
from scheduler.policy.fairshare import FairShareTable
from scheduler.store import Store, parse_daily, parse_decayed
from scheduler.store.jobstore import READ_CHUNK


@dataclass(slots=True)
class JobRow:
    """A waiting job as `/metrics` reads it: the few fields it shows (10,000s per scrape)."""

    id: str
    state: JobState
    account: str
    user: str
    waiting_since: float = 0.0  # submit or last requeue
    hold: str = ""  # a person holds it
    gpu_idle_since: dict[int, float] = field(default_factory=dict)


ROW_FIELDS = ("state", "account", "user", "submitted_at", "queued_at", "hold", "gpu_idle_since")


def job_rows(ids: Sequence[str], values: Sequence[Sequence[str | None]]) -> list[JobRow]:
    rows = []
    for job_id, (state, account, user, submitted, queued, hold, idle) in zip(ids, values,
                                                                             strict=True):
        if not state:
            continue  # gone since the ids were read
        since = {int(k): float(v) for k, v in json.loads(idle).items()} \
            if idle and idle != "{}" else {}
        rows.append(JobRow(job_id, JobState(state), account or "", user or "",
                           float(queued or submitted or 0.0), hold or "", since))
    return rows


@dataclass(frozen=True)
class ClusterState:
    """What one cycle, request or scrape knows of the cluster: read once, at `now`."""

    now: float
    nodes: list[Node]
    accounts: Accounts
    active: list[Job]  # STARTING, RUNNING, PREEMPTED: they hold GPUs
    usage: dict[str, str]  # the usage hash, raw (fair share and budgets both read it)
    # Read only for /metrics (`read_cluster(..., metrics=True)`):
    waiting: list[JobRow] = field(default_factory=list)  # PENDING and HELD, as rows
    stats: dict[str, str] = field(default_factory=dict)  # the raw stats hash (counters)
    store_memory: tuple[int, int] = (0, 0)  # the store's used_memory and maxmemory (0: none)

    def with_jobs(self, updated: Mapping[str, Job]) -> ClusterState:
        """This state with the active jobs in `updated` (by id) replaced by those records: what
        the cycle goes on with after a step changed some (the state read is never edited)."""
        if not updated:
            return self
        return replace(self, active=[updated.get(j.id, j) for j in self.active])

    def without_jobs(self, ended: Collection[str]) -> ClusterState:
        """This state without the active jobs in `ended` (ids): ended or requeued since read."""
        if not ended:
            return self
        return replace(self, active=[j for j in self.active if j.id not in ended])


async def read_cluster(store: Store, now: float, *, metrics: bool = False) -> ClusterState:
    """Nodes, accounts, active jobs and usage, read once; with `metrics`, also the waiting
    jobs' rows, the stats hash and the store's memory (what /metrics shows besides)."""
    nodes, accounts, active, usage = await store.cluster_reads()
    if not metrics:
        return ClusterState(now, nodes, accounts, active, usage)
    _, waiting_ids = await store.queue_ids()
    rows: list[JobRow] = []
    # Made into rows a chunk at a time, as read: the event loop is never held for the whole
    # queue at once (0.3 s of it for 100,000 waiting jobs).
    for first in range(0, len(waiting_ids), READ_CHUNK):
        chunk = waiting_ids[first:first + READ_CHUNK]
        rows += job_rows(chunk, await store.job_fields(chunk, ROW_FIELDS))
    return ClusterState(now, nodes, accounts, active, usage,
                        [r for r in rows if r.state.is_waiting()], await store.stats(),
                        await store.memory())


async def fairshare_usage(store: Store, settings: Settings,
                          now: float) -> dict[tuple[str, str], float]:
    """Decayed usage per (account, user) as fair share sees it, read from the store."""
    return fairshare_usage_of(await store.usage_hash(), settings, now)


def fairshare_usage_of(usage: dict[str, str], settings: Settings,
                       now: float) -> dict[tuple[str, str], float]:
    """Decayed usage per (account, user) as fair share sees it (maybe reset each period),
    from the usage hash."""
    if settings.usage_reset == "none":
        return parse_decayed(usage, now)
    return usage_since_reset(parse_daily(usage), now, settings.usage_half_life_s,
                             settings.usage_reset, settings.semesters)


def build_snapshot(state: ClusterState, pending: Sequence[PendingJob], settings: Settings,
                   waiting_assocs: Iterable[tuple[str, str]] | None = None,
                   table: FairShareTable | None = None) -> Snapshot:
    """The policy's snapshot of `state` with `pending` as the queue it schedules.
    `waiting_assocs` are the (account, user) pairs fair share must rank (default: those of
    `pending`); `table`, the fair-share table to use instead of computing one (the leading
    coordinator's last)."""
    now = state.now
    running = tuple(running_view(j, now) for j in state.active)
    accounts = state.accounts
    assocs = set(waiting_assocs) if waiting_assocs is not None else {
        (p.account, p.user) for p in pending}
    avoid_foreign = settings.foreign_gpu_policy == "avoid"
    on_node: dict[str, list[RunningJob]] = {}  # the jobs holding GPUs on each node
    for run in running:
        for name in run.node_names:
            on_node.setdefault(name, []).append(run)
    return Snapshot(
        nodes=tuple(node_view(n, settings.billing_weight(n.gpu_model), avoid_foreign,
                              on_node.get(n.name, ()))
                    for n in state.nodes),
        pending=tuple(pending),
        now=now,
        running=running,
        limits=limits_of(accounts),
        shares=replace(share_inputs(accounts, fairshare_usage_of(state.usage, settings, now),
                                    settings, assocs), table=table),
        budgets=budget_state(accounts, parse_daily(state.usage), running, now,
                             settings.semesters) if accounts.budgets else None,
    )


def limits_of(accounts: Accounts) -> Limits:
    """GPU caps per user and per account (an account's cap covers its sub-accounts)."""
    return Limits(
        user_gpus={u.name: u.max_running_gpus for u in accounts.users.values()
                   if u.max_running_gpus is not None},
        account_gpus={a.name: a.max_running_gpus for a in accounts.accounts.values()
                      if a.max_running_gpus is not None},
    )
