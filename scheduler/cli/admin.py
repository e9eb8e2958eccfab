"""`labq admin`: accounts, users, budgets, API tokens and node maintenance (admins only; the
coordinator checks)."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

import click

from scheduler.cli.common import call, fail, plain, print_budgets, print_json, usage_fail
from scheduler.cli.dump import dump, load


@click.group()
def admin() -> None:
    """Admins: accounts, users, budgets, API tokens and node maintenance."""


admin.add_command(dump)  # the account tree, users and budgets to a file
admin.add_command(load)  # ...and back, all or nothing


@admin.group()
def account() -> None:
    """The account tree: lab -> groups or projects, each with shares."""


@admin.group()
def user() -> None:
    """Users in accounts, with shares, a default account, limits and the admin role."""


def _admin(target: str, op: str, name: str, **fields: Any) -> None:
    body = {"target": target, "op": op, "name": name,
            **{k: v for k, v in fields.items() if v is not None}}
    result = call("POST", "/v1/admin/accounts", body)
    for kind, changed in result["changed"]:
        click.echo(f"{kind} {plain(changed)}: {'removed' if op == 'rm' else 'saved'}")


@admin.group()
def budget() -> None:
    """Cost budgets in billed GPU-hours (GPU-hours x the GPU model's billing weight)."""


def _scope(account: str | None, user: str | None) -> tuple[str, str]:
    if bool(account) == bool(user):
        fail("say whose budget: --account A or --user U (one of them)")
    return ("account", account) if account else ("user", user or "")


@budget.command("set")
@click.option("--account", "-A", default=None)
@click.option("--user", "-u", default=None)
@click.option("--limit", required=True, type=float, help="billed GPU-hours per period")
@click.option("--period", default=None, help="month (default), semester or YYYY-MM-DD:YYYY-MM-DD")
def budget_set(account: str | None, user: str | None, limit: float, period: str | None) -> None:
    """Set a budget. Jobs that would overrun it wait HELD; running jobs are never stopped."""
    scope, name = _scope(account, user)
    _admin("budget", "set", name, scope=scope, limit=limit, period=period)


@budget.command("topup")
@click.option("--account", "-A", default=None)
@click.option("--user", "-u", default=None)
@click.option("--add", "add", required=True, type=float, help="billed GPU-hours to add")
def budget_topup(account: str | None, user: str | None, add: float) -> None:
    """Add to a budget for its current period."""
    scope, name = _scope(account, user)
    _admin("budget", "topup", name, scope=scope, add=add)


@budget.command("rm")
@click.option("--account", "-A", default=None)
@click.option("--user", "-u", default=None)
def budget_rm(account: str | None, user: str | None) -> None:
    """Remove a budget."""
    scope, name = _scope(account, user)
    _admin("budget", "rm", name, scope=scope)


@budget.command("list")
@click.option("--json", "as_json", is_flag=True)
def budget_list(as_json: bool) -> None:
    """Budgets in force: limit, spent, committed by running jobs, and what is left."""
    rows = call("GET", "/v1/accounts")["budgets"]
    if as_json:
        print_json(rows)
        return
    print_budgets(rows)


@account.command("add")
@click.argument("name")
@click.option("--parent", default=None, help="parent account (default: root)")
@click.option("--shares", default=None, type=float, help="shares among its siblings (default 1)")
def account_add(name: str, parent: str | None, shares: float | None) -> None:
    """Add an account."""
    _admin("account", "add", name, parent=parent, shares=shares)


@account.command("set")
@click.argument("name")
@click.option("--parent", default=None, help="move under this account")
@click.option("--shares", default=None, type=float)
@click.option("--max-running-gpus", default=None, help="a number, or 'none'")
def account_set(name: str, parent: str | None, shares: float | None,
                max_running_gpus: str | None) -> None:
    """Change an account's shares, parent or limits."""
    _admin("account", "set", name, parent=parent, shares=shares,
           max_running_gpus=max_running_gpus)


@account.command("rm")
@click.argument("name")
def account_rm(name: str) -> None:
    """Remove an account that has no sub-accounts and no users."""
    _admin("account", "rm", name)


@account.command("list")
@click.option("--json", "as_json", is_flag=True)
def account_list(as_json: bool) -> None:
    """The account tree with its users."""
    data = call("GET", "/v1/accounts")
    if as_json:
        print_json(data)
        return
    children: dict[str, list[dict[str, Any]]] = {}
    for acct in data["accounts"]:
        children.setdefault(acct["parent"], []).append(acct)
    members: dict[str, list[str]] = {}
    for usr in data["users"]:
        for name, shares in usr["accounts"].items():
            mark = "*" if usr["default_account"] == name else ""
            members.setdefault(name, []).append(f"{plain(usr['name'])}{mark} ({shares:g})")

    def walk(parent: str, depth: int) -> None:
        for acct in children.get(parent, []):
            limit = acct.get("max_running_gpus")
            extra = f", max {limit} running GPUs" if limit is not None else ""
            click.echo(f"{'  ' * depth}{plain(acct['name'])} (shares {acct['shares']:g}{extra})")
            if members.get(acct["name"]):
                click.echo(f"{'  ' * (depth + 1)}users: {', '.join(members[acct['name']])}")
            walk(acct["name"], depth + 1)

    click.echo("root")
    walk("root", 1)


@user.command("add")
@click.argument("name")
@click.option("--account", "-A", required=True, help="an account the user may charge")
@click.option("--shares", default=None, type=float, help="shares in that account (default 1)")
def user_add(name: str, account: str, shares: float | None) -> None:
    """Add a user to an account (again for each further account)."""
    _admin("user", "add", name, account=account, shares=shares)


@user.command("set")
@click.argument("name")
@click.option("--account", "-A", default=None, help="the account --shares applies to")
@click.option("--shares", default=None, type=float)
@click.option("--default-account", default=None)
@click.option("--admin/--no-admin", "is_admin", default=None, help="the admin role")
@click.option("--max-running-gpus", default=None, help="a number, or 'none'")
@click.option("--max-jobs", default=None, help="pending + running jobs; a number, or 'none'")
def user_set(name: str, account: str | None, shares: float | None, default_account: str | None,
             is_admin: bool | None, max_running_gpus: str | None, max_jobs: str | None) -> None:
    """Change a user's shares, default account, admin role or limits."""
    _admin("user", "set", name, account=account, shares=shares, default_account=default_account,
           admin=is_admin, max_running_gpus=max_running_gpus, max_jobs=max_jobs)


@user.command("rm")
@click.argument("name")
@click.option("--account", "-A", default=None, help="only from this account")
def user_rm(name: str, account: str | None) -> None:
    """Remove a user (or only their membership of one account)."""
    _admin("user", "rm", name, account=account)


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
def user_list(as_json: bool) -> None:
    """Users, their accounts (default marked *), roles and limits."""
    data = call("GET", "/v1/accounts")
    if as_json:
        print_json(data["users"])
        return
    for usr in data["users"]:
        accts = ", ".join(f"{plain(a)}{'*' if a == usr['default_account'] else ''} ({s:g})"
                          for a, s in sorted(usr["accounts"].items()))
        limits = [f"{k.replace('_', ' ')} {usr[k]}" for k in ("max_running_gpus", "max_jobs")
                  if usr.get(k) is not None]
        role = " admin" if usr["admin"] else ""
        click.echo(f"{plain(usr['name'])}{role}: {accts}"
                   f"{'; ' + ', '.join(limits) if limits else ''}")


@admin.group()
def token() -> None:
    """API tokens: a user's identity over the TCP API where MUNGE is not installed."""


@token.command("create")
@click.argument("user_name", metavar="USER")
@click.option("--expires", default="90d", show_default=True,
              help="lifetime: 30d, 12h, ...; 'never' for no expiry")
@click.option("--json", "as_json", is_flag=True)
def token_create(user_name: str, expires: str, as_json: bool) -> None:
    """Make an API token for USER and print it (once: only its hash is kept). The token acts
    as USER over the TCP API: give it to USER alone (LABQ_TOKEN, or ~/.config/labq/token with
    mode 0600)."""
    from scheduler.timeparse import TimeLimitError, parse_duration

    if expires.strip().lower() == "never":
        seconds = 0
    else:
        try:
            seconds = parse_duration(expires)
        except TimeLimitError as exc:
            usage_fail(f"--expires: {exc}")
    made = call("POST", "/v1/admin/tokens", {"user": user_name, "expires_s": seconds})
    if as_json:
        print_json(made)
        return
    until = (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(made["expires"]))
             if made["expires"] else "never")
    click.echo(f"token {made['id']} for {plain(made['user'])}, expires {until}:", err=True)
    click.echo(made["token"])


