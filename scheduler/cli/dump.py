"""`labq admin dump` and `labq admin load`: the account tree, users and budgets as a TOML file
(Slurm's `sacctmgr dump` / `sacctmgr load`).

The file describes each account, user and budget it names completely: loading it makes
those exactly as written (a user's memberships not in the file are left; a limit not written
is cleared) and leaves everything it does not name alone. Loading checks the whole file
against the cluster first and writes nothing if anything is wrong; then it sends the changes
through the admin API, one request each, and says what each changed. Loading the same file
again changes nothing.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from scheduler.accounts.changes import account_changes
from scheduler.accounts.tree import (
    ROOT,
    AccountConfig,
    Accounts,
    AccountsError,
    BudgetConfig,
    UserConfig,
)
from scheduler.cli.common import call, client, fail, plain, settings
from scheduler.client import ClientError
from scheduler.policy.budget import PeriodError, period_bounds

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
ACCOUNT_KEYS = ("parent", "shares", "max_running_gpus")
USER_KEYS = ("accounts", "default_account", "admin", "max_running_gpus", "max_jobs")
BUDGET_KEYS = ("scope", "name", "limit_hours", "period")
LIMIT_MAX = 10**12


# ------------------------------------------------------------------------------- the file


def _key(name: str) -> str:
    """A TOML key: bare when it can be, else quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value), ensure_ascii=False)


def to_toml(data: dict[str, Any]) -> str:
    """The dump as TOML, from GET /v1/accounts's answer (an admin's: everyone)."""
    out = ["# labq accounts, users and budgets (`labq admin dump`); apply with",
           "# `labq admin load FILE`. A limit left out is none; budgets are in billed",
           "# GPU-hours, as in force now (top-ups included).", ""]
    for acct in sorted(data.get("accounts", []), key=lambda a: a["name"]):
        out.append(f"[accounts.{_key(acct['name'])}]")
        out += [f"{k} = {_value(acct[k])}" for k in ACCOUNT_KEYS if acct.get(k) is not None]
        out.append("")
    for usr in sorted(data.get("users", []), key=lambda u: u["name"]):
        out.append(f"[users.{_key(usr['name'])}]")
        out += [f"{k} = {_value(usr[k])}" for k in USER_KEYS if usr.get(k) is not None]
        out.append("")
    for row in sorted(data.get("budgets", []), key=lambda b: (b["scope"], b["name"])):
        out.append("[[budgets]]")
        out += [f"{k} = {_value(row[k])}" for k in BUDGET_KEYS]
        out.append("")
    return "\n".join(out)


@dataclass
class Wanted:
    """What a file asks for, checked in itself (names, types, ranges)."""

    accounts: dict[str, AccountConfig] = field(default_factory=dict)
    users: dict[str, UserConfig] = field(default_factory=dict)
    budgets: dict[str, BudgetConfig] = field(default_factory=dict)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value) and 0 <= value <= 1e15


def _limit(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool)
                             and 0 <= value <= LIMIT_MAX)


