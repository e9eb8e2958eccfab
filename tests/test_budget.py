"""Budgets: periods, spent per scope, the admission gate, and admin changes."""

from __future__ import annotations

import calendar
import datetime as dt
import json

import pytest

from scheduler.accounts.changes import account_changes
from scheduler.accounts.tree import AccountConfig, Accounts, BudgetConfig, UserConfig
from scheduler.cluster.budgets import account_nodes, budget_state, current_budget
from scheduler.policy.budget import Budget, BudgetGate, BudgetState, PeriodError, period_bounds
from scheduler.policy.sharetree import AccountTree
from scheduler.policy.snapshot import RunningJob

H = 3600.0


def ts(text: str) -> float:
    return float(calendar.timegm(dt.datetime.fromisoformat(text).timetuple()))


NOW = ts("2026-11-25T12:00:00")


@pytest.mark.parametrize(("period", "semesters", "start", "end"), [
    ("month", (), "2026-11-01", "2026-12-01"),
    ("semester", (), "2026-07-01", "2027-01-01"),
    ("semester", (("2026-09-01", "2027-01-31"),), "2026-09-01", "2027-02-01"),
    ("2026-11-20:2026-11-30", (), "2026-11-20", "2026-12-01"),
])
def test_period_bounds(period: str, semesters: tuple[tuple[str, str], ...], start: str,
                       end: str) -> None:
    assert period_bounds(period, NOW, semesters) == (ts(start + "T00:00:00"),
                                                     ts(end + "T00:00:00"))


def test_december_rolls_into_next_year_and_a_past_custom_period_is_off() -> None:
    assert period_bounds("month", ts("2026-12-31T23:00:00")) == (
        ts("2026-12-01T00:00:00"), ts("2027-01-01T00:00:00"))
    assert period_bounds("2026-01-01:2026-01-31", NOW) is None


@pytest.mark.parametrize("period", ["weekly", "2026-13-01:2026-12-01", "2026-12-01:2026-11-01"])
def test_bad_periods_are_refused(period: str) -> None:
    with pytest.raises(PeriodError):
        period_bounds(period, NOW)


def gate(limit_h: float, spent_h: float = 0.0, committed_h: float = 0.0) -> BudgetGate:
    budget = Budget("account", "vision", limit_h * H, 0.0, 1e12)
    state = BudgetState((budget,), {("account", "vision"): spent_h * H},
                        {("account", "vision"): committed_h * H})
    return BudgetGate(state, lambda a: [a, "lab"] if a == "vision" else [a])


def test_gate_admits_only_what_fits_spent_plus_committed_plus_cost() -> None:
    g = gate(10, spent_h=4, committed_h=3)
    assert g.check("alice", "vision", 3 * H) is None
    reason = g.check("alice", "vision", 3.5 * H)
    assert reason is not None and reason.code == "BudgetExhausted"
    assert "3.00 of 10.00 billed GPU-hours left" in reason.detail
    g.commit("alice", "vision", 2 * H)
    assert g.check("alice", "vision", 1.5 * H) is not None  # only 1 h left now
    assert g.check("bob", "other", 100 * H) is None  # no budget on that account


