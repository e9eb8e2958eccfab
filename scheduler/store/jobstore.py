"""The store's jobs role: a job's writes (submit, start, stop, finish, requeue, hold,
cancel; each one fenced Lua script) and its reads, with arrays (`ArrayStore`) and retention
(`RetentionStore`) mixed in."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis.exceptions as redis_errors

from scheduler.model import HoldKind, Job, JobSpec, JobState, ReasonCode
from scheduler.noderun import StartRecord
from scheduler.store.arrays import ArrayStore
from scheduler.store.outcome import NO_CAPS, Outcome, SubmitCaps, cap_refusal
from scheduler.store.records import id_key, job_from_spec
from scheduler.store.retention import RetentionStore

SUBMIT_TOKEN_TTL_S = 86400
LIST_FIELDS = ("id", *(f for f in Job.__dataclass_fields__
                       if f not in ("id", "command", "env", "script")))
# Admission wait histogram bounds (seconds), as docs/metrics.md fixes them; +Inf is implicit.
WAIT_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800,
                                   86400, 259200)
RAY_PORTS = (20000, 30000)  # a multi-node job's Ray head port is picked in this range


READ_CHUNK = 2000  # job hashes per read_fields script: a few ms of the store's time each


class JobStore(ArrayStore, RetentionStore):
    """Jobs: their records, the waiting, active and done sets, and every change of state."""

    SCRIPTS: tuple[str, ...] = (
        "submit", "start", "mark_running", "finish", "requeue", "cancel", "request_stop",
        "charge", "set_reasons", "hold", "set_idle", "read_fields", "send_stop",
        "count_waiting",
    )

    # ---------------------------------------------------------------- writes

    async def submit(self, specs: Sequence[JobSpec], token: str, now: float,
                     created: list[Job] | None = None, hold: bool = False,
                     caps: SubmitCaps = NO_CAPS) -> list[str]:
        """Store validated specs as PENDING jobs, all or none. Same token, same ids.

        `created`, if given, receives the jobs as stored when this call stored them (not when
        the token was seen before), so the coordinator need not read them back.
        `caps`: each owner's most waiting jobs, jobs and bytes kept, and jobs waiting and
        running together (0: none); past one, PendingCapError, StoredCapError or JobCapError
        and nothing stored, checked in the same step as the store (exact, whichever
        coordinator's API takes the submits)."""
        if not specs:
            return []
        ids = await self._next_ids(len(specs))
        keys = [self.keys.held if hold else self.keys.waiting, self.keys.submit_token(token)]
        args: list[Any] = [SUBMIT_TOKEN_TTL_S, len(specs), *caps.args(), self.keys.job("")]
        jobs = []
        for job_id, spec in zip(ids, specs, strict=True):
            job = job_from_spec(spec, job_id, now)
            if hold:
                job.state, job.hold, job.reason = JobState.HELD, HoldKind.USER, \
                    ReasonCode.USER_HOLD
                job.reasons = [{"code": ReasonCode.USER_HOLD.value,
                                "detail": "submitted held; `labq release` lets it run"}]
            jobs.append(job)
            keys.append(self.keys.job(job_id))
            args += [job_id, now, json.dumps(job.to_fields())]
        keys += [self.keys.stored, self.keys.stats, self.keys.active]
        try:  # acknowledged only once on disk, and on a replica if there is one
            result = [str(x) for x in await self._run_durably("submit", keys, args)]
        except redis_errors.ResponseError as exc:
            raise cap_refusal(exc) or exc from None
        if created is not None and result == ids:
            created += jobs
        return result

    async def count_waiting(self) -> int:
        """Count every user's waiting jobs once (a store an older labq wrote): how many users
        wait, or -1 when the store keeps the count already. A new leader calls it."""
        keys = [self.keys.waiting, self.keys.held, self.keys.arrays, self.keys.stats]
        return int(await self._run("count_waiting", keys, [self.keys.job(""),
                                                            self.keys.array("")]))

    async def waiting_count(self, user: str) -> int:
        """`user`'s waiting jobs (pending, held, and array indices not made tasks yet)."""
        return int(await self.r.hget(self.keys.stats, f"waiting|{user}") or 0)

    async def cancel(self, job_id: str, caller: str, is_admin: bool, now: float,
                     reason: str = "") -> Outcome:
        keys = [self.keys.job(job_id), self.keys.waiting, self.keys.done, self.keys.held,
                self.keys.stored, self.keys.stats]
        args = [job_id, caller, "1" if is_admin else "", now, reason]
        return Outcome(await self._run("cancel", keys, args))

    async def hold(self, job_id: str, caller: str, is_admin: bool, release: bool,
                   now: float | None = None) -> Outcome:
        """Hold or release a waiting job; a released job waits from `now` (the time a person
        held it is not queue wait in the metrics)."""
        keys = [self.keys.job(job_id), self.keys.waiting, self.keys.held, self.keys.changed]
        args = [job_id, caller, "1" if is_admin else "", "release" if release else "hold",
                time.time() if now is None else now]
        return Outcome(await self._run("hold", keys, args))

    async def start(
        self, epoch: int, job: Job, node: str, indices: Sequence[int], weight: float,
        now: float, rest: Sequence[tuple[str, Sequence[int]]] = (),
        hosts: Mapping[str, str] | None = None,
    ) -> Outcome:
        """Allocate `indices` of `node` to `job` (as last read: the script checks its state)
        and hand its node the start record, at once. A multi-node job: `node` is its head
        node, `rest` its other nodes and their GPUs, by rank; all are allocated and told in
        the same step, each record saying its rank and every node (`hosts`: node name -> the
        host name its agent reports)."""
        keys = [
            self.keys.job(job.id), self.keys.waiting, self.keys.active, self.keys.node(node),
            self.keys.node_alloc(node), self.keys.epoch, self.keys.stats,
            self.keys.node_runs(node), self.keys.node_wake(node), self.keys.drains,
        ]
        bounds = ",".join(f"{b:g}" for b in WAIT_BUCKETS)
        # The record names its node (`%N` in output patterns is the node's name); an array's
        # tasks share its script, kept once in the array's record.
        if job.array_job:
            job = await self.with_array_request(job)
        parts = [(node, list(indices)), *((n, list(i)) for n, i in rest)]
        names = [name for name, _ in parts]
        known = hosts or {}
        host_list = [known.get(name) or name for name in names] if rest else []
        # across nodes: one Ray for the job, its head on a port picked here, its own token
        port = secrets.randbelow(RAY_PORTS[1] - RAY_PORTS[0]) + RAY_PORTS[0] if rest else 0
        token = secrets.token_hex(32) if rest else ""
        records = [
            StartRecord.for_job(replace(job, node=name), gpus, rank,
                                host_list, names if rest else [], port, token).to_json()
            for rank, (name, gpus) in enumerate(parts)
        ]
        args = [epoch, job.id, node, json.dumps(list(indices)), now, weight, bounds, records[0],
                json.dumps(parts) if rest else ""]
        for (name, gpus), record in zip(parts[1:], records[1:], strict=True):
            keys += [self.keys.node(name), self.keys.node_alloc(name),
                     self.keys.node_runs(name), self.keys.node_wake(name)]
            args += [name, json.dumps(gpus), record]
        return Outcome(await self._run("start", keys, args))

    def _other_keys(self, job: Job) -> tuple[list[str], str]:
        """A multi-node job's other nodes for finish and requeue: 5 keys each, and their
        names as JSON ('' for a job of one node)."""
        others = job.node_names[1:] if job.parts else []
        keys: list[str] = []
        for name in others:
            keys += [self.keys.node_alloc(name), *self._run_keys(name)]
        return keys, json.dumps(others) if others else ""

    def _run_keys(self, node: str) -> list[str]:
        return [self.keys.node_runs(node), self.keys.node_stops(node),
                self.keys.node_status(node), self.keys.node_wake(node)]

    async def mark_running(self, epoch: int, job_id: str, now: float) -> Outcome:
        return Outcome(await self._run("mark_running", [self.keys.job(job_id), self.keys.epoch],
                                   [epoch, now]))

    async def finish(
        self, epoch: int, job: Job, state: JobState, exit_code: int | None, reason: str,
        now: float, charge_until: float | None = None, usage: Mapping[str, int] | None = None,
    ) -> Outcome:
        """End the job at `now` (when its run ended, as its node recorded it), charged exactly
        up to then, or up to `charge_until` (a lost node's last heartbeat): time charged
        beyond is given back. `usage`: what its node measured of the run (the cgroup's
        `cpu_usec` and `memory_peak_bytes`), kept on the job."""
        keys = [
            self.keys.job(job.id), self.keys.active, self.keys.done,
            self.keys.node_alloc(job.node or ""), self.keys.usage, self.keys.epoch,
            self.keys.stats, *self._run_keys(job.node or ""), self.keys.stored,
        ]
        more, others = self._other_keys(job)
        code = "" if exit_code is None else str(exit_code)
        measured = usage or {}
        cpu_usec = measured.get("cpu_usec")
        peak = measured.get("memory_peak_bytes")
        args = [epoch, job.id, state.value, code, reason, now, job.node or "", others,
                "" if charge_until is None else charge_until,
                "" if cpu_usec is None else repr(cpu_usec / 1e6), "" if peak is None else peak]
        keys += more
        return Outcome(await self._run("finish", keys, args))

    async def requeue(self, epoch: int, job: Job, reason: str, now: float,
                      charge_until: float | None = None) -> Outcome:
        """Queue the job again; its attempt is charged exactly as `finish` charges a run."""
        keys = [
            self.keys.job(job.id), self.keys.active, self.keys.waiting,
            self.keys.node_alloc(job.node or ""), self.keys.usage, self.keys.epoch,
            self.keys.done, self.keys.stats, *self._run_keys(job.node or ""), self.keys.stored,
        ]
        more, others = self._other_keys(job)
        args = [epoch, job.id, reason, now, job.node or "", others,
                "" if charge_until is None else charge_until]
        keys += more
        return Outcome(await self._run("requeue", keys, args))

    async def send_stop(self, epoch: int, job: Job) -> Outcome:
        """Hand the job's stop request to its node's agent (idempotent)."""
        node = job.node or ""
        keys = [self.keys.job(job.id), self.keys.node_stops(node), self.keys.node_wake(node),
                self.keys.epoch]
        return Outcome(await self._run("send_stop", keys, [epoch, job.id, node]))

    async def request_stop(self, epoch: int, job_id: str, reason: JobState, now: float,
                           end_reason: str = "") -> Outcome:
        """Ask for an active job to stop, ending in `reason` (or requeued if PREEMPTED), with
        `end_reason` as its recorded reason when not the state's usual one (e.g. IdleGpu)."""
        keys = [self.keys.job(job_id), self.keys.epoch, self.keys.stats]
        args = [epoch, reason.value, now, end_reason]
        return Outcome(await self._run("request_stop", keys, args))

    async def set_idle(self, epoch: int, states: dict[str, tuple[dict[int, float], bool]]) -> str:
        """Write running jobs' idle-GPU state: job id -> (GPU index -> idle since, notified)."""
        if not states:
            return "0"
        keys = [self.keys.epoch] + [self.keys.job(j) for j in states]
        args: list[Any] = [epoch]
        for since, notified in states.values():
            args += [json.dumps({str(k): v for k, v in since.items()}), "1" if notified else ""]
        return str(await self._run("set_idle", keys, args))

    async def charge(self, epoch: int, job_ids: Iterable[str], now: float,
                     limits: Mapping[str, float] | None = None) -> float:
        """Charge the running jobs up to `now`, each at most up to its `limits` entry (its
        nodes' last heartbeat: nothing is charged that a node has not shown)."""
        ids = list(job_ids)
        keys = [self.keys.usage, self.keys.epoch] + [self.keys.job(j) for j in ids]
        bounds = limits or {}
        args = [epoch, now, *("" if bounds.get(j) is None else bounds[j] for j in ids)]
        result = await self._run("charge", keys, args)
        if result == Outcome.STALE_EPOCH:
            return 0.0
        return float(result)

    async def set_reasons(self, reasons: dict[str, list[dict[str, str]]],
                          held: Iterable[str] = (),
                          estimates: dict[str, float] | None = None) -> int:
        """Write each waiting job's reasons (first one is the short `reason`) and estimated
        start; jobs in `held` become HELD (a budget holds them), the others PENDING."""
        if not reasons:
            return 0
        held = set(held)
        estimates = estimates or {}
        written = 0
        items_of = list(reasons.items())
        for first in range(0, len(items_of), READ_CHUNK):  # bounded scripts, as job_fields
            keys: list[str] = []
            args: list[Any] = []
            for job_id, items in items_of[first:first + READ_CHUNK]:
                keys.append(self.keys.job(job_id))
                state = JobState.HELD if job_id in held else JobState.PENDING
                args += [items[0]["code"] if items else "", json.dumps(items), state,
                         estimates.get(job_id, "")]
            written += int(await self._run("set_reasons", keys, args))
        return written

    # ---------------------------------------------------------------- jobs: reads

    async def get_job(self, job_id: str) -> Job | None:
        raw = await self.r.hgetall(self.keys.job(job_id))
        return Job.from_fields(raw) if raw else None

    async def get_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
            rows = await pipe.execute()
        return [Job.from_fields(raw) for raw in rows if raw]

    async def queue_ids(self) -> tuple[list[str], list[str]]:
        """(active job ids, waiting job ids: PENDING/budget-HELD, then held by a person)."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.smembers(self.keys.active)
            pipe.zrange(self.keys.waiting, 0, -1)
            pipe.zrange(self.keys.held, 0, -1)
            active, waiting, held = await pipe.execute()
        return sorted(active, key=id_key), list(waiting) + list(held)

    async def job_fields(self, job_ids: Sequence[str],
                         fields: Sequence[str]) -> list[list[str | None]]:
        """Some fields of many jobs, READ_CHUNK per round trip: per job, the values in `fields`
        (None where absent; a job that is gone has all None)."""
        width = len(fields)
        rows: list[list[str | None]] = []
        # In bounded scripts: one over a 100,000-job queue held the store past its busy limit
        # (every other client, the leader's lease included, answered BUSY meanwhile).
        for first in range(0, len(job_ids), READ_CHUNK):
            chunk = job_ids[first:first + READ_CHUNK]
            flat = await self._run("read_fields", [self.keys.job(j) for j in chunk], fields)
            rows += [flat[i * width:(i + 1) * width] for i in range(len(chunk))]
        return rows

    async def waiting_ids(self) -> list[str]:
        return list(await self.r.zrange(self.keys.waiting, 0, -1))

    async def waiting_jobs(self) -> list[Job]:
        """Queued jobs: those the scheduler considers, then those a person put on hold."""
        held = list(await self.r.zrange(self.keys.held, 0, -1))
        return await self.get_jobs(await self.waiting_ids() + held)

    async def list_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        """Jobs as lists show them: every field but the command, environment and script (the
        largest, and never served in a list: GET /v1/jobs/{id} serves them)."""
        if not job_ids:
            return []
        rows = await self.job_fields(job_ids, LIST_FIELDS)
        return [Job.from_fields({k: v for k, v in zip(LIST_FIELDS, row, strict=True)
                                 if v is not None}) for row in rows if row[0] is not None]

    async def active_jobs(self) -> list[Job]:
        return await self.get_jobs(sorted(await self.r.smembers(self.keys.active), key=id_key))

    async def done_ids(self, limit: int = 100) -> list[str]:
        """The latest ended jobs' ids, newest first."""
        return list(await self.r.zrevrange(self.keys.done, 0, max(0, limit - 1)))

    async def done_jobs(self, limit: int = 100) -> list[Job]:
        ids = await self.r.zrevrange(self.keys.done, 0, max(0, limit - 1))
        return await self.get_jobs(ids)

    async def job_counts(self) -> dict[str, int]:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.waiting)
            pipe.scard(self.keys.active)
            pipe.zcard(self.keys.done)
            waiting, active, done = await pipe.execute()
        return {"waiting": waiting, "active": active, "done": done}

    async def stored_jobs(self, user: str) -> tuple[int, int]:
        """How many jobs of `user` the store keeps (waiting, running, ended; array tasks not
        made yet included), and the bytes of their commands, environments and scripts."""
        jobs, size = await self.r.hmget(self.keys.stored, user, f"bytes|{user}")
        return int(jobs or 0), int(size or 0)

