"""Store operations on job arrays and on waiting jobs people change (update, requeue).

An array is one hash (`{p}array:{id}`): the template of its tasks (a job's fields), its script
once, its index set, the indices not made tasks yet (`remaining`), those cancelled before they
were made, its throttle and hold. The leader makes tasks from it a few at a time
(`spawn_tasks`): tasks are ordinary jobs (`17_5`), so the policy sees each as a job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis.exceptions as redis_errors

from scheduler.model import ArrayState, HoldKind, Job, JobState, ReasonCode
from scheduler.policy.arrays import ArraySpec, format_ranges, parse_ranges, task_id
from scheduler.store.core import StoreCore
from scheduler.store.outcome import NO_CAPS, Outcome, SubmitCaps, cap_refusal

ARRAY_STATES = tuple(s.value for s in ArrayState)  # (the Lua scripts' ARRAY_STATE table)


@dataclass(frozen=True)
class ArrayRecord:
    """An array as stored (the template is a Job with the array's id)."""

    id: str
    template: Job
    indices: list[int]
    remaining: str  # compact ranges text, "" when every index is a task
    cancelled: list[int]  # indices cancelled before they became tasks
    throttle: int
    state: str
    hold: str
    spec: str  # as the user gave it: 0-99%8

    @property
    def remaining_indices(self) -> list[int]:
        return parse_ranges(self.remaining)

    @property
    def made(self) -> list[int]:
        """Indices that are tasks (jobs) now."""
        left = set(self.remaining_indices) | set(self.cancelled)
        return [i for i in self.indices if i not in left]

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> ArrayRecord:
        template = Job.from_fields(json.loads(raw["template"]))
        return cls(id=raw["id"], template=template, indices=parse_ranges(raw["indices"]),
                   remaining=raw.get("remaining", ""),
                   cancelled=parse_ranges(raw.get("cancelled", "")),
                   throttle=int(raw.get("throttle") or 0),
                   state=raw.get("state", ArrayState.PENDING),
                   hold=raw.get("hold", ""), spec=raw.get("spec", ""))


class ArrayStore(StoreCore):
    """Part of the jobs role (`JobStore`): arrays, and the changes people make to waiting
    jobs."""

    SCRIPTS: tuple[str, ...] = ("submit_array", "spawn_tasks", "array_set", "update_job",
                                "requeue_job")

    async def submit_array(self, template: Job, spec: ArraySpec, token: str, ttl_s: int,
                           hold: bool, caps: SubmitCaps = NO_CAPS) -> list[str]:
        """Store one array record for all its tasks; returns [its id] (the same for a token
        seen before). Each task counts against the owner's `caps` as a job (as JobStore.submit);
        its command, environment and script count once."""
        (array_id,) = await self._next_ids(1)
        template.id = array_id
        template.array_job = array_id
        fields = template.to_fields()
        script = fields.pop("script", "")
        record = {
            "id": array_id, "user": template.user, "template": json.dumps(fields),
            "script": script, "indices": format_ranges(spec.indices),
            "remaining": format_ranges(spec.indices), "cancelled": "",
            "throttle": str(spec.throttle), "state": ArrayState.PENDING,
            "hold": HoldKind.USER if hold else "",
            "spec": spec.text, "submitted_at": str(template.submitted_at),
        }
        keys = [self.keys.array(array_id), self.keys.arrays, self.keys.submit_token(token),
                self.keys.arrays_all, self.keys.stored, self.keys.stats, self.keys.active]
        args = [ttl_s, array_id, json.dumps(record), len(spec.indices), *caps.args(),
                self.keys.job("")]
        try:
            # acknowledged only once on disk, and on a replica if there is one (as a submit)
            return [str(x) for x in await self._run_durably("submit_array", keys, args)]
        except redis_errors.ResponseError as exc:
            raise cap_refusal(exc) or exc from None

    async def array(self, array_id: str) -> ArrayRecord | None:
        raw = await self.r.hgetall(self.keys.array(array_id))
        return ArrayRecord.from_fields(raw) if raw else None

    async def arrays(self, array_ids: Sequence[str] | None = None) -> list[ArrayRecord]:
        """The given arrays, or those with indices not made tasks yet."""
        if array_ids is None:
            array_ids = sorted(await self.r.smembers(self.keys.arrays), key=int)
        if not array_ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for array_id in array_ids:
                pipe.hgetall(self.keys.array(array_id))
            rows = await pipe.execute()
        return [ArrayRecord.from_fields(raw) for raw in rows if raw]

    async def with_array_request(self, task: Job) -> Job:
        """A task with its array's command, environment and script, which the store keeps
        once per array (not in each task)."""
        template, script = await self.r.hmget(self.keys.array(task.array_job), "template",
                                              "script")
        if template is None:
            return task
        fields = json.loads(template)
        return replace(task, command=task.command or json.loads(fields.get("command") or "[]"),
                       env=task.env or json.loads(fields.get("env") or "{}"),
                       script=task.script or script or "")

    async def spawn_tasks(self, epoch: int, array: ArrayRecord, count: int) -> Outcome:
        """Make the next `count` remaining indices of `array` PENDING tasks."""
        left = array.remaining_indices
        take, rest = left[:count], left[count:]
        if not take:
            return Outcome.OK
        fields = array.template.to_fields()
        # Read from the array when a task starts (`with_array_request`): stored once.
        fields.update(command="[]", env="{}", script="")
        ids = [task_id(array.id, i) for i in take]
        keys = [self.keys.array(array.id), self.keys.waiting, self.keys.arrays,
                self.keys.epoch, *(self.keys.job(j) for j in ids)]
        args: list[Any] = [epoch, array.id, array.remaining, format_ranges(rest),
                           json.dumps(fields)]
        for job_id, index in zip(ids, take, strict=True):
            args += [job_id, index]
        return Outcome(await self._run("spawn_tasks", keys, args))

    async def array_set(self, array: ArrayRecord, caller: str, is_admin: bool,
                        changes: dict[str, str], task: Job | None = None,
                        now: float = 0.0) -> Outcome:
        """Compare-and-set on the array's remaining indices: `changes` to its fields, and a
        task record to write at once (one cancelled before it was made)."""
        keys = [self.keys.array(array.id), self.keys.arrays, self.keys.done,
                self.keys.job(task.id if task else ""), self.keys.stats]
        args = [array.id, caller, "1" if is_admin else "", array.remaining,
                json.dumps(changes), json.dumps(task.to_fields()) if task else "",
                task.id if task else "", now]
        return Outcome(await self._run("array_set", keys, args))

    async def cancel_unmade(self, array: ArrayRecord, index: int, caller: str, is_admin: bool,
                            now: float) -> Outcome:
        """Cancel one index that is not a task yet: it leaves the remaining indices and a
        CANCELLED task record says so."""
        left = [i for i in array.remaining_indices if i != index]
        task = replace(array.template, id=task_id(array.id, index), array_task=index,
                       state=JobState.CANCELLED, ended_at=now, reason=ReasonCode.CANCELLED,
                       script="")
        changes = {"remaining": format_ranges(left),
                   "cancelled": format_ranges([*array.cancelled, index])}
        if not left and array.state == ArrayState.PENDING:
            changes["state"] = ArrayState.SPAWNED
        return await self.array_set(array, caller, is_admin, changes, task, now)

    async def update_job(self, job: Job, caller: str, is_admin: bool,
                         changes: dict[str, str]) -> Outcome:
        keys = [self.keys.job(job.id), self.keys.changed]
        args = [job.id, caller, "1" if is_admin else "", json.dumps(changes), job.state.value]
        return Outcome(await self._run("update_job", keys, args))

    async def requeue_job(self, job_id: str, caller: str, is_admin: bool,
                          now: float) -> Outcome:
        return Outcome(await self._run("requeue_job", [self.keys.job(job_id)],
                                       [job_id, caller, "1" if is_admin else "", now]))

    async def expire_arrays(self, now: float, keep_s: float, batch: int = 100) -> int:
        """Forget arrays submitted more than `keep_s` ago whose indices are all tasks (or
        cancelled): their tasks are jobs with retention of their own. Returns how many."""
        old = await self.r.zrangebyscore(self.keys.arrays_all, 0, now - keep_s, start=0,
                                         num=batch)
        gone = 0
        for array in await self.arrays(list(old)):
            if array.state != ArrayState.PENDING:
                fields = array.template.to_fields()
                size = (len(fields["command"]) + len(fields["env"])
                        + int(await self.r.hstrlen(self.keys.array(array.id), "script")))
                await self.r.hincrby(self.keys.stored, f"bytes|{array.template.user}", -size)
                await self.r.delete(self.keys.array(array.id))
                await self.r.zrem(self.keys.arrays_all, array.id)
                gone += 1
        return gone

    async def uncount(self, user: str, jobs: int) -> None:
        """`jobs` of `user`'s counted jobs will never be stored (an array's indices cancelled
        before they became tasks)."""
        if jobs:
            await self.r.hincrby(self.keys.stored, user, -jobs)

    async def pop_changed(self) -> list[str]:
        """Ids of jobs people changed since the last call (the leader's cache is stale)."""
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.lrange(self.keys.changed, 0, -1)
            pipe.delete(self.keys.changed)
            ids, _ = await pipe.execute()
        return list(ids)
