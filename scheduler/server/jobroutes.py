"""The API routes for arrays and for changing jobs: the queue with arrays as one line, show and
cancel of an array or one task, `labq update` and `labq requeue`. Mixed into `Api`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from scheduler.config import Settings
from scheduler.coordinator.waiting import aggregate, array_line, array_tasks, read_targets
from scheduler.model import ArrayState, HoldKind, Job, JobState
from scheduler.policy.arrays import split_task_id
from scheduler.server.fits import NodeShape
from scheduler.server.http import ApiError, int_query, job_id_of, json_object
from scheduler.server.identity import Caller
from scheduler.server.validation import InputError, build_spec, dependency_of
from scheduler.store import Outcome, Store
from scheduler.store.arrays import ArrayRecord
from scheduler.store.records import id_key
from scheduler.timeparse import TimeLimitError, parse_duration
from scheduler.wire import SubmitRequest

PAGE_MAX = 1000  # lines per page of GET /v1/jobs, whatever ?limit= asks
DONE_SCAN = 5000  # ended jobs looked through for one user's latest
# `labq update`: what a waiting job's request may change, by its name in the submit request.
UPDATABLE = ("time", "name", "gpus", "gpu_type", "dependency", "account", "qos", "requeue")


class JobRoutes:
    """Needs the `Api` it is mixed into: its store, settings, caller and caches."""

    store: Store
    settings: Settings
    kick: Callable[[], None]  # run a scheduling cycle soon

    async def caller(self, request: web.Request) -> Caller:
        raise NotImplementedError

    async def _nodes_cached(self) -> tuple[NodeShape, ...]:
        raise NotImplementedError

    def _hides(self, caller: Caller, owner: str) -> bool:
        raise NotImplementedError

    def _public(self, job: Job, private: bool) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------ reads

    async def queue(self, request: web.Request) -> web.Response:
        """Waiting and running jobs (and with ?done=1 the latest ?done_limit= ended ones, 50
        by default), in id order, a
        page at a time: at most ?limit= lines (PAGE_MAX at most) after the id ?after=. An
        array's waiting tasks are one line unless ?expand=1. Lines carry no command or
        environment (GET /v1/jobs/{id} does): a list stays small whatever the jobs hold."""
        caller = await self.caller(request)
        show_all = request.query.get("all") == "1"
        user = request.query.get("user") or (None if show_all else caller.user)
        limit = max(1, min(int_query(request, "limit", PAGE_MAX), PAGE_MAX))
        after = request.query.get("after")
        active, waiting = await self.store.queue_ids()
        jobs = await self.store.list_jobs(active + waiting)
        if user:
            jobs = [j for j in jobs if j.user == user]
        lines = [self._public(j, self._hides(caller, j.user)) for j in jobs]
        if request.query.get("expand") != "1":
            lines = await self._array_lines(caller, jobs, lines, user)
        if request.query.get("done") == "1":
            ended = min(int_query(request, "done_limit", 50), PAGE_MAX)
            done = await self.store.list_jobs(await self.store.done_ids(
                min(ended, PAGE_MAX) if not user else DONE_SCAN))
            lines += [self._public(j, self._hides(caller, j.user))
                      for j in [j for j in done if not user or j.user == user][:ended]]
        lines.sort(key=lambda line: id_key(str(line["id"])))
        if after:
            start = id_key(job_id_of(after))
            lines = [line for line in lines if id_key(str(line["id"])) > start]
        for line in lines[:limit]:
            line["command"] = line["env"] = None  # served by GET /v1/jobs/{id}
        return web.json_response(lines[:limit])

    async def _array_lines(self, caller: Caller, jobs: list[Job], lines: list[dict[str, Any]],
                           user: str | None) -> list[dict[str, Any]]:
        """Replace each array's plain waiting tasks by one line with its indices not made
        yet: `17_[4-99%8]`."""
        merged: dict[str, list[Job]] = {}
        for job in jobs:
            if job.array_job and job.state == JobState.PENDING and not job.dependency:
                merged.setdefault(job.array_job, []).append(job)
        wanted = {a.id: a for a in await self.store.arrays() if not user or a.template.user == user}
        extra = [i for i in merged if i not in wanted]
        wanted.update({a.id: a for a in await self.store.arrays(extra)})
        running: dict[str, int] = {}
        for job in jobs:
            if job.array_job and job.state.holds_gpus():
                running[job.array_job] = running.get(job.array_job, 0) + 1
        gone = {j.id for tasks in merged.values() for j in tasks}
        out = [line for line in lines if line["id"] not in gone]
        for array_id, array in sorted(wanted.items(), key=lambda kv: int(kv[0])):
            tasks = merged.get(array_id, [])
            if not array.remaining and not tasks:
                continue
            hidden = self._hides(caller, array.template.user)
            line = {**self._public(array.template, hidden),
                    **array_line(array, tasks, running.get(array_id, 0))}
            if hidden:  # why another's array waits: the code only
                line["reasons"] = [{"code": line["reason"], "detail": ""}]
            out.append(line)
        return out

    async def _job(self, request: web.Request) -> Job:
        job_id = job_id_of(request.match_info["id"])
        job = await self.store.get_job(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id}: see `labq queue --all` for job ids")
        return job

    async def show(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        job_id = job_id_of(request.match_info["id"])
        job = await self.store.get_job(job_id)
        if job is not None:
            return web.json_response(await self._show_job(caller, job))
        array, index = await self._array_for(job_id)
        hidden = self._hides(caller, array.template.user)
        base = self._public(array.template, hidden)
        if index is None:  # the array as a whole
            summary = aggregate(array, await array_tasks(self.store, array))
            return web.json_response({**base, **summary, "array_tasks": array.spec,
                                      "array_throttle": array.throttle, "idle": None})
        state = JobState.CANCELLED if index in array.cancelled else (
            JobState.HELD if array.hold else JobState.PENDING)
        return web.json_response({**base, "id": job_id, "array_task": index, "state": state,
                                  "reason": "Priority" if state == JobState.PENDING else state,
                                  "idle": None})

    async def _show_job(self, caller: Caller, job: Job) -> dict[str, Any]:
        raise NotImplementedError

    async def _array_for(self, job_id: str) -> tuple[ArrayRecord, int | None]:
        """The array `job_id` names (`17`), or whose index it names (`17_5`) when that task is
        not a job yet; 404 otherwise."""
        task = split_task_id(job_id)
        array = await self.store.array(task[0] if task else job_id) if (
            task or job_id.isdigit()) else None
        if array is None or (task and task[1] not in array.indices):
            raise ApiError(404, f"no job {job_id}: see `labq queue --all` for job ids")
        return array, task[1] if task else None

    # ------------------------------------------------------------------ changes

    async def cancel(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        job_id = job_id_of(request.match_info["id"])
        now = time.time()
        if await self.store.get_job(job_id) is None:
            return web.json_response(await self._cancel_array(caller, job_id, now))
        result = await self.store.cancel(job_id, caller.user, caller.is_admin, now)
        if result == Outcome.FORBIDDEN:
            job = await self.store.get_job(job_id)
            owner = job.user if job else "another user"
            raise ApiError(403, f"job {job_id} belongs to {owner}: you may cancel only your "
                                "own jobs (admins may cancel any)")
        if result == Outcome.NO_SUCH_JOB:
            raise ApiError(404, f"no job {job_id}: see `labq queue` for your job ids")
        self.kick()
        return web.json_response({"id": job_id, "result": result})

    async def _cancel_array(self, caller: Caller, job_id: str, now: float) -> dict[str, Any]:
        """Cancel a whole array (its indices not made yet, then each task), or one index not
        made a task yet."""
        for _attempt in range(10):
            array, index = await self._array_for(job_id)
            if array.template.user != caller.user and not caller.is_admin:
                raise ApiError(403, f"job {job_id} belongs to {array.template.user}: you may "
                                    "cancel only your own jobs (admins may cancel any)")
            if index is not None:
                if index in array.cancelled:
                    return {"id": job_id, "result": Outcome.ALREADY_DONE}
                outcome = await self.store.cancel_unmade(array, index, caller.user,
                                                         caller.is_admin, now)
                if outcome == Outcome.OK:
                    return {"id": job_id, "result": Outcome.CANCELLED}
                continue  # a task was made meanwhile: cancel it as a job
            changes = {"remaining": "", "cancelled": ",".join(
                filter(None, [",".join(map(str, array.cancelled)), array.remaining]))}
            if array.state == ArrayState.PENDING:
                changes["state"] = ArrayState.CANCELLED
            if await self.store.array_set(array, caller.user, caller.is_admin,
                                          changes) == Outcome.OK:
                await self.store.uncount(array.template.user, len(array.remaining_indices))
                break
        else:
            raise ApiError(409, f"array {job_id} kept changing; try again")
        results = []
        for task in await array_tasks(self.store, array):
            if task is not None and not task.state.is_terminal():
                results.append(await self.store.cancel(task.id, caller.user, caller.is_admin,
                                                       now))
        self.kick()
        if index is not None:  # the index became a task meanwhile
            result = await self.store.cancel(job_id, caller.user, caller.is_admin, now)
            return {"id": job_id, "result": str(result)}
        stopping = Outcome.STOPPING in results
        return {"id": job_id, "result": Outcome.STOPPING if stopping else Outcome.CANCELLED}

    async def hold_array(self, caller: Caller, array_id: str, release: bool) -> Outcome:
        """Hold (or release) an array: no more of its tasks are made, and its waiting tasks
        are held (released) too. NO_SUCH_JOB when there is no such array."""
        array = await self.store.array(array_id)
        if array is None:
            return Outcome.NO_SUCH_JOB
        kind = "" if release else (HoldKind.ADMIN if caller.is_admin else HoldKind.USER)
        if release and array.hold == HoldKind.ADMIN and not caller.is_admin:
            return Outcome.FORBIDDEN
        outcome = await self.store.array_set(array, caller.user, caller.is_admin,
                                             {"hold": kind})
        if outcome != Outcome.OK:
            return outcome
        for task in await array_tasks(self.store, array):
            if task is not None and task.state.is_waiting() and bool(task.hold) != (not release):
                await self.store.hold(task.id, caller.user, caller.is_admin, release)
        return Outcome.OK if bool(array.hold) != (not release) else Outcome.ALREADY

    async def check_targets(self, text: str) -> None:
        """Every job a --dependency names exists (a job, a task, or an array)."""
        dep = dependency_of(text)
        targets = await read_targets(self.store, dep.targets)
        for target in sorted(dep.targets):
            if targets.get(target) is None:
                raise InputError(f"--dependency {text}: there is no job {target} (see `labq "
                                 "queue --all`)")

    async def update(self, request: web.Request) -> web.Response:
        """`labq update`: a waiting job's request, checked as a submit is; a running job's
        time limit (down only, except for admins)."""
        caller = await self.caller(request)
        job = await self._job_or_array_error(request)
        body = await json_object(request)
        unknown = sorted(set(body) - set(UPDATABLE))
        if unknown:
            raise InputError(f"labq update cannot change {', '.join(unknown)}: it changes "
                             f"{', '.join(UPDATABLE)}")
        if job.user != caller.user and not caller.is_admin:
            raise ApiError(403, f"job {job.id} belongs to {job.user}: you may change only your "
                                "own jobs (admins may change any)")
        if job.state.is_waiting():
            changed = await self._waiting_changes(job, body)
        elif job.state.is_terminal():
            raise ApiError(409, f"job {job.id} has ended ({job.state.value}): nothing about it "
                                "can change")
        else:
            changed = self._running_changes(job, body, caller)
        if body.get("dependency"):
            await self.check_targets(str(body["dependency"]))
        fields = {k: v for k, v in job.to_fields().items() if k in changed}
        if fields:
            result = await self.store.update_job(job, caller.user, caller.is_admin, fields)
            if result != Outcome.OK:
                raise ApiError(409, _UPDATE_REFUSED.get(result, str(result)).format(
                    id=job.id))
            self.kick()
        return web.json_response({"id": job.id, "changed": sorted(fields)})

    async def _job_or_array_error(self, request: web.Request) -> Job:
        job_id = job_id_of(request.match_info["id"])
        job = await self.store.get_job(job_id)
        if job is None:
            await self._array_for(job_id)  # 404 unless it is an array
            raise ApiError(409, f"{job_id} is an array or a task not started yet: change its "
                                "tasks once they wait as jobs, or cancel and submit again")
        return job

    async def _waiting_changes(self, job: Job, body: dict[str, Any]) -> set[str]:
        """Apply `body` to a waiting job (in place), validated as a new submit; the fields
        that changed."""
        request = {"command": job.command, "script": job.script or None,
                   "gpus": job.gpus_per_node, "nodes": job.nodes,
                   "gpu_type": job.gpu_type, "time": f"{job.time_limit_s}s",
                   "account": job.account, "qos": job.qos, "name": job.name,
                   "workdir": job.workdir, "output": job.output, "error": job.error,
                   "env": job.env, "requeue": job.requeue, "submit_dir": job.submit_dir,
                   "dependency": job.dependency, "notify": job.notify,
                   "cpus": job.cpus or None, "cpus_per_gpu": job.cpus_per_gpu or None,
                   "mem": str(job.mem) if job.mem else None,
                   "mem_per_gpu": str(job.mem_per_gpu) if job.mem_per_gpu else None, **body}
        if "account" in body:
            accounts = await self.store.accounts()
            from scheduler.accounts.tree import AccountsError

            try:
                request["account"] = accounts.account_for(
                    job.user, body["account"], self.settings.default_account,
                    enforce=self.settings.enforce_accounts, trusted=False)
            except AccountsError as exc:
                raise ApiError(403, str(exc)) from None
        spec = build_spec(SubmitRequest.from_json(request), job.user, await self._nodes_cached(),
                          self.settings)
        before = job.to_fields()
        updated = replace(job, gpus=spec.gpus, nodes=spec.nodes, gpu_type=spec.gpu_type,
                          time_limit_s=spec.time_limit_s, account=spec.account, qos=spec.qos,
                          name=spec.name, dependency=spec.dependency, requeue=spec.requeue)
        after = updated.to_fields()
        for name in after:  # the caller's record becomes the updated one
            setattr(job, name, getattr(updated, name))
        return {k for k in after if after[k] != before[k]}

    def _running_changes(self, job: Job, body: dict[str, Any], caller: Caller) -> set[str]:
        if set(body) - {"time"}:
            raise ApiError(409, f"job {job.id} is {job.state.value}: only its time limit can "
                                "change now")
        try:
            limit = parse_duration(str(body["time"]))
        except TimeLimitError as exc:
            raise InputError(str(exc)) from None
        if limit > job.time_limit_s and not caller.is_admin:
            raise ApiError(403, f"job {job.id} runs: you may shorten its time limit, only "
                                "admins lengthen it")
        if limit > self.settings.max_time_limit_s:
            raise InputError(f"--time {body['time']}: longer than the cluster's maximum")
        changed = {"time_limit_s"} if limit != job.time_limit_s else set()
        job.time_limit_s = limit
        return changed

    async def requeue(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        job = await self._job_or_array_error(request)
        result = await self.store.requeue_job(job.id, caller.user, caller.is_admin, time.time())
        if result == Outcome.FORBIDDEN:
            raise ApiError(403, f"job {job.id} belongs to {job.user}: you may requeue only "
                                "your own jobs (admins may requeue any)")
        if result == Outcome.NOT_ACTIVE:
            raise ApiError(409, f"job {job.id} is {job.state.value}: it waits already")
        if result == Outcome.ALREADY_DONE:
            raise ApiError(409, f"job {job.id} has ended ({job.state.value}): submit it again "
                                f"(`labq show {job.id}` shows what it ran)")
        if result == Outcome.ALREADY_STOPPING:
            raise ApiError(409, f"job {job.id} is being stopped already")
        self.kick()
        return web.json_response({"id": job.id, "result": str(result)})


_UPDATE_REFUSED = {
    Outcome.NOT_WAITING: "job {id} started meanwhile: only its time limit can change now",
    Outcome.STALE_VIEW: "job {id} started meanwhile: only its time limit can change now",
    Outcome.FORBIDDEN: "job {id}: you may only shorten a running job's limit (admins: lengthen)",
    Outcome.ALREADY_DONE: "job {id} has ended",
}
