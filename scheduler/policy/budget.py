"""Cost budgets per account and per user, per period, in billing units (pure).

A job may start only if, for its user's budget and for the budgets of its account and every
account above it, spent + committed + its own cost fits the limit (plus top-ups). `committed` is
what running jobs may still cost until their time limits; a job's own cost is its GPUs × the
billing weight of the node it would run on × its time limit. Running jobs are never stopped by
a budget. Units: billing units are billed GPU-seconds here; people see billed GPU-hours.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.model import Reason

DAY = 86400.0


class PeriodError(ValueError):
    """A budget period that cannot be understood."""


@dataclass(frozen=True)
class Budget:
    scope: str  # "account" or "user"
    name: str
    limit: float  # billed GPU-seconds for the period, top-ups included
    start: float  # the current period, [start, end) in Unix seconds (UTC days)
    end: float
    period: str = "month"


@dataclass(frozen=True)
class BudgetState:
    """Budgets in force now, what each scope spent in its period and has committed."""

    budgets: tuple[Budget, ...] = ()
    spent: Mapping[tuple[str, str], float] = field(default_factory=dict)
    committed: Mapping[tuple[str, str], float] = field(default_factory=dict)


def _utc_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise PeriodError(f"bad date {text!r}: use YYYY-MM-DD") from None


def _stamp(day: dt.date) -> float:
    return calendar.timegm(day.timetuple())


def period_bounds(period: str, now: float,
                  semesters: Sequence[tuple[str, str]] = ()) -> tuple[float, float] | None:
    """[start, end) of the period containing `now`, or None when a dated period is not on.

    `month`: the calendar month (UTC). `semester`: the configured semester containing now
    (FROM, TO inclusive), else the half year. `FROM:TO`: those days, inclusive.
    """
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if period == "month":
        first = today.replace(day=1)
        nxt = (first + dt.timedelta(days=32)).replace(day=1)
        return _stamp(first), _stamp(nxt)
    if period == "semester":
        for start_text, end_text in semesters:
            start, end = _utc_day(start_text), _utc_day(end_text)
            if start <= today <= end:
                return _stamp(start), _stamp(end + dt.timedelta(days=1))
        half = 1 if today.month <= 6 else 7
        first = dt.date(today.year, half, 1)
        nxt = dt.date(today.year + (half == 7), 7 if half == 1 else 1, 1)
        return _stamp(first), _stamp(nxt)
    start_text, sep, end_text = period.partition(":")
    if not sep:
        raise PeriodError(f"unknown --period {period!r}: use month, semester or "
                          "YYYY-MM-DD:YYYY-MM-DD")
    start, end = _utc_day(start_text), _utc_day(end_text)
    if end < start:
        raise PeriodError(f"--period {period}: the end comes before the start")
    if not start <= today <= end:
        return None
    return _stamp(start), _stamp(end + dt.timedelta(days=1))


def spent_in(daily: Iterable[tuple[int, str, str, float]], budget: Budget,
             covering: Callable[[str], Sequence[str]]) -> float:
    """Billed usage of the budget's scope in its period, from (day, account, user, billed).
    An account's budget covers the usage of every account whose `covering` (itself and its
    ancestors, `AccountTree.covering`: the tree the gate admits jobs by) names it."""
    first, last = int(budget.start // DAY), int(budget.end // DAY)
    total = 0.0
    for day, account, user, billed in daily:
        if not first <= day < last:
            continue
        if (user == budget.name if budget.scope == "user"
                else budget.name in covering(account)):
            total += billed
    return total


class BudgetGate:
    """Admission against budgets during one cycle: check a job's cost, then commit it."""

    def __init__(self, state: BudgetState | None,
                 account_chain: Callable[[str], list[str]]) -> None:
        self.by_scope = {(b.scope, b.name): b for b in (state.budgets if state else ())}
        self.spent = dict(state.spent) if state else {}
        self.committed = dict(state.committed) if state else {}
        self.chain = account_chain
        self._scope_cache: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.active = bool(self.by_scope)  # False: no budget to check any job against

    def _scopes(self, user: str, account: str) -> list[tuple[str, str]]:
        key = (user, account)
        if key not in self._scope_cache:
            scopes = [("user", user)] + [("account", a) for a in self.chain(account)]
            self._scope_cache[key] = [s for s in scopes if s in self.by_scope]
        return self._scope_cache[key]

    def left(self, scope: tuple[str, str]) -> float:
        budget = self.by_scope[scope]
        return budget.limit - self.spent.get(scope, 0.0) - self.committed.get(scope, 0.0)

    def check(self, user: str, account: str, cost: float) -> Reason | None:
        for scope in self._scopes(user, account):
            left = self.left(scope)
            if cost > left:
                budget = self.by_scope[scope]
                return Reason("BudgetExhausted", (
                    f"{scope[0]} {scope[1]}'s {budget.period} budget has "
                    f"{max(0.0, left) / 3600:.2f} of {budget.limit / 3600:.2f} billed GPU-hours "
                    f"left (after spent and committed); this job may cost {cost / 3600:.2f}"))
        return None

    def commit(self, user: str, account: str, cost: float) -> None:
        for scope in self._scopes(user, account):
            self.committed[scope] = self.committed.get(scope, 0.0) + cost
