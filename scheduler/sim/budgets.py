"""``--budgets``: per-tenant cost budgets for a replay, through the live budget path.

A budget is the live model's account budget (`scheduler.policy.budget.Budget`, scope
``account``) whose period is the whole replay: a limit in billed GPU-hours. Under `labq` the
replay hands the policy a `BudgetState` in its `Snapshot`, as the coordinator does, and the
policy's own `BudgetGate` admits or holds each job: it starts only if spent + committed (the
running jobs' billed rate × what is left of their time limits) + its own GPUs × billing weight
× time limit fits. Since a run never outlasts its time limit (the replay stops it there, as
the coordinator does), a tenant's charged use can never exceed its budget under `labq`.
The baselines ignore budgets; `overruns` measures by how much they would have overspent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from scheduler.policy.budget import Budget, BudgetState
from scheduler.sim.trace import TraceError, tenant_rows

HOUR = 3600.0
SCOPE = "account"
PERIOD = "replay"  # what a held job's reason names as the budget's period
EPSILON = 1e-6  # billed GPU-seconds: float noise, not an overrun


def load_budgets(path: str | Path) -> dict[str, float]:
    """``--budgets``: a CSV of ``tenant,budget`` rows, the budget in billed GPU-hours for the
    whole replay (an optional header ``tenant,budget``, blank lines and ``#`` comments skipped).
    A tenant not listed has no budget. Budgets are numbers >= 0; a tenant appears once."""
    budgets: dict[str, float] = {}
    for where, tenant, text in tenant_rows(path, "budgets", "budget",
                                         "its budget in billed GPU-hours"):
        try:
            hours = float(text)
        except ValueError:
            raise TraceError(f"{where}: bad budget {text!r} for tenant {tenant!r}: "
                             "expected a number of billed GPU-hours") from None
        if not math.isfinite(hours) or hours < 0:
            raise TraceError(f"{where}: bad budget {text!r} for tenant {tenant!r}: "
                             "expected a finite number >= 0")
        budgets[tenant] = hours
    return budgets


class Ledger:
    """What each tenant has been charged (billed GPU-seconds) and has committed, kept
    incrementally so that a snapshot's `BudgetState` costs O(tenants with a budget)."""

    def __init__(self, budget_hours: Mapping[str, float] | None) -> None:
        self.hours = dict(budget_hours or {})
        self.budgets = tuple(Budget(SCOPE, t, h * HOUR, 0.0, math.inf, PERIOD)
                             for t, h in sorted(self.hours.items()))
        self.charged: dict[str, float] = {}  # finished runs, per tenant
        # per tenant, over its running jobs: sum of rate, rate x start, rate x ends_at
        self._rate: dict[str, float] = {}
        self._rate_start: dict[str, float] = {}
        self._rate_end: dict[str, float] = {}

    def started(self, tenant: str, rate: float, start: float, ends_at: float) -> None:
        self._rate[tenant] = self._rate.get(tenant, 0.0) + rate
        self._rate_start[tenant] = self._rate_start.get(tenant, 0.0) + rate * start
        self._rate_end[tenant] = self._rate_end.get(tenant, 0.0) + rate * ends_at

    def stopped(self, tenant: str, rate: float, start: float, ends_at: float,
                now: float) -> None:
        self.started(tenant, -rate, start, ends_at)
        self.charged[tenant] = self.charged.get(tenant, 0.0) + rate * (now - start)

    def state(self, now: float) -> BudgetState | None:
        """The budgets in force, what each tenant spent and has committed at `now`."""
        if not self.budgets:
            return None
        spent, committed = {}, {}
        for b in self.budgets:
            t = b.name
            rate = self._rate.get(t, 0.0)
            spent[(SCOPE, t)] = self.charged.get(t, 0.0) + rate * now - self._rate_start.get(t, 0.0)
            committed[(SCOPE, t)] = max(0.0, self._rate_end.get(t, 0.0) - rate * now)
        return BudgetState(self.budgets, spent, committed)


def overruns(budget_hours: Mapping[str, float] | None,
             charges: Iterable[tuple[str, float]]) -> dict[str, object] | None:
    """Tenants whose charged use (billed GPU-seconds, from (tenant, charge) per run) exceeded
    their budget: how many, by how many billed GPU-hours in all, and each one's overrun."""
    if not budget_hours:
        return None
    used: dict[str, float] = {}
    for tenant, charge in charges:
        used[tenant] = used.get(tenant, 0.0) + charge
    over = {t: (used.get(t, 0.0) - h * HOUR) / HOUR for t, h in sorted(budget_hours.items())
            if used.get(t, 0.0) > h * HOUR * (1 + 1e-9) + EPSILON}
    return {"tenants": len(over), "gpu_hours": sum(over.values()),
            "by_tenant_gpu_hours": over,
            "used_gpu_hours": {t: used.get(t, 0.0) / HOUR for t in sorted(budget_hours)}}
