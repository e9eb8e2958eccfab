"""The history routes of the API, mixed into `Api`: ended jobs over a time range from the hot
store and the per-day history (`GET /v1/history`), one job wherever it is kept
(`GET /v1/history/{id}`: `labq show` and `labq eff` of a job that left the hot store), and
usage per account and user over a range of days (`GET /v1/report`).

Who sees what is as for `GET /v1/jobs`: every job's public fields, and under `private_data`
a non-admin only their own jobs' PRIVATE_FIELDS; usage (the report) is private as `labq
quota`'s is: under `private_data` a non-admin's report holds only their own usage."""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web

from scheduler.config import Settings
from scheduler.model import TERMINAL_STATES, Job
from scheduler.server.http import ApiError, int_query, job_id_of
from scheduler.server.identity import Caller
from scheduler.store import Store
from scheduler.store.historyread import DAY, Record
from scheduler.store.records import HISTORY_FIELDS

DEFAULT_RANGE_S = 7 * DAY  # no ?since=: the last 7 days (`labq history`'s default too)
HISTORY_LIMIT = 10_000  # jobs per answer unless ?limit= asks otherwise
HISTORY_MAX = 100_000  # the most ?limit= may ask
NOT_KEPT = ("command", "env", "script", "output", "error", "submit_dir")  # by the history
_ENDED = {s.value for s in TERMINAL_STATES}


def _time_query(request: web.Request, name: str, default: float) -> float:
    """A Unix time in the query (seconds, a decimal number)."""
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value < 1e11:
        shown = text if len(text) <= 32 else text[:32] + "..."
        raise ApiError(400, f"?{name}={shown!r} must be a Unix time in seconds")
    return value


def _names(request: web.Request, name: str) -> set[str] | None:
    text = request.query.get(name)
    return {part for part in text.split(",") if part} if text else None


class HistoryRoutes:
    """Needs the `Api` it is mixed into: its store, settings and caller."""

    store: Store
    settings: Settings

    async def caller(self, request: web.Request) -> Caller:
        raise NotImplementedError

    def _hides(self, caller: Caller, owner: str) -> bool:
        raise NotImplementedError

    def _public(self, job: Job, private: bool) -> dict[str, Any]:
        raise NotImplementedError

    def history_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/history", self.history_list),
            web.get("/v1/history/{id}", self.history_show),
            web.get("/v1/report", self.usage_report),
        ]

    def _range(self, request: web.Request) -> tuple[float, float]:
        until = _time_query(request, "until", time.time())
        since = _time_query(request, "since", until - DEFAULT_RANGE_S)
        if since > until:
            raise ApiError(400, "?since= is after ?until=: give the earlier time first")
        return since, until

    def _shown(self, caller: Caller, record: Record, whole: bool) -> dict[str, Any]:
        """A history record (or a hot job's same fields) as the API shows a job: its public
        fields, private ones null where `caller` may not see them; `whole`: every field of
        a job record (those the history does not keep null), else only those it keeps."""
        job = Job.from_fields(record)
        shown = self._public(job, self._hides(caller, job.user))
        if not whole:
            return {k: shown[k] for k in (*HISTORY_FIELDS, "private") if k in shown}
        return {**shown, **dict.fromkeys(NOT_KEPT), "idle": None}

    async def history_list(self, request: web.Request) -> web.Response:
        """Jobs that ended from ?since= to ?until= (Unix seconds; default the last 7 days),
        the caller's own unless ?all=1 or ?user= (anyone's public fields), of ?account=,
        ?state= and ?name= (comma lists) where given: the latest ended ?limit= (10,000 by
        default), newest first; `complete` false when more matched."""
        caller = await self.caller(request)
        since, until = self._range(request)
        user = request.query.get("user") or (None if request.query.get("all") == "1"
                                              else caller.user)
        states, names = _names(request, "state"), _names(request, "name")
        if states and not states <= _ENDED:
            raise ApiError(400, f"?state={','.join(sorted(states - _ENDED))}: the history "
                                f"holds ended jobs: {', '.join(sorted(_ENDED))}")
        limit = max(1, min(int_query(request, "limit", HISTORY_LIMIT), HISTORY_MAX))

        def match(record: Record) -> bool:
            return ((states is None or record.get("state") in states)
                    and (names is None or record.get("name", "") in names))

        records, complete = await self.store.ended_jobs(
            since, until, user, request.query.get("account") or None, match, limit)
        return web.json_response({"since": since, "until": until, "complete": complete,
                                  "jobs": [self._shown(caller, r, False) for r in records]})

    async def history_show(self, request: web.Request) -> web.Response:
        """One job as `GET /v1/jobs/{id}` shows it, whether still in the hot store or only in
        the history (then `history` is true and what the history does not keep is null)."""
        caller = await self.caller(request)
        job_id = job_id_of(request.match_info["id"])
        job = await self.store.get_job(job_id)
        if job is not None:
            return web.json_response({**self._public(job, self._hides(caller, job.user)),
                                      "idle": None, "history": False})
        record = await self.store.history_job(job_id)
        if record is None:
            raise ApiError(404, f"no job {job_id} in the store or its history (kept "
                                f"{self.settings.retention_history_s / DAY:.0f} days)")
        return web.json_response({**self._shown(caller, record, True), "history": True})

    async def usage_report(self, request: web.Request) -> web.Response:
        """GPU-seconds and billed units per account and user charged on the UTC days from
        ?since= to ?until= (default the last 7 days), of ?user= and ?account= where given;
        under private_data a non-admin's holds only their own usage."""
        caller = await self.caller(request)
        since, until = self._range(request)
        user, account = request.query.get("user") or None, request.query.get("account") or None
        only_own = bool(self.settings.private_data and not caller.is_admin)
        if only_own and user not in (None, caller.user):
            raise ApiError(403, f"{user}'s usage is private (private_data): you may see only "
                                "your own, and admins anyone's")
        first_day, last_day = int(since // DAY), int(until // DAY)
        rows = [r for r in await self.store.usage_report(first_day, last_day)
                if (user is None or r.user == user) and (account is None or r.account == account)
                and (not only_own or r.user == caller.user)]
        return web.json_response({
            "since": since, "until": until, "first_day": first_day, "last_day": last_day,
            "only_own": only_own,
            "rows": [{"account": r.account, "user": r.user, "gpu_seconds": r.gpu_seconds,
                      "billed": r.billed} for r in rows]})