def parse(text: str, now: float, semesters: list[list[str]]) -> tuple[Wanted, list[str]]:
    """The file's accounts, users and budgets, and every problem found in it, one line each."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return Wanted(), [f"not TOML: {exc}"]
    wanted, problems = Wanted(), []
    for extra in sorted(set(data) - {"accounts", "users", "budgets"}):
        problems.append(f"unknown table {extra!r} (known: accounts, users, budgets)")
    accounts, users, budgets = (data.get(k, {} if k != "budgets" else [])
                                for k in ("accounts", "users", "budgets"))
    if not isinstance(accounts, dict) or not isinstance(users, dict):
        return wanted, problems + ["[accounts] and [users] must be tables of names"]
    if not isinstance(budgets, list):
        return wanted, problems + ["budgets must be [[budgets]] entries"]
    for name, entry in accounts.items():
        _parse_account(wanted, problems, name, entry)
    for name, entry in users.items():
        _parse_user(wanted, problems, name, entry)
    for number, entry in enumerate(budgets, 1):
        _parse_budget(wanted, problems, number, entry, now, semesters)
    return wanted, problems


def _entry_problems(where: str, entry: Any, known: tuple[str, ...]) -> list[str] | None:
    """An entry's problems of form (unknown keys: reported, the rest still read), or None
    when it is no table at all (nothing more can be read of it)."""
    if not isinstance(entry, dict):
        return None
    bad = sorted(set(entry) - set(known))
    return [f"{where}: unknown key(s) {', '.join(bad)} (known: {', '.join(known)})"] if bad \
        else []


def _named_table(problems: list[str], kind: str, name: str, entry: Any,
                 known: tuple[str, ...]) -> dict[str, Any] | None:
    """An account's or user's entry if its name and form can be read (unknown keys reported,
    the rest still read), else None with the problem reported."""
    where = f"{kind} {name!r}"
    if not _NAME.match(name) or (kind == "account" and name == ROOT):
        problems.append(f"{where}: a name of letters, digits, '_', '.', '@', '-'"
                        + (" (not root)" if kind == "account" else ""))
        return None
    form = _entry_problems(where, entry, known)
    if form is None:
        problems.append(f"{where}: must be a table")
        return None
    problems += form
    return dict(entry)


def _parse_account(wanted: Wanted, problems: list[str], name: str, raw: Any) -> None:
    where = f"account {name!r}"
    entry = _named_table(problems, "account", name, raw, ACCOUNT_KEYS)
    if entry is None:
        return
    parent, shares, limit = (entry.get("parent", ROOT), entry.get("shares", 1.0),
                             entry.get("max_running_gpus"))
    if not isinstance(parent, str):
        problems.append(f"{where}: parent must be an account name")
    elif not _number(shares):
        problems.append(f"{where}: shares = {shares!r}: give a number of zero or more")
    elif not _limit(limit):
        problems.append(f"{where}: max_running_gpus = {limit!r}: give a whole number of "
                        "zero or more (leave it out for none)")
    else:
        wanted.accounts[name] = AccountConfig(name, parent, float(shares), limit)


def _parse_user(wanted: Wanted, problems: list[str], name: str, raw: Any) -> None:
    where = f"user {name!r}"
    entry = _named_table(problems, "user", name, raw, USER_KEYS)
    if entry is None:
        return
    member = entry.get("accounts")
    if not isinstance(member, dict) or not member or not all(
            isinstance(k, str) and _number(v) for k, v in member.items()):
        problems.append(f"{where}: accounts must be a table of account = shares (at least "
                        "one; shares zero or more)")
        return
    default = entry.get("default_account", sorted(member)[0])
    admin = entry.get("admin", False)
    limits = {k: entry.get(k) for k in ("max_running_gpus", "max_jobs")}
    wrong = [k for k, v in limits.items() if not _limit(v)]
    if default not in member:
        problems.append(f"{where}: default_account {default!r} is not one of its accounts")
    elif not isinstance(admin, bool):
        problems.append(f"{where}: admin = {admin!r}: use true or false")
    elif wrong:
        problems += [f"{where}: {k} = {limits[k]!r}: give a whole number of zero or more "
                     "(leave it out for none)" for k in wrong]
    else:
        wanted.users[name] = UserConfig(name, {k: float(v) for k, v in member.items()},
                                        default, admin, limits["max_running_gpus"],
                                        limits["max_jobs"])


def _parse_budget(wanted: Wanted, problems: list[str], number: int, entry: Any, now: float,
                  semesters: list[list[str]]) -> None:
    form = _entry_problems(f"budget {number}", entry, BUDGET_KEYS)
    if form is None:
        problems.append(f"budget {number}: must be a table")
        return
    problems += form
    scope, name = entry.get("scope"), entry.get("name")
    hours: Any = entry.get("limit_hours")
    period = entry.get("period", "month")
    if scope not in ("account", "user") or not isinstance(name, str) or \
            not _NAME.match(name):
        problems.append(f"budget {number}: give scope = \"account\" or \"user\" and its name")
        return
    where = f"budget {scope} {name!r}"
    if not _number(hours):
        problems.append(f"{where}: limit_hours = {hours!r}: give billed GPU-hours, zero or "
                        "more")
        return
    try:
        if not isinstance(period, str):
            raise PeriodError("period: use month, semester or YYYY-MM-DD:YYYY-MM-DD")
        period_bounds(period, now, [(a, b) for a, b in semesters])
    except PeriodError as exc:
        problems.append(f"{where}: {exc}")
        return
    if f"{scope}:{name}" in wanted.budgets:
        problems.append(f"{where}: given twice")
        return
    wanted.budgets[f"{scope}:{name}"] = BudgetConfig(scope, name, float(hours), period)


# ------------------------------------------------------------------------------- the plan


def current_state(data: dict[str, Any]) -> tuple[Accounts, dict[str, tuple[float, str]]]:
    """The cluster's tree from GET /v1/accounts, and each budget in force now: (billed
    GPU-hours with top-ups, period)."""
    accounts = {a["name"]: AccountConfig(a["name"], a["parent"], float(a["shares"]),
                                         a.get("max_running_gpus")) for a in data["accounts"]}
    users = {u["name"]: UserConfig(u["name"], {k: float(v) for k, v in u["accounts"].items()},
                                   u.get("default_account"), bool(u.get("admin")),
                                   u.get("max_running_gpus"), u.get("max_jobs"))
             for u in data["users"]}
    budgets = {f"{b['scope']}:{b['name']}": (float(b["limit_hours"]), b["period"])
               for b in data.get("budgets", [])}
    configs = {f"{b['scope']}:{b['name']}": BudgetConfig(b["scope"], b["name"],
                                                          float(b["limit_hours"]), b["period"])
               for b in data.get("budgets", [])}
    return Accounts(accounts, users, budgets=configs), budgets


def _ancestors(tree: dict[str, str], name: str) -> Iterator[str]:
    seen = {name}
    walk = tree.get(name)
    while walk and walk != ROOT:
        yield walk
        if walk in seen:
            return
        seen.add(walk)
        walk = tree.get(walk)


def tree_problems(wanted: Wanted, state: Accounts) -> list[str]:
    """What the file asks that the cluster's tree (as the file would leave it) cannot hold."""
    problems = []
    parents = {n: a.parent for n, a in state.accounts.items()}
    parents.update({n: a.parent for n, a in wanted.accounts.items()})
    for name, acct in sorted(wanted.accounts.items()):
        if acct.parent != ROOT and acct.parent not in parents:
            problems.append(f"account {name!r}: no parent account {acct.parent!r} (in the file "
                            "or the cluster)")
        elif name in _ancestors(parents, name):
            problems.append(f"account {name!r}: under parent {acct.parent!r} it would be its own "
                            "ancestor")
    for name, usr in sorted(wanted.users.items()):
        missing = sorted(a for a in usr.accounts if a not in parents)
        if missing:
            problems.append(f"user {name!r}: no account(s) {', '.join(map(repr, missing))} (in "
                            "the file or the cluster)")
    for _, budget in sorted(wanted.budgets.items()):
        if budget.scope == "account" and budget.name not in parents:
            problems.append(f"budget account {budget.name!r}: no such account (in the file or "
                            "the cluster)")
    return problems