@token.command("list")
@click.argument("user_name", metavar="[USER]", required=False)
@click.option("--json", "as_json", is_flag=True)
def token_list(user_name: str | None, as_json: bool) -> None:
    """API tokens (never their secrets): id, user, made, expiry."""
    query = f"?user={quote(user_name)}" if user_name else ""
    rows = call("GET", f"/v1/admin/tokens{query}")
    if as_json:
        print_json(rows)
        return

    def day(when: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(when)) if when else "never"

    for row in rows:
        note = " (expired)" if row["expired"] else ""
        click.echo(f"{row['id']}  {plain(row['user'])}  made {day(row['created'])}  expires "
                   f"{day(row['expires'])}{note}")


@token.command("revoke")
@click.argument("token_id", metavar="ID")
def token_revoke(token_id: str) -> None:
    """Revoke an API token at once (see `labq admin token list` for ids)."""
    if not re.fullmatch(r"[0-9a-f]{16}", token_id):
        usage_fail(f"{plain(token_id)!r} is not a token id (16 hex digits): see "
                   "`labq admin token list`")
    done = call("POST", f"/v1/admin/tokens/{token_id}/revoke")
    click.echo(f"token {done['id']} of {plain(done['user'])}: revoked")


@admin.group()
def node() -> None:
    """Node maintenance: drain a node (its jobs finish, no new one starts there), resume it,
    or remove a retired one."""


