"""Turn an admin's account/user request into the changes to write (pure)."""

from __future__ import annotations

from typing import Any

from scheduler import accounts as acc
from scheduler.accounts import Accounts, AccountsError

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


def account_changes(state: Accounts, body: dict[str, Any]) -> list[Change]:
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
