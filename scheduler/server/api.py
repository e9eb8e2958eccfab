"""The coordinator's HTTP API, served on a Unix socket so the caller's uid is known.

Routes (JSON): see `scheduler.server.openapi`, also served at GET /openapi.json; the HTTP
plumbing (errors, strict bodies) is in `scheduler.server.http`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from aiohttp import web

from scheduler.accounts.tree import Accounts, AccountsError, UserConfig
from scheduler.cluster.read import ClusterState, build_snapshot, read_cluster
from scheduler.cluster.views import pending_view
from scheduler.config import Settings
from scheduler.coordinator.idle import IdlePolicy, annotate_nodes, job_idle
from scheduler.model import Job, JobState
from scheduler.noderun import output_path
from scheduler.policy.explain import standing_texts
from scheduler.policy.fairengine import FairShare
from scheduler.policy.fairshare import FairShareTable
from scheduler.policy.priority import Priority
from scheduler.server.adminroutes import AdminRoutes, audit
from scheduler.server.fits import NodeShape, node_shapes
from scheduler.server.historyroutes import HistoryRoutes
from scheduler.server.http import (
    MAX_REQUEST_BYTES,
    ApiError,
    errors_middleware,
    job_id_of,
    json_object,
)
from scheduler.server.identity import Caller, caller_for_uid, connection_uid
from scheduler.server.jobroutes import JobRoutes
from scheduler.server.openapi import OPENAPI
from scheduler.server.remote import REMOTE_UID
from scheduler.server.validation import (
    array_spec,
    build_spec,
    check_account_name,
    check_job_user,
    check_token,
    check_user_name,
    flag,
)
from scheduler.store import (
    JobCapError,
    Outcome,
    PendingCapError,
    Store,
    StoredCapError,
    SubmitCaps,
    new_token,
    parse_totals,
)
from scheduler.store.records import job_from_spec
from scheduler.store.store import SUBMIT_TOKEN_TTL_S
from scheduler.wire import JOB_FIELDS, PRIVATE_FIELDS, SubmitRequest

NODE_CACHE_S = 1.0


class Api(JobRoutes, AdminRoutes, HistoryRoutes):
    def __init__(self, store: Store, settings: Settings,
                 kick: Callable[[], None],
                 submitted: Callable[[list[Job]], None] | None = None,
                 fairshare: Callable[[float], FairShareTable | None] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.kick = kick
        self.submitted = submitted or (lambda _jobs: kick())
        # The leading coordinator's last fair-share table (reused by quota and priority).
        self.fairshare = fairshare or (lambda _now: None)
        self.fair = FairShare()  # this API's fair-share engine (quota, priority)
        self._nodes: tuple[float, tuple[NodeShape, ...]] | None = None
        self._nodes_read: asyncio.Future[tuple[NodeShape, ...]] | None = None  # under way
        self._accounts: tuple[float, Accounts] | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors_middleware],
                              client_max_size=self.settings.max_request_bytes)
        app[MAX_REQUEST_BYTES] = self.settings.max_request_bytes
        app.add_routes([
            web.get("/v1/whoami", self.whoami),
            web.post("/v1/jobs", self.submit),
            web.get("/v1/jobs", self.queue),
            web.get("/v1/jobs/{id}", self.show),
            web.post("/v1/jobs/{id}/cancel", self.cancel),
            web.post("/v1/jobs/{id}/hold", self.hold),
            web.post("/v1/jobs/{id}/release", self.release),
            web.post("/v1/jobs/{id}/update", self.update),
            web.post("/v1/jobs/{id}/requeue", self.requeue),
            web.get("/v1/jobs/{id}/logs", self.logs),
            web.get("/v1/nodes", self.nodes),
            web.get("/v1/quota", self.quota),
            web.get("/v1/priority", self.priority),
            web.get("/v1/accounts", self.accounts_list),
            web.post("/v1/admin/accounts", self.accounts_change),
            web.get("/v1/admin/tokens", self.tokens_list),
            web.post("/v1/admin/tokens", self.token_create),
            web.post("/v1/admin/tokens/{id}/revoke", self.token_revoke),
            web.get("/openapi.json", self.openapi),
            *self.node_routes(),
            *self.history_routes(),
        ])
        return app

    async def _nodes_cached(self) -> tuple[NodeShape, ...]:
        """The nodes' shapes for validating submissions (a submit's checks walk a few shapes,
        not every node); a second old at most (they change slowly). One
        read at a time: a request that finds them stale while a read is under way waits for
        that read (32 submits at once each reading 1,000 nodes held the event loop for
        seconds, the lease renewal and the cycle with it)."""
        now = time.monotonic()
        if self._nodes is not None and now - self._nodes[0] <= NODE_CACHE_S:
            return self._nodes[1]
        if self._nodes_read is None or self._nodes_read.done():
            self._nodes_read = asyncio.ensure_future(self._read_nodes(now))
        return await asyncio.shield(self._nodes_read)

    async def _read_nodes(self, now: float) -> tuple[NodeShape, ...]:
        shapes = node_shapes(await self.store.nodes())
        self._nodes = (now, shapes)
        return shapes

    async def _accounts_cached(self) -> Accounts:
        now = time.monotonic()
        if self._accounts is None or now - self._accounts[0] > NODE_CACHE_S:
            self._accounts = (now, await self.store.accounts())
        return self._accounts[1]

    async def caller(self, request: web.Request) -> Caller:
        """The peer's uid, as a user; admin if root, the daemon's uid, configured, or given
        the role in the account tree (read at most a second ago). On the Unix socket the
        kernel says the uid (SO_PEERCRED); over TCP the request's MUNGE credential or API
        token, checked by scheduler.server.remote before any handler runs."""
        uid = connection_uid(request.transport) if request.transport else None
        if uid is None:
            uid = request.get(REMOTE_UID)
        if uid is None:
            raise ApiError(401, "this API answers on its Unix socket, or over TCP with a MUNGE "
                                "credential or an API token")
        caller = caller_for_uid(uid, self.settings)
        if not caller.is_admin:
            user = (await self._accounts_cached()).users.get(caller.user)
            if user is not None and user.admin:
                caller = replace(caller, is_admin=True)
        return caller

    def acts_for_others(self, caller: Caller) -> bool:
        """Root, the uid the coordinator runs as (Slurm's SlurmUser) and the configured
        operators: never an admin merely for being one (an admin in the account tree is no
        reason to run code as any Unix user)."""
        return caller.uid in (0, os.getuid()) or caller.user in self.settings.operators

    async def whoami(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        return web.json_response({"user": caller.user, "uid": caller.uid,
                                  "admin": caller.is_admin})

    async def submit(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        accounts = await self._accounts_cached()
        req = SubmitRequest.from_json(await json_object(request))
        user = caller.user
        if req.as_user is not None and req.as_user != "":
            as_user = check_user_name(req.as_user)
            if as_user != caller.user:
                if not self.acts_for_others(caller):
                    raise ApiError(403, f"--as {as_user}: only root acts for another user (or "
                                        f"an operator: [limits] operators); {caller.user} is "
                                        "neither")
                audit.info("%s (uid %d) submits for %s", caller.user, caller.uid, as_user)
            user = as_user
        check_job_user(user, self.settings)
        requested = req.account or None
        if requested is not None:
            check_account_name(requested)
        try:
            account = accounts.account_for(
                user, requested, self.settings.default_account,
                enforce=self.settings.enforce_accounts, trusted=caller.is_admin)
        except AccountsError as exc:
            raise ApiError(403, str(exc)) from None
        req = replace(req, account=account)
        spec = build_spec(req, user, await self._nodes_cached(), self.settings)
        spec.submitter = caller.user
        array = array_spec(req, self.settings.max_array_size)
        count = len(array.indices) if array else 1
        hold = flag(req.hold, "hold")
        if spec.dependency:
            await self.check_targets(spec.dependency)
        return_jobs = flag(req.return_jobs, "return_jobs")
        client_token = check_token(req.token)
        caps = self._caps(caller, accounts.users.get(user))
        # A token names one client's request: scoped to who sent it and for whom, so another
        # user's token (seen in `ps`, a shared script) neither returns nor blocks their jobs.
        token = f"{caller.user}/{user}/{client_token}" if client_token else new_token()
        created: list[Job] = []
        now = time.time()
        try:
            if array is not None:  # one record; the leader makes tasks as they near their turn
                ids = await self.store.submit_array(job_from_spec(spec, "", now), array, token,
                                                    SUBMIT_TOKEN_TTL_S, hold, caps)
                self.kick()
            else:
                ids = await self.store.submit([spec], token, now, created, hold=hold,
                                              caps=caps)
                self.submitted(created)  # the jobs as stored: the coordinator need not read
        except PendingCapError as exc:
            raise ApiError(429, f"{user} has {exc.has:,} waiting jobs and may have "
                                f"{caps.pending:,} (max_pending_jobs): {count:,} more would be "
                                "over; wait for some to start, or cancel some") from None
        except StoredCapError as exc:
            raise stored_cap_refused(exc, user, count, caps) from None
        except JobCapError as exc:
            raise ApiError(429, f"{user} may have {caps.live:,} pending and running jobs "
                                f"(max_jobs) and has {exc.has:,}: {count:,} more would be "
                                "over; wait for some to end, or cancel some") from None
        warnings = [
            f"{row['scope']} {row['name']} has used {row['used_ratio']:.0%} of its "
            f"{row['period']} budget: {max(0.0, row['left_hours']):.1f} billed GPU-hours left"
            for row in (await self._budget_rows(accounts, {("user", spec.user), ("account",
                                                                         spec.account)})
                        if accounts.budgets else [])
            if row["warning"]]
        if return_jobs:
            jobs = [public(j) for j in await self.store.get_jobs(ids)]
            for array_id in ids if array is not None else []:
                record = await self.store.array(array_id)
                if record is not None:
                    jobs.append({**public(record.template), "array_tasks": record.spec,
                                 "array_throttle": record.throttle})
            return web.json_response({"ids": ids, "jobs": jobs,
                                      "warnings": warnings})
        return web.json_response({"ids": ids, "warnings": warnings})

    def _caps(self, caller: Caller, owner: UserConfig | None) -> SubmitCaps:
        """The caps a submit is held to in the step that stores it: the site's per-user caps
        (none for an admin: a bulk load or a benchmark is trusted, as for accounts), and the
        owner's own max_jobs from the accounts file, which holds whoever submits."""
        live = owner.max_jobs if owner is not None and owner.max_jobs is not None else 0
        if caller.is_admin:
            return SubmitCaps(live=live)
        return SubmitCaps(self.settings.max_pending_jobs, self.settings.max_stored_jobs_per_user,
                          self.settings.max_stored_bytes_per_user, live)

    def _hides(self, caller: Caller, owner: str) -> bool:
        """Whether `caller` sees only the public part of `owner`'s jobs and usage."""
        return self.settings.private_data and not caller.is_admin and owner != caller.user

    async def _show_job(self, caller: Caller, job: Job) -> dict[str, Any]:
        if job.array_job and not job.command and not job.state.is_terminal():
            job = await self.store.with_array_request(job)  # a task: its array's request
        idle = job_idle(job, IdlePolicy.from_settings(self.settings), time.time())
        return {**public(job, self._hides(caller, job.user)), "idle": idle}

    def _public(self, job: Job, private: bool) -> dict[str, Any]:
        return public(job, private)

    async def hold(self, request: web.Request) -> web.Response:
        return await self._hold(request, release=False)

    async def release(self, request: web.Request) -> web.Response:
        return await self._hold(request, release=True)

    async def _hold(self, request: web.Request, release: bool) -> web.Response:
        caller = await self.caller(request)
        job_id = job_id_of(request.match_info["id"])
        result = await self.store.hold(job_id, caller.user, caller.is_admin, release)
        verb = "release" if release else "hold"
        if result == Outcome.NO_SUCH_JOB and job_id.isdigit():
            result = Outcome(await self.hold_array(caller, job_id, release))
        if result == Outcome.NO_SUCH_JOB:
            raise ApiError(404, f"no job {job_id}: see `labq queue` for your job ids")
        if result == Outcome.FORBIDDEN:
            raise ApiError(403, f"you may {verb} only your own jobs, and only admins release "
                                "what an admin held")
        if result == Outcome.NOT_WAITING:
            raise ApiError(409, f"job {job_id} is not waiting: only pending jobs can be "
                                f"{'released' if release else 'held'}")
        self.kick()
        return web.json_response({"id": job_id, "result": result})

    async def logs(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        job = await self._job(request)
        if job.user != caller.user and not caller.is_admin:
            raise ApiError(403, f"job {job.id} belongs to {job.user}: only its owner and admins "
                                "may read its output")
        # The output is a file the job's user owns, written by the node's runner: the CLI reads
        # it as that user (no daemon ever holds a job's output in memory).
        return web.json_response({"id": job.id, "state": job.state.value,
                                  "path": output_path(job), "node": job.node,
                                  "done": job.state.is_terminal()})

    async def nodes(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        nodes = [n.to_dict() for n in await self.store.nodes()]
        active = await self.store.active_jobs()
        annotate_nodes(nodes, active, IdlePolicy.from_settings(self.settings), time.time())
        if self.settings.private_data and not caller.is_admin:
            # Which GPU is busy stays visible; what runs there is its owner's to see.
            mine = {j.id for j in active if j.user == caller.user}
            for node in nodes:
                for gpu in node["gpus"]:
                    for proc in gpu["processes"]:
                        if proc.get("labq_job") not in mine:
                            proc["name"] = None
                for proc in node["foreign_processes"]:
                    proc["name"] = None
        return web.json_response(nodes)

    async def _policy_view(self) -> PolicyView:
        """Fair share, priorities and standings as the scheduler sees them now: the cluster
        read once (`scheduler.cluster`), the snapshot built as the cycle builds it."""
        now = time.time()
        state = await read_cluster(self.store, now)
        waiting = await self.store.waiting_jobs()
        queue = [j for j in waiting if j.state.is_waiting() and not j.hold]
        pending = [pending_view(j) for j in queue]
        last = self.fairshare(now)  # the last cycle's table, when this process leads
        snapshot = build_snapshot(state, pending, self.settings, table=last)
        # One ranking, as the cycle's: its table, each job's factors, and the standings in
        # words of everyone with a job pending or running (running alone included).
        ranking = self.fair.rank(snapshot)
        table = ranking.table
        assert table is not None
        return PolicyView(state, waiting, queue, table, ranking.breakdown,
                          standing_texts(ranking))

    async def quota(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        asked = request.query.get("user")
        user = check_user_name(asked) if asked else caller.user
        if self._hides(caller, user):
            raise ApiError(403, f"{user}'s usage is private (private_data): you may see only "
                                "your own, and admins anyone's")
        account_filter = request.query.get("account")
        view = await self._policy_view()
        accounts, table = view.state.accounts, view.table
        mine = parse_totals(view.state.usage)["user"].get(user, {"billed": 0.0, "gpu_s": 0.0})
        held = [j for j in view.waiting if j.user == user and j.hold]
        jobs = [j for j in view.state.active + view.queue + held if j.user == user]
        rows = [asdict(r) for r in table.rows
                if (r.user == user or (r.user is None and request.query.get("all") == "1")
                    or (r.user is None and _has_member(table, r.account, user)))
                and (account_filter is None or r.account == account_filter)]
        for row in rows:
            if row["level_fs"] == float("inf"):
                row["level_fs"] = None  # JSON has no infinity: no usage yet
        return web.json_response({
            "user": user,
            "algorithm": self.settings.fairshare_algorithm,  # the one that ranks the queue
            "table_algorithm": table.algorithm,  # the rows': Fair Tree's under fair_now (past)
            "billed_units": mine["billed"],
            "gpu_seconds": mine["gpu_s"],
            "running_jobs": sum(1 for j in jobs if j.state.holds_gpus()),
            "running_gpus": sum(j.gpus for j in jobs if j.state.holds_gpus()),
            "pending_jobs": sum(1 for j in jobs if j.state.is_waiting()),
            "shares": rows,
            "budgets": await self._budget_rows(
                accounts,
                {("user", user)} | {("account", r["account"]) for r in rows}),
            "half_life_s": self.settings.usage_half_life_s,
            "billing_weights": self.settings.billing_weights,
            "fair_now": [{"account": a, "text": text}
                         for (a, u), text in sorted(view.standing.items()) if u == user],
        })

    async def priority(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        view = await self._policy_view()
        waiting = [j for j in view.queue if j.state == JobState.PENDING]
        ranked = view.ranked
        wanted = request.query.get("job")
        if wanted is not None:
            wanted = job_id_of(wanted)
        if wanted and wanted not in {j.id for j in waiting}:
            job = await self.store.get_job(wanted)
            if job is None:
                raise ApiError(404, f"no job {wanted}: see `labq queue --all` for job ids")
            raise ApiError(400, f"job {wanted} is {job.state.value}, not pending: only "
                                "pending jobs have a priority")
        show_all = request.query.get("all") == "1"
        standing = view.standing
        out = []
        for job in sorted(waiting, key=lambda j: -ranked[j.id].total):
            if wanted and job.id != wanted:
                continue
            if not wanted and not show_all and job.user != caller.user:
                continue
            prio = ranked[job.id]
            # Others' factors tell their fair share, that is their usage: only the order shows.
            hidden = self._hides(caller, job.user)
            out.append({"id": job.id, "user": job.user, "account": job.account,
                        "priority": None if hidden else prio.total,
                        "factors": None if hidden else prio.factors,
                        "weighted": None if hidden else prio.weighted,
                        "fair_now": None if hidden else standing.get((job.account, job.user))})
        return web.json_response(out)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)


@dataclass(frozen=True)
class PolicyView:
    """What `labq quota` and `labq priority` show, from one read of the cluster."""

    state: ClusterState
    waiting: list[Job]  # the waiting jobs as read: the queue, then those a person holds
    queue: list[Job]  # what the cycle schedules: PENDING and budget-HELD
    table: FairShareTable
    ranked: dict[str, Priority]
    standing: dict[tuple[str, str], str]


# The record's fields are declared once, in scheduler.wire (with their JSON types).
PUBLIC_FIELDS = tuple(k for k in JOB_FIELDS if k not in ("env", "private", "script"))


def public(job: Job, private: bool = False) -> dict[str, Any]:
    """A job as the API shows it; `private`: with PRIVATE_FIELDS null and `private` true."""
    data = job.to_dict()
    out = {k: data[k] for k in PUBLIC_FIELDS}
    out["env"] = sorted(job.env)  # names only: values may be secrets
    out["script"] = bool(job.script)  # whether one was captured, never its text
    if job.state == JobState.RUNNING and job.started_at:
        out["run_time_s"] = time.time() - job.started_at
    if private:
        out.update(dict.fromkeys(PRIVATE_FIELDS))
        # Why another's job waits or ended, as a code only: details may name its files.
        out["reason"] = job.reason.split(":", 1)[0]
        out["reasons"] = [{"code": r.get("code", ""), "detail": ""} for r in job.reasons]
    out["private"] = private
    return out


def _has_member(table: FairShareTable, account: str, user: str) -> bool:
    """Whether `user` has an association in `account`."""
    return any(r.user == user and r.account == account for r in table.rows)


def stored_cap_refused(exc: StoredCapError, user: str, count: int, caps: SubmitCaps) -> ApiError:
    """What one user may keep in the store: every job counts until retention removes it
    (max_stored_jobs_per_user), and the bytes of its command, environment and script
    (max_stored_bytes_per_user), so ended jobs, too, are bounded per user."""
    if exc.what == "jobs":
        return ApiError(429, f"{user} has {exc.has:,} jobs in the store (waiting, running and "
                             f"ended) and may have {caps.stored_jobs:,} "
                             f"(max_stored_jobs_per_user): {count:,} more would be over; ended "
                             "jobs leave it after retention")
    return ApiError(429, f"{user}'s jobs keep {exc.has / 2**20:,.1f} MiB of commands, "
                         f"environments and scripts in the store and may keep "
                         f"{caps.stored_bytes / 2**20:,.0f} MiB (max_stored_bytes_per_user): "
                         "cancel waiting jobs, or send less (--export NAMES)")
