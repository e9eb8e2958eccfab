"""Turn an admin's account/user request into the changes to write (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from scheduler import accounts as acc
from scheduler.accounts import Accounts, AccountsError, BudgetConfig
from scheduler.policy.budget import PeriodError, period_bounds

Change = tuple[str, str, str]  # (kind 'account'|'user', name, JSON or '' to delete)


def _limit(body: dict[str, Any], key: str) -> int | None | str:
    """'keep' when absent; None when cleared ('none'); else a whole number."""
    if key not in body:
        return "keep"
    value = body[key]
    if value is None or str(value).lower() == "none":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        flag = "--" + key.replace("_", "-")
        raise AccountsError(f"{flag} {value!r}: a whole number or 'none'") from None


def _shares(body: dict[str, Any], default: float | None) -> float | None:
    if body.get("shares") is None:
        return default
    try:
        return float(body["shares"])
    except (TypeError, ValueError):
        raise AccountsError(f"--shares {body['shares']!r}: give a number") from None


def _hours(body: dict[str, Any], key: str, flag: str) -> float:
    try:
        value = float(body[key])
    except (KeyError, TypeError, ValueError):
        raise AccountsError(f"{flag}: give a number of billed GPU-hours") from None
    if not value >= 0:
        raise AccountsError(f"{flag} {value:g}: must be zero or more")
    return value


def budget_changes(state: Accounts, body: dict[str, Any], now: float,
                   semesters: Sequence[Sequence[str]] = ()) -> list[Change]:
    scope, name, op = body.get("scope"), str(body.get("name") or ""), body.get("op")
    if op not in ("set", "topup", "rm"):
        raise AccountsError(f"unknown budget request {op!r}")
    if scope not in ("account", "user") or not name:
        raise AccountsError("say whose budget: --account A or --user U")
    if scope == "account" and name not in state.accounts:
        raise AccountsError(f"no account {name!r}: see `labq admin account list`")
    key = f"{scope}:{name}"
    current = state.budgets.get(key)
    if op == "set":
        period = str(body.get("period") or (current.period if current else "month"))
        try:
            period_bounds(period, now, [(a, b) for a, b in semesters])
        except PeriodError as exc:
            raise AccountsError(str(exc)) from None
        topups = current.topups if current and current.period == period else {}
        new = BudgetConfig(scope, name, _hours(body, "limit", "--limit"), period, topups)
        return [("budget", key, new.to_json())]
    if current is None:
        raise AccountsError(f"{scope} {name} has no budget: set one with `labq admin budget set "
                            f"--{scope} {name} --limit HOURS`")
    if op == "topup":
        add = _hours(body, "add", "--add")
        bounds = period_bounds(current.period, now, [(a, b) for a, b in semesters])
        if bounds is None:
            raise AccountsError(f"{scope} {name}'s budget period {current.period} is not on now")
        start = str(int(bounds[0]))
        topups = {start: current.topups.get(start, 0.0) + add}  # older periods' top-ups lapse
        return [("budget", key, replace(current, topups=topups).to_json())]
    if op == "rm":
        return [("budget", key, "")]
    raise AccountsError(f"unknown budget request {op!r}")


def account_changes(state: Accounts, body: dict[str, Any], now: float = 0.0,
                    semesters: Sequence[Sequence[str]] = ()) -> list[Change]:
    if body.get("target") == "budget":
        return budget_changes(state, body, now, semesters)
    target, op, name = body.get("target"), body.get("op"), str(body.get("name") or "")
    if not name:
        raise AccountsError("give a name")
    if target == "account":
        if op == "add":
            new = acc.add_account(state, name, body.get("parent"), _shares(body, 1.0) or 0.0)
            return [("account", name, new.to_json())]
        if op == "set":
            new = acc.set_account(state, name, parent=body.get("parent"),
                                  shares=_shares(body, None),
                                  max_running_gpus=_limit(body, "max_running_gpus"))
            return [("account", name, new.to_json())]
        if op == "rm":
            acc.check_remove_account(state, name)
            return [("account", name, "")]
    if target == "user":
        if op == "add":
            if not body.get("account"):
                raise AccountsError("give the user's account: --account A")
            user = acc.add_user(state, name, str(body["account"]), _shares(body, 1.0) or 0.0)
            return [("user", name, user.to_json())]
        if op == "set":
            admin = body.get("admin")
            user = acc.set_user(state, name, account=body.get("account"),
                                shares=_shares(body, None),
                                default_account=body.get("default_account"),
                                admin=None if admin is None else bool(admin),
                                max_running_gpus=_limit(body, "max_running_gpus"),
                                max_jobs=_limit(body, "max_jobs"))
            return [("user", name, user.to_json())]
        if op == "rm":
            left = acc.remove_user(state, name, body.get("account"))
            return [("user", name, left.to_json() if left else "")]
    raise AccountsError(f"unknown admin request {target!r} {op!r}")
