"""The admin routes of the API, mixed into `Api`: the account tree, users and budgets (read by
everyone, under private_data each their own; changed by admins), per-user API tokens (made
only by those who may act for others, listed and revoked by admins) and node maintenance
(drain, resume, remove: admins only, each in the audit log)."""

from __future__ import annotations

import logging
import pwd
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from scheduler.accounts.changes import account_changes
from scheduler.accounts.tree import Accounts, AccountsError
from scheduler.cluster.budgets import budget_state
from scheduler.cluster.views import running_view
from scheduler.config import Settings
from scheduler.server.http import ApiError, json_object
from scheduler.server.identity import Caller
from scheduler.server.validation import InputError, check_text, check_user_name
from scheduler.store import Outcome, Store
from scheduler.store.tokens import ID_RE as TOKEN_ID_RE

audit = logging.getLogger("labq.audit")  # every act for another user, by whom

TOKEN_DEFAULT_S = 90 * 86400  # an API token lasts this long unless asked otherwise
TOKEN_MAX_S = 400 * 86400  # the longest an API token may last
MAX_DRAIN_REASON = 200  # characters of a drain's reason (one line, shown in `labq nodes`)
NODE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")


class AdminRoutes:
    """Needs the `Api` it is mixed into: its store, settings, caller and accounts cache."""

    store: Store
    settings: Settings
    _accounts: tuple[float, Accounts] | None
    kick: Callable[[], None]  # wake this coordinator's cycle

    async def caller(self, request: web.Request) -> Caller:
        raise NotImplementedError

    def node_routes(self) -> list[web.RouteDef]:
        """The admin's node maintenance routes (drain, resume, remove)."""
        return [web.post("/v1/admin/nodes/{name}/drain", self.node_drain),
                web.post("/v1/admin/nodes/{name}/resume", self.node_resume),
                web.post("/v1/admin/nodes/{name}/remove", self.node_remove)]

    def acts_for_others(self, caller: Caller) -> bool:
        raise NotImplementedError

    async def accounts_list(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        state = await self.store.accounts()
        scopes = None  # every budget; under private_data a user sees only their own and
        if self.settings.private_data and not caller.is_admin:  # their accounts' budgets
            mine = state.users.get(caller.user)
            scopes = {("user", caller.user)} | {("account", a) for a in
                                                (mine.accounts if mine else ())}
        users = [asdict(u) for name, u in sorted(state.users.items())
                 if scopes is None or name == caller.user]  # others' settings: admins only
        return web.json_response({
            "accounts": [asdict(a) for _, a in sorted(state.accounts.items())],
            "users": users,
            "budgets": await self._budget_rows(state, scopes),
        })

    async def _budget_rows(self, state: Accounts, scopes: set[tuple[str, str]] | None = None
                           ) -> list[dict[str, Any]]:
        """Each budget in force: limit, spent, committed and left in billed GPU-hours."""
        now = time.time()
        running = [running_view(j, now) for j in await self.store.active_jobs()]
        budget = budget_state(state, await self.store.daily_usage(), running, now,
                              self.settings.semesters)
        rows = []
        for b in budget.budgets:
            if scopes is not None and (b.scope, b.name) not in scopes:
                continue
            spent = budget.spent.get((b.scope, b.name), 0.0)
            committed = budget.committed.get((b.scope, b.name), 0.0)
            used = (spent + committed) / b.limit if b.limit else 1.0
            rows.append({
                "scope": b.scope, "name": b.name, "period": b.period,
                "period_start": b.start, "period_end": b.end,
                "limit_hours": b.limit / 3600, "spent_hours": spent / 3600,
                "committed_hours": committed / 3600,
                "left_hours": (b.limit - spent - committed) / 3600, "used_ratio": used,
                "warning": "100%" if used >= 1.0 else "80%" if used >= 0.8 else None,
            })
        return rows

    async def accounts_change(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        if not caller.is_admin:
            raise ApiError(403, f"only admins change accounts and users ({caller.user} is not "
                                "an admin)")
        body = await json_object(request)
        for _attempt in range(10):
            state = await self.store.accounts()
            try:
                changes = account_changes(state, body, time.time(), self.settings.semesters)
            except (AccountsError, KeyError, TypeError, ValueError) as exc:
                raise InputError(str(exc).strip("'\"")) from None
            if await self.store.put_accounts(state.version, changes):
                self._accounts = None
                return web.json_response({"changed": [[k, n] for k, n, _ in changes]})
        raise ApiError(409, "accounts kept changing under this request; try again")

    async def _admin_only(self, request: web.Request, what: str) -> Caller:
        caller = await self.caller(request)
        if not caller.is_admin:
            raise ApiError(403, f"only admins {what} ({caller.user} is not an admin)")
        return caller

    async def token_create(self, request: web.Request) -> web.Response:
        """A new API token for a user: its text is in this answer and nowhere else."""
        caller = await self.caller(request)
        # A token acts as its user, jobs included: made only by those who may act for others.
        if not self.acts_for_others(caller):
            raise ApiError(403, "only root makes API tokens (or an operator: [limits] "
                                f"operators); {caller.user} is neither")
        body = await json_object(request)
        user = check_user_name(body.get("user"))
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            raise ApiError(404, f"no user {user} on the coordinator's host: a token is a Unix "
                                "user's") from None
        if uid == 0:
            raise ApiError(400, "no API token for root: root uses the Unix socket or MUNGE")
        expires_s = body.get("expires_s", TOKEN_DEFAULT_S)
        if (isinstance(expires_s, bool) or not isinstance(expires_s, int | float)
                or not 0 <= expires_s <= TOKEN_MAX_S):
            raise InputError(f"expires_s: give seconds from 0 (never) to {TOKEN_MAX_S}")
        now = time.time()
        record, text = await self.store.create_token(user, now,
                                                     now + expires_s if expires_s else 0.0)
        audit.info("%s (uid %d) made API token %s for %s", caller.user, caller.uid, record.id,
                   user)
        return web.json_response({**record.to_dict(), "token": text})

    async def tokens_list(self, request: web.Request) -> web.Response:
        await self._admin_only(request, "list API tokens")
        asked = request.query.get("user")
        user = check_user_name(asked) if asked else None
        now = time.time()
        return web.json_response([{**t.to_dict(), "expired": bool(t.expires and
                                                                   t.expires <= now)}
                                  for t in await self.store.tokens(user)])

    async def token_revoke(self, request: web.Request) -> web.Response:
        caller = await self._admin_only(request, "revoke API tokens")
        token_id = request.match_info["id"]
        if not TOKEN_ID_RE.fullmatch(token_id):
            raise InputError(f"{token_id[:40]!r} is not a token id (16 hex digits): see "
                             "`labq admin token list`")
        record = await self.store.revoke_token(token_id)
        if record is None:
            raise ApiError(404, f"no API token {token_id}: see `labq admin token list`")
        audit.info("%s (uid %d) revoked API token %s of %s", caller.user, caller.uid,
                   token_id, record.user)
        return web.json_response({"id": token_id, "user": record.user, "revoked": True})

    # ---------------------------------------------------------------- node maintenance

    async def _node_name(self, request: web.Request, what: str) -> tuple[Caller, str]:
        caller = await self._admin_only(request, what)
        name = request.match_info["name"]
        if not NODE_NAME.fullmatch(name):
            raise InputError(f"{name[:64]!r} is not a node name: see `labq nodes`")
        return caller, name

    async def node_drain(self, request: web.Request) -> web.Response:
        """Keep new jobs off a node; the jobs running there go on to their end."""
        caller, name = await self._node_name(request, "drain nodes")
        body = await json_object(request)
        reason = check_text(body.get("reason"), "--reason", MAX_DRAIN_REASON).strip()
        if not reason:
            raise InputError("say why the node is drained: --reason TEXT (shown in `labq nodes` "
                             "and in the waiting jobs' reasons)")
        done = await self.store.drain_node(name, caller.user, reason, time.time())
        if done.outcome == Outcome.NO_SUCH_NODE:
            raise ApiError(404, f"no node {name}: see `labq nodes`")
        audit.info("%s (uid %d) drained node %s (jobs still hold %d of its GPUs): %s", caller.user,
                   caller.uid, name, done.gpus_allocated, reason)
        self.kick()
        return web.json_response({
            "name": name, "shown_state": "DRAINING" if done.gpus_allocated else "DRAINED",
            "drained_by": caller.user, "drain_reason": reason,
            "gpus_allocated": done.gpus_allocated,
            "already": done.outcome == Outcome.ALREADY})

    async def node_resume(self, request: web.Request) -> web.Response:
        """Lift a drain: jobs may start on the node again."""
        caller, name = await self._node_name(request, "resume nodes")
        done = await self.store.resume_node(name)
        if done.outcome == Outcome.NO_SUCH_NODE:
            raise ApiError(404, f"no node {name}: see `labq nodes`")
        if done.outcome == Outcome.NOT_DRAINED:
            raise ApiError(409, f"node {name} is not drained: nothing to resume")
        audit.info("%s (uid %d) resumed node %s (drained by %s)", caller.user, caller.uid,
                   name, done.drained_by)
        self.kick()
        return web.json_response({"name": name, "resumed": True,
                                  "drained_by": done.drained_by})

    async def node_remove(self, request: web.Request) -> web.Response:
        """Forget a retired node: refused while its agent reports or jobs hold it."""
        caller, name = await self._node_name(request, "remove nodes")
        now = time.time()
        timeout = self.settings.node_timeout_s
        done = await self.store.remove_node(name, now - timeout)
        if done.outcome == Outcome.NO_SUCH_NODE:
            raise ApiError(404, f"no node {name}: see `labq nodes`")
        if done.outcome == Outcome.ALIVE:
            raise ApiError(409, f"node {name}'s agent reported {now - done.last_heartbeat:.0f} s "
                                f"ago: stop `labq agent` on {name} first (a node is removed "
                                f"only after {timeout:.0f} s without a heartbeat, node_timeout_s; "
                                "a node whose agent reports joins again at once)")
        if done.outcome == Outcome.HOLDS_JOBS:
            jobs = ", ".join(done.jobs[:10]) + (" ..." if len(done.jobs) > 10 else "")
            raise ApiError(409, f"node {name} still holds job(s) {jobs}: drain it (`labq admin "
                                f"node drain {name} --reason ...`) and let them end, or cancel "
                                "them, then remove it")
        audit.info("%s (uid %d) removed node %s", caller.user, caller.uid, name)
        return web.json_response({"name": name, "removed": True})