def _depth(parents: dict[str, str], name: str) -> int:
    return sum(1 for _ in _ancestors(parents, name))


def plan(wanted: Wanted, state: Accounts, budgets_now: dict[str, tuple[float, str]]
         ) -> list[dict[str, Any]]:
    """The admin API requests that make the cluster what the file says (none when it is)."""
    bodies: list[dict[str, Any]] = []
    parents = {n: a.parent for n, a in state.accounts.items()}
    parents.update({n: a.parent for n, a in wanted.accounts.items()})
    for name in sorted(wanted.accounts, key=lambda n: (_depth(parents, n), n)):
        want, have = wanted.accounts[name], state.accounts.get(name)
        base = {"target": "account", "name": name}
        if have is None:
            bodies.append({**base, "op": "add", "parent": want.parent, "shares": want.shares})
            have = AccountConfig(name, want.parent, want.shares)
        change: dict[str, Any] = {}
        if have.parent != want.parent:
            change["parent"] = want.parent
        if have.shares != want.shares:
            change["shares"] = want.shares
        if have.max_running_gpus != want.max_running_gpus:
            change["max_running_gpus"] = want.max_running_gpus
        if change:
            bodies.append({**base, "op": "set", **change})
    for name, wuser in sorted(wanted.users.items()):
        base = {"target": "user", "name": name}
        user = state.users.get(name) or UserConfig(name)
        order = [wuser.default_account] + sorted(a for a in wuser.accounts
                                                if a != wuser.default_account)
        for acct in order:
            assert acct is not None
            if acct not in user.accounts:
                bodies.append({**base, "op": "add", "account": acct,
                               "shares": wuser.accounts[acct]})
            elif user.accounts[acct] != wuser.accounts[acct]:
                bodies.append({**base, "op": "set", "account": acct,
                               "shares": wuser.accounts[acct]})
        change = {}
        if user.accounts and user.default_account != wuser.default_account:
            change["default_account"] = wuser.default_account
        if user.admin != wuser.admin:
            change["admin"] = wuser.admin
        for key in ("max_running_gpus", "max_jobs"):
            if getattr(user, key) != getattr(wuser, key):
                change[key] = getattr(wuser, key)
        if change:
            bodies.append({**base, "op": "set", **change})
        for acct in sorted(set(user.accounts) - set(wuser.accounts)):
            bodies.append({**base, "op": "rm", "account": acct})
    for key, want_budget in sorted(wanted.budgets.items()):
        base = {"target": "budget", "scope": want_budget.scope, "name": want_budget.name}
        now_budget = budgets_now.get(key)
        if now_budget is not None and now_budget[1] == want_budget.period and math.isclose(
                now_budget[0], want_budget.limit_hours, rel_tol=1e-9, abs_tol=1e-9):
            continue
        if now_budget is not None and now_budget[1] == want_budget.period:
            bodies.append({**base, "op": "rm"})  # its top-ups go: the file's limit is all
        bodies.append({**base, "op": "set", "limit": want_budget.limit_hours,
                       "period": want_budget.period})
    return bodies


