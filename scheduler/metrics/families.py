"""The metric families of `/metrics`, each group built from what one scrape read (no I/O).

Label values are only node, GPU index, model, account, user, state, reason and budget period:
names an admin configured or fixed sets, never a job id, a pid or free text.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from scheduler.accounts.tree import Accounts
from scheduler.cluster.budgets import budget_state
from scheduler.cluster.read import fairshare_usage_of
from scheduler.cluster.shares import share_inputs
from scheduler.config import Settings
from scheduler.coordinator.idle import IdlePolicy
from scheduler.metrics.hist import cumulative
from scheduler.model import EVICTION_REASONS, JobState, Node, NodeState, ReasonCode
from scheduler.policy.fairengine import FairShare
from scheduler.policy.fairshare import FairShareTable
from scheduler.store import WAIT_BUCKETS, parse_daily, parse_totals

Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily
GPU = ["node", "gpu", "model"]
# What a node shows (`model.Node.shown_state`): liveness, or an admin's drain.
NODE_STATES = (*(s.value for s in NodeState), "DRAINING", "DRAINED")
# Ended jobs' (state, reason code) every known account counts from 0, so that a rate or an
# alert sees the first one; other pairs appear when they first happen.
ENDED_SEEDS = ((JobState.SUCCEEDED, "Completed"), (JobState.FAILED, "NonZeroExitCode"),
               (JobState.CANCELLED, ReasonCode.CANCELLED), (JobState.TIMEOUT,
                                                            ReasonCode.TIME_LIMIT))
# The reasons the store scripts count an eviction under (request_stop.lua, finish.lua,
# requeue.lua) are scheduler.model.EVICTION_REASONS; docs/metrics.md lists the same.


class JobLike(Protocol):
    """What the families read of a job (`model.Job`, and `cluster.read.JobRow` of a waiting one)."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> JobState: ...
    @property
    def account(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def waiting_since(self) -> float: ...
    @property
    def hold(self) -> str: ...
    @property
    def gpu_idle_since(self) -> Mapping[int, float]: ...


@dataclass(frozen=True)
class Known:
    """Every account, user and (account, user) a dashboard may ask about: their counters and
    gauges start at 0 rather than being absent ("No data") until something happens."""

    accounts: frozenset[str]
    users: frozenset[str]
    assocs: frozenset[tuple[str, str]]


def known_names(accounts: Accounts, jobs: Iterable[JobLike], usage: Mapping[str, str],
                default_account: str) -> Known:
    """The configured tree and users, the default account, and whoever has a job or usage."""
    assocs = {(account, user.name) for user in accounts.users.values()
              for account in user.accounts}
    assocs |= {(j.account, j.user) for j in jobs}
    assocs |= {(account, user) for _, account, user, _ in parse_daily(dict(usage))}
    totals = parse_totals(dict(usage))
    return Known(
        accounts=frozenset({*accounts.accounts, default_account, *totals["account"],
                            *(a for a, _ in assocs)}),
        users=frozenset({*accounts.users, *totals["user"], *(u for _, u in assocs)}),
        assocs=frozenset(assocs))


def gpu_families(nodes: Sequence[Node], active: Sequence[JobLike], policy: IdlePolicy,
                 now: float) -> list[Family]:
    """Per node and per GPU, as the agents last reported them, and allocated-but-idle GPUs."""
    g = {name: GaugeMetricFamily(f"labq_{name}", doc, labels=labels) for name, doc, labels in (
        ("gpus_capacity", "GPUs on the node", ["node", "model"]),
        ("gpus_allocated", "GPUs held by labq jobs", ["node", "model"]),
        ("gpus_idle", "GPUs free for labq jobs (not allocated, node UP and not drained)",
         ["node", "model"]),
        ("gpus_allocated_idle", "Allocated GPUs below idle_gpu_threshold for idle_gpu_after_s",
         ["node", "model"]),
        ("gpu_allocated_idle_seconds", "How long an allocated GPU has been below the idle "
         "threshold (0 while busy)", [*GPU, "account", "user"]),
        ("gpu_utilization_ratio", "GPU utilization (0-1) as the agent reports it", GPU),
        ("gpu_memory_used_bytes", "GPU memory used", GPU),
        ("gpu_memory_total_bytes", "GPU memory in all", GPU),
        ("gpu_power_watts", "GPU power draw", GPU),
        ("gpu_temperature_celsius", "GPU temperature", GPU),
        ("gpu_healthy", "1 if the agent reports the GPU healthy", GPU),
        ("gpu_foreign_processes", "Processes on the GPU that labq did not start (by default "
         "the GPU gets no new job until there are none)", GPU),
        ("node_up", "1 if the node is UP (its agent reports; drained or not)", ["node"]),
        ("node_heartbeat_age_seconds", "Seconds since the node's agent last reported", ["node"]),
        ("node_state", "1 for the state the node shows (UP, DOWN, or DRAINING/DRAINED once an "
         "admin drained it), 0 for the others", ["node", "state"]),
        ("node_drained", "1 while an admin's drain keeps new jobs off the node (drained_by: "
         "who), else 0", ["node", "drained_by"]),
    )}
    jobs = {j.id: j for j in active}
    tracking = policy.action != "off"
    for node in nodes:
        models = {gpu.index: gpu.model for gpu in node.gpus}
        idle_count = 0
        for index, job_id in sorted(node.allocations.items()):
            job = jobs.get(job_id)
            if job is None:
                continue
            # Only a RUNNING job's GPUs are tracked (a PREEMPTED job's state is stale).
            running = tracking and job.state == JobState.RUNNING
            since = job.gpu_idle_since.get(index) if running else None
            seconds = 0.0 if since is None else max(0.0, now - since)
            idle_count += seconds >= policy.after_s
            g["gpu_allocated_idle_seconds"].add_metric(
                [node.name, str(index), models.get(index, node.gpu_model), job.account,
                 job.user], seconds)
        per_node = [node.name, node.gpu_model]
        g["gpus_capacity"].add_metric(per_node, node.gpus_total)
        g["gpus_allocated"].add_metric(per_node, node.gpus_allocated)
        up = node.state == NodeState.UP
        g["gpus_idle"].add_metric(per_node, len(node.free_indices()) if up and not node.drained
                                  else 0)
        g["gpus_allocated_idle"].add_metric(per_node, idle_count)
        g["node_heartbeat_age_seconds"].add_metric([node.name],
                                                   max(0.0, now - node.last_heartbeat))
        g["node_up"].add_metric([node.name], 1.0 if up else 0.0)
        shown = node.shown_state
        for state in NODE_STATES:
            g["node_state"].add_metric([node.name, state], 1.0 if state == shown else 0.0)
        g["node_drained"].add_metric([node.name, node.drained_by], 1.0 if node.drained else 0.0)
        for gpu in node.gpus if up else ():  # a DOWN node's last report is not current
            labels = [node.name, str(gpu.index), gpu.model]
            for name, value in (("gpu_utilization_ratio", gpu.utilization),
                                ("gpu_memory_used_bytes", gpu.memory_used_bytes),
                                ("gpu_memory_total_bytes", gpu.memory_total_bytes),
                                ("gpu_power_watts", gpu.power_watts),
                                ("gpu_temperature_celsius", gpu.temperature_c)):
                if value is not None:
                    g[name].add_metric(labels, value)
            g["gpu_healthy"].add_metric(labels, 1.0 if gpu.health == "OK" else 0.0)
            g["gpu_foreign_processes"].add_metric(
                labels, sum(1 for p in gpu.processes if not p.labq_job))
    return list(g.values())


def user_gpu_families(nodes: Sequence[Node], active: Sequence[JobLike],
                      known: Known) -> list[Family]:
    """GPUs each (account, user) holds now and how busy they are: utilized / allocated is the
    user's GPU utilization. 0 for every known pair holding none."""
    pair = ["account", "user"]
    allocated = GaugeMetricFamily("labq_user_gpus_allocated", "GPUs the user's jobs hold now",
                                  labels=pair)
    utilized = GaugeMetricFamily("labq_user_gpus_utilized", "Sum of the utilization (0-1) of "
                                 "the GPUs the user's jobs hold, as their agents report it "
                                 "(divide by labq_user_gpus_allocated for the mean)",
                                 labels=pair)
    jobs = {j.id: j for j in active}
    held: Counter[tuple[str, str]] = Counter()
    busy: dict[tuple[str, str], float] = {}
    for node in nodes:
        usage = {gpu.index: gpu.utilization for gpu in node.gpus}
        for index, job_id in node.allocations.items():
            job = jobs.get(job_id)
            if job is None:
                continue
            key = (job.account, job.user)
            held[key] += 1
            value = usage.get(index) if node.state == NodeState.UP else None
            busy[key] = busy.get(key, 0.0) + (value or 0.0)
    for key in sorted(known.assocs | set(held)):
        allocated.add_metric(list(key), held.get(key, 0))
        utilized.add_metric(list(key), busy.get(key, 0.0))
    return [allocated, utilized]


def job_families(active: Sequence[JobLike], waiting: Sequence[JobLike], known: Known,
                 now: float) -> list[Family]:
    jobs = GaugeMetricFamily("labq_jobs", "Jobs by state (queued and running)", labels=["state"])
    counts = Counter(j.state for j in (*active, *waiting))
    for state in JobState:
        if not state.is_terminal():
            jobs.add_metric([state.value], counts.get(state, 0))
    pending = GaugeMetricFamily("labq_pending_jobs", "Waiting jobs (PENDING or HELD)",
                                labels=["account", "user"])
    per_assoc = Counter((j.account, j.user) for j in waiting if j.state.is_waiting())
    for account, user in sorted(known.assocs | set(per_assoc)):
        pending.add_metric([account, user], per_assoc.get((account, user), 0))
    oldest = GaugeMetricFamily("labq_pending_oldest_seconds",
                               "Age of the oldest waiting job not held by a person (since "
                               "its submit, requeue or release; 0 while none waits)",
                               labels=["account"])
    first: dict[str, float] = {}
    for job in waiting:
        if job.state.is_waiting() and not job.hold:  # a job a person holds is not stuck
            first[job.account] = min(first.get(job.account, math.inf), job.waiting_since)
    for account in sorted(known.accounts | set(first)):  # 0 while none of theirs waits
        since = first.get(account)
        oldest.add_metric([account], 0.0 if since is None else max(0.0, now - since))
    return [jobs, pending, oldest]


def _split(field_name: str) -> list[str]:
    return field_name.split("|")


def wait_family(stats: dict[str, str], known: Known) -> HistogramMetricFamily:
    """Admission waits, from the bucket counts the start script keeps (see keys.py)."""
    family = HistogramMetricFamily("labq_admission_wait_seconds",
                                   "Wait from submit (or requeue) to start, observed at each "
                                   "start", labels=["account"])
    buckets: dict[str, dict[float, float]] = {account: {} for account in known.accounts}
    sums: dict[str, float] = {}
    for field_name, value in stats.items():
        parts = _split(field_name)
        if parts[0] == "wait" and len(parts) == 3:
            le = math.inf if parts[2] == "+Inf" else float(parts[2])
            buckets.setdefault(parts[1], {})[le] = float(value)
        elif parts[0] == "wait_sum" and len(parts) == 2:
            sums[parts[1]] = float(value)
    for account in sorted(buckets):
        family.add_metric([account], cumulative(WAIT_BUCKETS, buckets[account]),
                          sums.get(account, 0.0))
    return family


_COUNTERS = {  # stats hash field kind -> (help, labels); its fields are kind|label|...
    "admissions": ("Jobs started", ["account"]),
    "preemptions": ("Running jobs preempted (scavenger victims)", ["account"]),
    "evictions": ("Running jobs ended by labq", ["account", "reason"]),
    "jobs_ended": ("Jobs that ended, by final state and reason code (the reason's first "
                   "word)", ["state", "reason", "account"]),
}
_FIELD_KIND = {"ended": "jobs_ended"}  # a stats field's kind, where the family is named apart


def counter_families(stats: dict[str, str], known: Known) -> list[Family]:
    counts: dict[str, dict[tuple[str, ...], float]] = {
        "admissions": {(a,): 0.0 for a in known.accounts},
        "preemptions": {(a,): 0.0 for a in known.accounts},
        "evictions": {(a, r): 0.0 for a in known.accounts for r in EVICTION_REASONS},
        "jobs_ended": {(state.value, reason, a): 0.0 for a in known.accounts
                       for state, reason in ENDED_SEEDS},
    }
    for field_name, value in stats.items():
        kind, *labels = _split(field_name)
        kind = _FIELD_KIND.get(kind, kind)
        if kind in _COUNTERS and len(labels) == len(_COUNTERS[kind][1]):
            counts[kind][tuple(labels)] = float(value)
    out: list[Family] = []
    for kind, (documentation, label_names) in _COUNTERS.items():
        family = CounterMetricFamily(f"labq_{kind}", documentation, labels=label_names)
        for labels_of, count in sorted(counts[kind].items()):
            family.add_metric(list(labels_of), count)
        out.append(family)
    return out


def usage_families(usage: dict[str, str], known: Known) -> list[Family]:
    out: list[Family] = []
    names = {"user": known.users, "account": known.accounts}
    for kind, rows in parse_totals(usage).items():
        billed = CounterMetricFamily(f"labq_{kind}_billed_units",
                                     f"Billed GPU-seconds (GPU-s x billing weight) per {kind}",
                                     labels=[kind])
        gpu_s = CounterMetricFamily(f"labq_{kind}_gpu_seconds", f"GPU-seconds used per {kind}",
                                    labels=[kind])
        for name in names[kind] - set(rows):
            rows[name] = {}
        for name, values in sorted(rows.items()):
            billed.add_metric([name], values.get("billed", 0.0))
            gpu_s.add_metric([name], values.get("gpu_s", 0.0))
        out += [billed, gpu_s]
    return out


def share_families(accounts: Accounts, usage: dict[str, str], waiting: Sequence[JobLike],
                   settings: Settings, now: float,
                   table: FairShareTable | None = None,
                   engine: FairShare | None = None) -> list[Family]:
    """Fair share as the scheduler computes it (same inputs as its cycle; `table`: the
    leading coordinator's last one, reused; else `engine`'s, the one /metrics holds, which
    computes it again only on new usage), and budgets."""
    factor = GaugeMetricFamily("labq_fairshare_factor", "Fair-share factor 0-1 (as priority "
                               "uses it)", labels=["account", "user"])
    effective = GaugeMetricFamily("labq_effective_usage_ratio", "Decayed usage as a share of "
                                  "the parent's (Slurm's EffectvUsage)", labels=["account", "user"])
    # The cycle's inputs: configured associations, those with usage, and the waiting queue it
    # schedules (jobs a person holds are not in it).
    if table is None:
        inputs = share_inputs(accounts, fairshare_usage_of(usage, settings, now), settings,
                              {(j.account, j.user) for j in waiting if not j.hold})
        table = (engine or FairShare()).table(inputs)
    for row in table.rows:
        if row.user is not None:
            factor.add_metric([row.account, row.user], row.fairshare)
            effective.add_metric([row.account, row.user], row.effective_usage)
    scope = ["account", "user", "period"]
    spent = GaugeMetricFamily("labq_budget_spent_billed_seconds", "Billed GPU-seconds spent in "
                              "the current budget period (user=\"\" for an account budget, "
                              "account=\"\" for a user's)", labels=scope)
    limit = GaugeMetricFamily("labq_budget_limit_billed_seconds", "The budget's limit in billed "
                              "GPU-seconds (top-ups included)", labels=scope)
    if accounts.budgets:
        state = budget_state(accounts, parse_daily(usage), (), now, settings.semesters)
        for b in state.budgets:
            labels = [b.name, "", b.period] if b.scope == "account" else ["", b.name, b.period]
            spent.add_metric(labels, state.spent.get((b.scope, b.name), 0.0))
            limit.add_metric(labels, b.limit)
    return [factor, effective, spent, limit]