def test_budget_state_sums_subtree_usage_in_the_period_and_running_commitments() -> None:
    accounts = Accounts(
        {"lab": AccountConfig("lab"), "vision": AccountConfig("vision", "lab")},
        {"alice": UserConfig("alice", {"vision": 1.0})}, 1,
        {"account:lab": BudgetConfig("account", "lab", 100.0),
         "user:alice": BudgetConfig("user", "alice", 10.0, topups={str(int(ts(
             "2026-11-01T00:00:00"))): 5.0})})
    today = int(NOW // 86400)
    daily = [(today, "vision", "alice", 2 * H), (today - 40, "vision", "alice", 50 * H),
             (today, "other", "bob", 7 * H)]
    running = [RunningJob("1", "alice", "vision", 2, "n1", (0, 1), NOW + 1800, rate=6.0)]
    state = budget_state(accounts, daily, running, NOW)
    limits = {(b.scope, b.name): b.limit for b in state.budgets}
    assert limits == {("account", "lab"): 100 * H, ("user", "alice"): 15 * H}  # top-up counts
    assert state.spent == {("account", "lab"): 2 * H, ("user", "alice"): 2 * H}
    assert state.committed == {("user", "alice"): 6.0 * 1800, ("account", "lab"): 6.0 * 1800}


def test_budget_spending_counts_the_accounts_the_gate_charges() -> None:
    """Spending and the gate read one tree (`AccountTree.covering`): an account whose parent
    is unknown or on a cycle hangs where the tree hangs it for both, so no budget counts usage
    of an account whose jobs its gate would not charge, or the other way round."""
    accounts = Accounts(
        {"lab": AccountConfig("lab"), "vision": AccountConfig("vision", "lab"),
         # a cycle, cut where it closes: a under root, b under a (config says a under b)
         "a": AccountConfig("a", "b"), "b": AccountConfig("b", "a"),
         "lost": AccountConfig("lost", "gone")},  # an unknown parent: under root
        {}, 1,
        {f"account:{n}": BudgetConfig("account", n, 100.0) for n in ("lab", "b", "gone")})
    today = int(NOW // 86400)
    daily = [(today, "vision", "u", 1 * H), (today, "a", "u", 2 * H), (today, "b", "u", 4 * H),
             (today, "lost", "u", 8 * H)]
    running = [RunningJob(str(i), "u", acct, 1, "n1", (0,), NOW + 3600, rate=1.0)
               for i, acct in enumerate(("vision", "a", "b", "lost"))]
    state = budget_state(accounts, daily, running, NOW)
    assert state.spent == {("account", "lab"): 1 * H, ("account", "b"): 4 * H,
                           ("account", "gone"): 0.0}
    assert state.committed == {("account", "lab"): 3600.0, ("account", "b"): 3600.0,
                               ("user", "u"): 4 * 3600.0}
    gate = BudgetGate(state, budget_tree(accounts).covering)
    assert gate.check("u", "a", 1e9) is None  # b's budget does not gate a's jobs either
    assert gate.check("u", "b", 200 * H) is not None
    assert gate.check("u", "vision", 200 * H) is not None  # lab's gates vision's


def budget_tree(accounts: Accounts) -> AccountTree:
    return AccountTree(account_nodes(accounts), ())


def test_admin_budget_set_topup_rm() -> None:
    state = Accounts({"lab": AccountConfig("lab")}, {}, 0)
    [(kind, key, value)] = account_changes(
        state, {"target": "budget", "op": "set", "scope": "account", "name": "lab",
                "limit": 500, "period": "semester"}, NOW)
    assert (kind, key) == ("budget", "account:lab")
    config = BudgetConfig(**json.loads(value))
    state = Accounts(state.accounts, {}, 1, {key: config})
    [(_, _, value)] = account_changes(
        state, {"target": "budget", "op": "topup", "scope": "account", "name": "lab",
                "add": 50}, NOW)
    topped = BudgetConfig(**json.loads(value))
    budget = current_budget(topped, NOW)
    assert budget is not None and budget.limit == 550 * H
    assert account_changes(state, {"target": "budget", "op": "rm", "scope": "account",
                                   "name": "lab"}, NOW) == [("budget", "account:lab", "")]


@pytest.mark.parametrize(("body", "message"), [
    ({"op": "set", "scope": "account", "name": "nope", "limit": 1}, "no account 'nope'"),
    ({"op": "set", "scope": "account", "name": "lab", "limit": -1}, "zero or more"),
    ({"op": "set", "scope": "account", "name": "lab", "limit": "x"}, "number of billed"),
    ({"op": "set", "scope": "account", "name": "lab", "limit": 1, "period": "weekly"},
     "unknown --period"),
    ({"op": "topup", "scope": "user", "name": "alice", "add": 1}, "has no budget"),
    ({"op": "set", "name": "lab", "limit": 1}, "--account A or --user U"),
])
def test_bad_budget_requests(body: dict[str, object], message: str) -> None:
    state = Accounts({"lab": AccountConfig("lab")}, {}, 0)
    with pytest.raises(ValueError, match=message):
        account_changes(state, {"target": "budget", **body}, NOW)


def test_usage_reset_each_month_forgets_last_months_usage() -> None:
    from scheduler.cluster.shares import usage_since_reset

    today = int(NOW // 86400)
    daily = [(today, "lab", "alice", 100.0), (today - 30, "lab", "alice", 1e6),
             (today - 1, "lab", "bob", 50.0)]
    usage = usage_since_reset(daily, NOW, half_life_s=86400.0, reset="month")
    # Only November counts; today's usage decays from today's end (no decay yet), and
    # yesterday's from yesterday's end, 12 hours ago: 2^-0.5.
    assert usage == {("lab", "alice"): pytest.approx(100.0),
                     ("lab", "bob"): pytest.approx(50.0 * 2 ** -0.5)}