def _node_path(name: str, act: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}", name):
        usage_fail(f"{plain(name)!r} is not a node name: see `labq nodes`")
    return f"/v1/admin/nodes/{quote(name)}/{act}"


@node.command("drain")
@click.argument("name", metavar="NODE")
@click.option("--reason", required=True,
              help="why, in one line: shown in `labq nodes` and to the jobs that wait")
def node_drain(name: str, reason: str) -> None:
    """Drain NODE: the jobs running there go on to their end, no new job starts there. It
    shows DRAINING until they have ended, then DRAINED, until `labq admin node resume`.
    An agent restart (an upgrade) needs no drain: the agent takes its running jobs back."""
    if not reason.strip():
        usage_fail("--reason: say why the node is drained")
    done = call("POST", _node_path(name, "drain"), {"reason": reason})
    jobs = (f"; jobs still hold {done['gpus_allocated']} of its GPUs and run to their end"
            if done["gpus_allocated"] else "")
    again = " (it was drained already: reason updated)" if done["already"] else ""
    click.echo(f"node {plain(done['name'])}: {done['shown_state']}{again}: no new job starts "
               f"there{jobs}")


@node.command("resume")
@click.argument("name", metavar="NODE")
def node_resume(name: str) -> None:
    """Lift NODE's drain: jobs may start there again."""
    done = call("POST", _node_path(name, "resume"))
    click.echo(f"node {plain(done['name'])}: resumed (drained by "
               f"{plain(done['drained_by'])} until now); jobs may start there again")


@node.command("remove")
@click.argument("name", metavar="NODE")
def node_remove(name: str) -> None:
    """Remove a retired NODE from the cluster (`labq nodes`, metrics, alerts). Stop its agent
    first, and let its jobs end (drain it); if its agent reports again later, the node joins
    again."""
    done = call("POST", _node_path(name, "remove"))
    click.echo(f"node {plain(done['name'])}: removed")
