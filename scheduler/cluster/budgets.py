"""From stored budgets, daily usage and running jobs to the policy's BudgetState (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from scheduler.accounts.tree import Accounts, BudgetConfig
from scheduler.policy.budget import Budget, BudgetState, period_bounds, spent_in
from scheduler.policy.snapshot import RunningJob

HOUR = 3600.0


def current_budget(config: BudgetConfig, now: float,
                   semesters: Sequence[Sequence[str]] = ()) -> Budget | None:
    bounds = period_bounds(config.period, now, [(a, b) for a, b in semesters])
    if bounds is None:
        return None
    start, end = bounds
    hours = config.limit_hours + config.topups.get(str(int(start)), 0.0)
    return Budget(config.scope, config.name, hours * HOUR, start, end, config.period)


def budget_state(accounts: Accounts, daily: Iterable[tuple[int, str, str, float]],
                 running: Sequence[RunningJob], now: float,
                 semesters: Sequence[Sequence[str]] = ()) -> BudgetState:
    budgets = [b for c in accounts.budgets.values()
               if (b := current_budget(c, now, semesters)) is not None]
    if not budgets:
        return BudgetState()
    members = {b.name: accounts.subtree(b.name) for b in budgets if b.scope == "account"}
    days = list(daily)
    spent = {(b.scope, b.name): spent_in(days, b, members) for b in budgets}
    committed: dict[tuple[str, str], float] = {}
    for job in running:
        remaining = job.rate * max(0.0, job.ends_at - now)
        scopes = [("user", job.user)] + [("account", a) for a in members
                                          if job.account in members[a]]
        for scope in scopes:
            committed[scope] = committed.get(scope, 0.0) + remaining
    return BudgetState(tuple(budgets), spent, committed)
