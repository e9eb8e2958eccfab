"""From stored budgets, daily usage and running jobs to the policy's BudgetState (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from scheduler.accounts.tree import Accounts, BudgetConfig
from scheduler.policy.budget import Budget, BudgetState, period_bounds, spent_in
from scheduler.policy.sharetree import Account, AccountTree
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
                 semesters: Sequence[Sequence[str]] = (),
                 tree: AccountTree | None = None) -> BudgetState:
    """What each budget in force has spent and has committed (running jobs' billed rate for
    what is left of their time limits). An account's budget covers its sub-accounts as the
    policy's budget gate does: by `tree` (default: the configured accounts'), the account tree
    fair share uses, with its rules for unknown parents and cycles."""
    budgets = [b for c in accounts.budgets.values()
               if (b := current_budget(c, now, semesters)) is not None]
    if not budgets:
        return BudgetState()
    covering = (tree or AccountTree(account_nodes(accounts), ())).covering
    days = list(daily)
    spent = {(b.scope, b.name): spent_in(days, b, covering) for b in budgets}
    names = {b.name for b in budgets if b.scope == "account"}
    committed: dict[tuple[str, str], float] = {}
    for job in running:
        remaining = job.rate * max(0.0, job.ends_at - now)
        scopes = [("user", job.user)] + [("account", a) for a in covering(job.account)
                                          if a in names]
        for scope in scopes:
            committed[scope] = committed.get(scope, 0.0) + remaining
    return BudgetState(tuple(budgets), spent, committed)


def account_nodes(accounts: Accounts) -> tuple[Account, ...]:
    """The configured accounts as the account tree's nodes, in name order (fair now splits
    equal asks in the order given: the same cluster must rank the same way, whatever order
    the store gave them in)."""
    return tuple(Account(a.name, a.parent, a.shares) for _, a in sorted(accounts.accounts.items()))