def simulate(state: Accounts, bodies: list[dict[str, Any]], now: float,
             semesters: list[list[str]]) -> list[str]:
    """Each request checked as the coordinator will check it, in order, on the state the
    ones before it leave; the problems found (nothing is sent)."""
    problems = []
    for body in bodies:
        try:
            changes = account_changes(state, body, now, semesters)
        except (AccountsError, KeyError, TypeError, ValueError) as exc:
            problems.append(f"{describe(body)}: {str(exc).strip(chr(39) + chr(34))}")
            continue
        accounts, users, budgets = dict(state.accounts), dict(state.users), dict(state.budgets)
        for kind, name, value in changes:
            tables: dict[str, dict[str, Any]] = {"account": accounts, "user": users,
                                                 "budget": budgets}
            table = tables[kind]
            if not value:
                table.pop(name, None)
            else:
                cls: Any = {"account": AccountConfig, "user": UserConfig,
                            "budget": BudgetConfig}[kind]
                table[name] = cls(**json.loads(value))
        state = replace(state, accounts=accounts, users=users, budgets=budgets)
    return problems


def describe(body: dict[str, Any]) -> str:
    """One request, as a line a person reads."""
    target, op, name = body["target"], body["op"], plain(body["name"])
    if target == "budget":
        what = {"rm": "removed (its top-ups with it)",
                "set": f"set to {body.get('limit', 0):g} billed GPU-hours per "
                       f"{plain(body.get('period'))}"}[op]
        return f"budget {body['scope']} {name}: {what}"
    def shown(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value:g}" if isinstance(value, float) else plain(value)

    fields = ", ".join(f"{k} {shown(v)}" for k, v in body.items()
                       if k not in ("target", "op", "name", "account"))
    if target == "user" and op == "add":
        return f"user {name}: joins account {plain(body['account'])} ({fields})"
    if target == "user" and op == "rm":
        return f"user {name}: leaves account {plain(body['account'])}"
    if target == "user" and "account" in body:
        fields = f"shares in {plain(body['account'])} {body['shares']:g}"
    verb = {"add": "added", "set": "set"}[op]
    return f"{target} {name}: {verb}{' (' + fields + ')' if fields else ''}"


# ------------------------------------------------------------------------------- commands


def _require_admin() -> None:
    me = call("GET", "/v1/whoami")
    if not me.get("admin"):
        fail(f"only admins dump or load accounts ({plain(me.get('user'))} is not an admin)")


@click.command("dump")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def dump(file: Path | None) -> None:
    """Write the account tree, users and budgets as TOML to FILE (default: standard output),
    for `labq admin load`."""
    _require_admin()
    text = to_toml(call("GET", "/v1/accounts"))
    if file is None:
        click.echo(text, nl=False)
        return
    try:
        file.write_text(text)
    except OSError as exc:
        fail(f"cannot write {file}: {exc.strerror or exc}")
    click.echo(f"dumped to {plain(file)}", err=True)


@click.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="say what would change; change nothing")
def load(file: Path, dry_run: bool) -> None:
    """Make the accounts, users and budgets FILE names exactly as it says (others are left
    alone). The whole file is checked first: nothing changes if anything is wrong."""
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}")
    now = time.time()
    semesters = settings().semesters
    wanted, problems = parse(text, now, semesters)
    _require_admin()
    state, budgets_now = current_state(call("GET", "/v1/accounts"))
    problems += tree_problems(wanted, state)
    bodies = plan(wanted, state, budgets_now) if not problems else []
    problems += simulate(state, bodies, now, semesters)
    if problems:
        for problem in problems:
            click.echo(f"labq: error: {plain(file)}: {plain(problem)}", err=True)
        click.echo(f"labq: error: nothing changed ({len(problems)} problem(s) in {plain(file)})",
                   err=True)
        sys.exit(1)
    if not bodies:
        click.echo(f"nothing to change: the cluster is as {plain(file)} says")
        return
    for done, body in enumerate(bodies):
        if dry_run:
            click.echo(f"would change: {describe(body)}")
            continue
        try:
            client().request("POST", "/v1/admin/accounts", body)
        except ClientError as exc:
            fail(f"{describe(body)}: {exc} ({done} of {len(bodies)} changes made before it; "
                 "load the file again once fixed)")
        click.echo(f"changed: {describe(body)}")
