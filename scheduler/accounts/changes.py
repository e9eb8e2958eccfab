"""Turn an admin's account/user request into the changes to write (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from scheduler.accounts import tree as acc
from scheduler.accounts.tree import Accounts, AccountsError, BudgetConfig
from scheduler.policy.budget import PeriodError, period_bounds

Change = tuple[str, str, str]  # (kind 'account'|'user', name, JSON or '' to delete)


def _limit(body: dict[str, Any], key: str) -> int | None | str:
    """'keep' when absent; None when cleared ('none'); else a whole number (or its digits)."""
    if key not in body:
        return "keep"
    value = body[key]
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) <= 18:
        return int(value)
    flag = "--" + key.replace("_", "-")
    shown = value if isinstance(value, str) and len(value) <= 64 else type(value).__name__
    raise AccountsError(f"{flag} {shown!r}: a whole number or 'none'")


def _number(value: Any, flag: str, what: str) -> float:
    """A finite JSON number: strings, booleans, NaN and infinities are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AccountsError(f"{flag}: give {what}")
    number = float(value)
    if not math.isfinite(number) or abs(number) > 1e15:
        raise AccountsError(f"{flag}: give {what} (finite, at most 1e15)")
    return number


def _shares(body: dict[str, Any], default: float | None) -> float | None:
    if body.get("shares") is None:
        return default
    return _number(body["shares"], "--shares", "a number")


def _hours(body: dict[str, Any], key: str, flag: str) -> float:
    value = _number(body.get(key), flag, "a number of billed GPU-hours")
    if not value >= 0:
        raise AccountsError(f"{flag} {value:g}: must be zero or more")
    return value


def _text(body: dict[str, Any], key: str) -> str | None:
    """An optional name field: absent or null is None; anything but a short string is refused."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise AccountsError(f"--{key.replace('_', '-')}: give a name of at most 64 characters")
    return value


def _flag(body: dict[str, Any], key: str) -> bool | None:
    """A JSON boolean, or None when absent: "false" or 0 is refused, never read as true."""
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise AccountsError(f"--{key}: give true or false (a JSON boolean), not {value!r}"
                        if isinstance(value, str | int | float) and len(repr(value)) <= 64
                        else f"--{key}: give true or false (a JSON boolean)")


def budget_changes(state: Accounts, body: dict[str, Any], now: float,
                   semesters: Sequence[Sequence[str]] = ()) -> list[Change]:
    scope, name, op = body.get("scope"), _text(body, "name") or "", body.get("op")
    if op not in ("set", "topup", "rm"):
        raise AccountsError(f"unknown budget request {op!r}")
    if scope not in ("account", "user") or not name:
        raise AccountsError("say whose budget: --account A or --user U")
    if scope == "account" and name not in state.accounts:
        raise AccountsError(f"no account {name!r}: see `labq admin account list`")
    key = f"{scope}:{name}"
    current = state.budgets.get(key)
    if op == "set":
        period = _text(body, "period") or (current.period if current else "month")
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
    target, op, name = body.get("target"), body.get("op"), _text(body, "name") or ""
    if not name:
        raise AccountsError("give a name")
    if target == "account":
        if op == "add":
            new = acc.add_account(state, name, _text(body, "parent"), _shares(body, 1.0) or 0.0)
            return [("account", name, new.to_json())]
        if op == "set":
            new = acc.set_account(state, name, parent=_text(body, "parent"),
                                  shares=_shares(body, None),
                                  max_running_gpus=_limit(body, "max_running_gpus"))
            return [("account", name, new.to_json())]
        if op == "rm":
            acc.check_remove_account(state, name)
            return [("account", name, "")]
    if target == "user":
        if op == "add":
            account = _text(body, "account")
            if not account:
                raise AccountsError("give the user's account: --account A")
            user = acc.add_user(state, name, account, _shares(body, 1.0) or 0.0)
            return [("user", name, user.to_json())]
        if op == "set":
            user = acc.set_user(state, name, account=_text(body, "account"),
                                shares=_shares(body, None),
                                default_account=_text(body, "default_account"),
                                admin=_flag(body, "admin"),
                                max_running_gpus=_limit(body, "max_running_gpus"),
                                max_jobs=_limit(body, "max_jobs"))
            return [("user", name, user.to_json())]
        if op == "rm":
            left = acc.remove_user(state, name, _text(body, "account"))
            return [("user", name, left.to_json() if left else "")]
    raise AccountsError(f"unknown admin request {target!r} {op!r}")
