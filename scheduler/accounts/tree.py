"""The account tree and its users, as admins configure them (`labq admin account|user ...`).

Pure: functions take the current `Accounts` and return the new one or raise `AccountsError`
with what was wrong and what to do. The store writes the result with a compare-and-set on a
version, so two admins editing at once cannot lose each other's change.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

ROOT = "root"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")


class AccountsError(ValueError):
    """An account or user change that cannot be made as asked."""


@dataclass(frozen=True)
class AccountConfig:
    name: str
    parent: str = ROOT
    shares: float = 1.0
    max_running_gpus: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class UserConfig:
    name: str
    accounts: dict[str, float] = field(default_factory=dict)  # account -> shares
    default_account: str | None = None
    admin: bool = False
    max_running_gpus: int | None = None
    max_jobs: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class BudgetConfig:
    """A budget in billed GPU-hours per period; top-ups count for the period they were made in."""

    scope: str  # "account" or "user"
    name: str
    limit_hours: float
    period: str = "month"  # month, semester or YYYY-MM-DD:YYYY-MM-DD
    topups: dict[str, float] = field(default_factory=dict)  # period start (Unix s) -> hours

    @property
    def key(self) -> str:
        return f"{self.scope}:{self.name}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class Accounts:
    accounts: dict[str, AccountConfig]
    users: dict[str, UserConfig]
    version: int = 0
    budgets: dict[str, BudgetConfig] = field(default_factory=dict)

    @classmethod
    def from_raw(cls, accounts: dict[str, str], users: dict[str, str], version: int,
                 budgets: dict[str, str] | None = None) -> Accounts:
        return cls(
            {k: AccountConfig(**json.loads(v)) for k, v in accounts.items()},
            {k: UserConfig(**json.loads(v)) for k, v in users.items()},
            version,
            {k: BudgetConfig(**json.loads(v)) for k, v in (budgets or {}).items()},
        )

    def children(self, name: str) -> list[str]:
        return sorted(a.name for a in self.accounts.values() if a.parent == name)

    def members(self, account: str) -> list[str]:
        return sorted(u.name for u in self.users.values() if account in u.accounts)

    def account_for(self, user: str, requested: str | None, fallback: str, *,
                    enforce: bool = True, trusted: bool = False) -> str:
        """The account a job is charged to. The root of the tree is never charged. A
        configured user may use only their accounts. A user not configured may use only the
        fallback (the default account) under `enforce`; without it, or when an admin submits
        (`trusted`), also any name that is not a configured account, as a free label. A new
        label per job would start with no usage each time: that is why `enforce` is the
        default."""
        if requested == ROOT:
            raise AccountsError(f"--account {ROOT}: the root of the account tree is never "
                                "charged; choose one of your accounts (see `labq quota`)")
        config = self.users.get(user)
        if config is None or not config.accounts:
            if requested is None or requested == fallback:
                return fallback
            if requested in self.accounts or (enforce and not trusted):
                raise AccountsError(f"{user} is not in account {requested!r} and may charge only "
                                    f"{fallback!r}; an admin can add it: labq admin user add "
                                    f"{user} --account {requested}")
            return requested
        if requested is None:
            return config.default_account or sorted(config.accounts)[0]
        if requested not in config.accounts:
            mine = ", ".join(sorted(config.accounts))
            raise AccountsError(f"{user} is not in account {requested!r} (yours: {mine}); an "
                                f"admin can add it: labq admin user add {user} --account "
                                f"{requested}")
        return requested


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise AccountsError(f"bad {kind} name {name!r}: use letters, digits, '_', '.', '-'")


def _check_shares(shares: float) -> None:
    if not shares >= 0:
        raise AccountsError(f"--shares {shares}: shares must be zero or more")


def _check_limit(flag: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise AccountsError(f"{flag} {value}: must be zero or more (or 'none' to clear)")


def add_account(state: Accounts, name: str, parent: str | None, shares: float) -> AccountConfig:
    _check_name("account", name)
    _check_shares(shares)
    if name == ROOT or name in state.accounts:
        raise AccountsError(f"account {name!r} exists already; change it with "
                            f"`labq admin account set {name}`")
    parent = parent or ROOT
    if parent != ROOT and parent not in state.accounts:
        raise AccountsError(f"no parent account {parent!r}: add it first")
    return AccountConfig(name, parent, shares)


def set_account(state: Accounts, name: str, *, parent: str | None = None,
                shares: float | None = None, max_running_gpus: int | None | str = "keep"
                ) -> AccountConfig:
    current = _account(state, name)
    changes: dict[str, Any] = {}
    if shares is not None:
        _check_shares(shares)
        changes["shares"] = shares
    if parent is not None:
        if parent != ROOT and parent not in state.accounts:
            raise AccountsError(f"no parent account {parent!r}: add it first")
        walk: str | None = parent
        while walk and walk != ROOT:
            if walk == name:
                raise AccountsError(f"account {name!r} cannot move under its own sub-account "
                                    f"{parent!r}")
            walk = state.accounts[walk].parent
        changes["parent"] = parent
    if max_running_gpus != "keep":
        assert not isinstance(max_running_gpus, str)
        _check_limit("--max-running-gpus", max_running_gpus)
        changes["max_running_gpus"] = max_running_gpus
    return replace(current, **changes)


def check_remove_account(state: Accounts, name: str) -> None:
    _account(state, name)
    if state.children(name):
        raise AccountsError(f"account {name!r} has sub-accounts ({', '.join(state.children(name))})"
                            ": remove or move them first")
    if state.members(name):
        raise AccountsError(f"account {name!r} has users ({', '.join(state.members(name))}): "
                            "remove them from it first")


def add_user(state: Accounts, name: str, account: str, shares: float) -> UserConfig:
    _check_name("user", name)
    _check_shares(shares)
    _account(state, account)
    current = state.users.get(name, UserConfig(name))
    if account in current.accounts:
        raise AccountsError(f"{name} is in account {account!r} already; change the shares "
                            f"with `labq admin user set {name} --account {account} --shares N`")
    accounts = {**current.accounts, account: shares}
    return replace(current, accounts=accounts,
                   default_account=current.default_account or account)


def set_user(state: Accounts, name: str, *, account: str | None = None,
             shares: float | None = None, default_account: str | None = None,
             admin: bool | None = None, max_running_gpus: int | None | str = "keep",
             max_jobs: int | None | str = "keep") -> UserConfig:
    current = state.users.get(name)
    if current is None:
        raise AccountsError(f"no user {name!r}: add one with `labq admin user add {name} "
                            "--account A`")
    changes: dict[str, Any] = {}
    if shares is not None:
        _check_shares(shares)
        target = account or current.default_account
        if target not in current.accounts:
            raise AccountsError(f"{name} is not in account {target!r}")
        changes["accounts"] = {**current.accounts, target: shares}
    if default_account is not None:
        if default_account not in current.accounts:
            raise AccountsError(f"{name} is not in account {default_account!r}: add it first")
        changes["default_account"] = default_account
    if admin is not None:
        changes["admin"] = admin
    for flag, key, value in (("--max-running-gpus", "max_running_gpus", max_running_gpus),
                             ("--max-jobs", "max_jobs", max_jobs)):
        if value != "keep":
            assert not isinstance(value, str)
            _check_limit(flag, value)
            changes[key] = value
    return replace(current, **changes)


def remove_user(state: Accounts, name: str, account: str | None) -> UserConfig | None:
    """The user after leaving `account` (None: removed entirely)."""
    current = state.users.get(name)
    if current is None:
        raise AccountsError(f"no user {name!r}")
    if account is None:
        return None
    if account not in current.accounts:
        raise AccountsError(f"{name} is not in account {account!r}")
    left = {a: s for a, s in current.accounts.items() if a != account}
    if not left:
        return None
    default = current.default_account if current.default_account in left else sorted(left)[0]
    return replace(current, accounts=left, default_account=default)


def _account(state: Accounts, name: str) -> AccountConfig:
    if name not in state.accounts:
        raise AccountsError(f"no account {name!r}: see `labq admin account list`")
    return state.accounts[name]
