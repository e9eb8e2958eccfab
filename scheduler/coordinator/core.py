"""The coordinator: leader lease, then a loop of scheduling cycles that are functions of `now`.

A cycle, when this coordinator leads:
  1. nodes   — mark nodes whose heartbeats stopped DOWN; their jobs end NodeLost or requeue
  2. watch   — bring STARTING/RUNNING jobs in line with what their nodes' agents report
               (reactions); hand stop requests (cancel, time limit) to the nodes; tell
               owners who asked (--notify) that a job began, ended or was requeued (watch)
  3. charge  — bill running jobs for the GPU time used since the last charge
  4. idle    — track GPUs running jobs leave idle; warn, notify, or stop them (idle)
  5. decide  — snapshot → policy.schedule() → start decisions: each one fenced script that
               allocates the GPUs and writes the start record for the node's agent
  6. explain — write the waiting jobs' reasons that changed since this coordinator wrote them
Every write is a fenced store script, so a deposed leader's late writes are refused. The
coordinator never starts or signals a process and never waits on a node: agents do that.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import replace

from scheduler.cluster.read import ClusterState, build_snapshot, read_cluster
from scheduler.config import Settings
from scheduler.coordinator.idle import (
    EVENT_IDLE,
    EVENT_STOPPED,
    IDLE_REASON,
    IdleDecision,
    IdlePolicy,
    check_idle,
    fresh_readings,
    notify_message,
    running_gpus,
)
from scheduler.coordinator.lease import LeaseKeeper
from scheduler.coordinator.nodes import NodeChannel, StoreNodes, last_heard
from scheduler.coordinator.notify import Notifier
from scheduler.coordinator.waiting import (
    QUEUE_FIELDS,
    Queued,
    check_dependencies,
    dependency_reason,
    is_met,
    spawn_count,
)
from scheduler.coordinator.watch import Watching
from scheduler.metrics.hist import CYCLE_BUCKETS, LocalHistogram
from scheduler.model import Job, JobState, Node, NodeState, Reason, ReasonCode
from scheduler.policy import Decisions, PendingJob, Snapshot, schedule
from scheduler.policy.fairengine import FairShare
from scheduler.policy.fairshare import FairShareTable
from scheduler.policy.preemption import Preemption
from scheduler.store import Outcome, Store
from scheduler.store.jobstore import READ_CHUNK
from scheduler.trouble import Trouble

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 60.0
RETENTION_BATCHES = 20  # per pass: up to 4,000 jobs a minute, far above any lab's rate
WAKE_WAIT_S = 1.0
FAIRSHARE_FRESH_S = 10.0
MIN_CYCLE_GAP_S = 0.05
# Every waiting job's reasons are written again within about this long, whether or not they
# changed: what a writer other than this leader wrote is corrected so (a deposed leader's late
# write; a release tells the leader itself, through the changed list).
REASONS_REFRESH_S = 300.0
HOLDING_REASONS = frozenset({"BudgetExhausted"})  # a job waiting for these is HELD, not PENDING


class Coordinator(Watching):
    def __init__(self, store: Store, settings: Settings,
                 nodes: NodeChannel | None = None) -> None:
        self.store = store
        self.nodes = nodes or StoreNodes(store)  # agents' reports and stop requests
        self.settings = settings
        # A test hook for fault injection (bench/faults.py): after allocating a job, this cycle
        # waits so long, for a kill -9 between the allocation and the job's start on its node.
        # Unset in production; the lease goes on being renewed meanwhile.
        self.pause_after_allocate = float(os.environ.get("LABQ_TEST_PAUSE_AFTER_ALLOCATE")
                                          or 0)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{time.time():.0f}"
        self.epoch = 0  # the epoch this coordinator leads under (0: it does not lead)
        self._lease_epoch = 0  # the last lease renewal's answer
        self._leading: asyncio.Task[None] | None = None  # a new leader's setup
        self.kick = asyncio.Event()
        self.last_cycle_s = 0.0
        self.cycle_durations = LocalHistogram(CYCLE_BUCKETS)
        self.idle_policy = IdlePolicy.from_settings(settings)
        self.notifier = Notifier(settings.notify_command, settings.notify_timeout_s)
        self.cycles = 0
        self._last_charge = 0.0
        self._last_retention = 0.0
        self._last_stop_sent: dict[str, float] = {}
        # job id -> a fingerprint of the reasons and estimate last written, oldest write first
        self._written_reasons: dict[str, int] = {}
        self._reasons_refreshed = time.monotonic()
        self._refresh_due = 0.0  # how many written reasons are due to be written again
        self._waiting_cache: dict[str, Queued] = {}
        self._deps_met: set[str] = set()  # waiting jobs whose dependency was met
        self.free_gpus = -1  # unknown until a cycle has placed jobs
        self._fairshare: tuple[float, FairShareTable] | None = None  # (when, the last table)
        self.fair = FairShare()  # the cycle's fair-share engine: tree, split, table
        self.metrics_fair = FairShare()  # /metrics' own (it ranks in a thread of its own)

    def job_submitted(self, jobs: Sequence[Job] = ()) -> None:
        """A new job can start at once only if some GPU was free after the last cycle. The
        API hands over the jobs just stored, so the next cycle need not read them back."""
        if self.is_leader:
            for job in jobs:  # without its request's text: the start reads the job again
                try:
                    self._waiting_cache.setdefault(job.id, Queued.of(job))
                except ValueError:
                    pass  # the next cycle reads it, and says why it cannot be scheduled
        if self.free_gpus != 0:
            self.kick.set()

    @property
    def is_leader(self) -> bool:
        return self.epoch > 0

    def fresh_fairshare(self, now: float) -> FairShareTable | None:
        """The last cycle's fair-share table, if this coordinator leads and ran it within
        FAIRSHARE_FRESH_S: `labq quota` and `/metrics` reuse it instead of computing it."""
        if not self.is_leader or self._fairshare is None:
            return None
        when, table = self._fairshare
        return table if 0 <= now - when <= FAIRSHARE_FRESH_S else None

    # ------------------------------------------------------------------ loops

    async def lease_loop(self) -> None:
        """Take and keep the leader lease (renewed on a thread of its own: `LeaseKeeper`)."""
        await LeaseKeeper(self.store, self.id, self._lease_answered).run()

    def _lease_answered(self, epoch: int) -> None:
        """A lease renewal's answer (on this loop): the epoch this coordinator leads under,
        or 0. A new leader sets up (the usage half-life, the pending counts) before its first
        cycle; until that is done it does not lead."""
        if epoch == self._lease_epoch:
            return
        self._lease_epoch = epoch
        # Another leader may have written meanwhile: forget what we believed.
        self._written_reasons.clear()
        self._waiting_cache.clear()
        self._deps_met.clear()
        if epoch and not self.epoch:
            self._leading = asyncio.create_task(self._begin_leading(epoch))
        else:
            self.epoch = epoch

    async def _begin_leading(self, epoch: int) -> None:
        try:
            await self.store.set_half_life(self.settings.usage_half_life_s)
            if await self.store.count_waiting() >= 0:  # once per store, then kept
                log.info("counted every user's waiting jobs for the pending cap")
        except Exception as exc:
            log.warning("could not set up as the leader (tried again at the next renewal): "
                        "%s", " ".join(f"{type(exc).__name__}: {exc}".split()))
            self._lease_epoch = 0  # the next renewal's answer sets up again
            return
        if self._lease_epoch == epoch:  # still ours
            log.info("leading with epoch %s", epoch)
            self.epoch = epoch
            self.kick.set()

    async def wake_loop(self) -> None:
        """Run a cycle as soon as an agent reports a change (start, exit), not a tick later."""
        trouble = Trouble("waiting for agent reports")
        while True:
            try:
                if await self.store.wait_wake(self.store.keys.wake, WAKE_WAIT_S):
                    self.kick.set()
                trouble.ok()
            except Exception:
                trouble.failed()
                await asyncio.sleep(WAKE_WAIT_S)

    async def cycle_loop(self) -> None:
        trouble = Trouble("scheduling cycle")
        while True:
            began = time.monotonic()
            if self.is_leader:
                try:
                    await self.cycle(time.time())
                    trouble.ok()
                except Exception:
                    trouble.failed()
            # Under a stream of submissions, leave the API at least twice a cycle's time.
            spent = time.monotonic() - began
            await asyncio.sleep(max(MIN_CYCLE_GAP_S - spent, 2 * spent))
            # Starts and ends on the nodes kick a cycle at once (`wake_loop`): no early polls.
            try:
                await asyncio.wait_for(self.kick.wait(), self.settings.cycle_interval_s)
            except TimeoutError:
                pass
            self.kick.clear()

    # ------------------------------------------------------------------ one cycle

    async def cycle(self, now: float) -> None:
        """One pass.

        The cluster is read once (`read_cluster`), and again, once, only if this cycle's own
        transitions changed it (a job ended or was requeued: its GPUs are free for phase 5).
        The state read is never edited: a step that changes jobs returns what it changed
        (the jobs of lost nodes it ended, a job marked running or asked to stop), and the
        cycle goes on with a new state without or with them."""
        began = time.perf_counter()
        epoch = self.epoch
        state = await read_cluster(self.store, now)
        lost = await self._check_nodes(epoch, state.nodes, state.active, now)
        state = state.without_jobs(lost)  # the jobs of lost nodes: ended or requeued
        freed, updated = await self._watch(epoch, state.active, now)
        state = state.with_jobs(updated)
        if now - self._last_charge >= self.settings.charge_interval_s:
            shown = last_heard(state.nodes, state.active)
            await self.store.charge(epoch, [j.id for j in state.active], now, shown)
            self._last_charge = now
        state = state.with_jobs(await self._check_idle(epoch, state.nodes, state.active, now))
        await self._retain(epoch, now)
        if lost or freed:
            state = await read_cluster(self.store, now)
        await self._decide(epoch, state)
        self.last_cycle_s = time.perf_counter() - began
        self.cycle_durations.observe(self.last_cycle_s)
        self.cycles += 1

    async def _check_nodes(
        self, epoch: int, nodes: Sequence[Node], active: Sequence[Job], now: float
    ) -> set[str]:
        """Mark silent nodes DOWN; end or requeue their jobs. Returns those jobs' ids."""
        lost: set[str] = set()
        cutoff = now - self.settings.node_timeout_s
        down = {n.name for n in nodes if n.state == NodeState.DOWN}
        for node in nodes:
            if node.state != NodeState.DOWN and node.last_heartbeat < cutoff:
                if await self.store.node_down(epoch, node.name, cutoff) == Outcome.DOWN:
                    log.warning("node %s missed heartbeats since %.0f: DOWN", node.name,
                                node.last_heartbeat)
                    down.add(node.name)
        shown = last_heard(nodes, active)
        for job in active:
            if any(name in down for name in job.node_names):
                # The node's agent kills the run if it comes back (the record is gone). It
                # is charged for what its nodes showed: up to their last heartbeat.
                await self._end_or_requeue(epoch, job, ReasonCode.NODE_LOST, now,
                                           shown.get(job.id))
                lost.add(job.id)
        return lost

    async def _retain(self, epoch: int, now: float) -> None:
        """Once a minute, move finished jobs past retention out of the hot store, a few bounded
        batches at a time (each batch is one short script)."""
        if now - self._last_retention < RETENTION_INTERVAL_S:
            return
        self._last_retention = now
        s = self.settings
        await self.store.expire_arrays(now, s.retention_s)
        for _ in range(RETENTION_BATCHES):
            if not await self.store.expire_done(epoch, now, s.retention_s, s.retention_jobs,
                                                s.retention_history_s):
                return

    async def _check_idle(self, epoch: int, nodes: Sequence[Node], active: Sequence[Job],
                          now: float) -> dict[str, Job]:
        """Track idle GPUs of running jobs (state in the store), notify, stop under "stop".
        Returns the new record of each job asked to stop."""
        updated: dict[str, Job] = {}
        running = [j for j in active if j.state == JobState.RUNNING]
        if not running:
            return updated
        readings = fresh_readings(nodes, now - self.settings.node_timeout_s)
        decisions = check_idle((running_gpus(j) for j in running), readings, self.idle_policy,
                               now)
        writes = {d.job_id: (d.idle_since, d.notified) for d in decisions if d.write}
        if writes and await self.store.set_idle(epoch, writes) == Outcome.STALE_EPOCH:
            return updated
        jobs = {j.id: j for j in running}
        for decision in decisions:
            job = jobs[decision.job_id]
            if decision.stop:
                if await self.store.request_stop(epoch, job.id, JobState.CANCELLED, now,
                                                 IDLE_REASON) == Outcome.OK:
                    log.info("stopping job %s: GPUs %s idle for %.0f s", job.id,
                             decision.idle_gpus, decision.idle_for_s)
                    job = updated[job.id] = replace(job, stop_request=JobState.CANCELLED.value)
                    await self._send_stop(epoch, job, now)
                    self._notify(EVENT_STOPPED, job, decision)
            elif decision.notify:
                self._notify(EVENT_IDLE, job, decision)
        return updated

    def _notify(self, event: str, job: Job, decision: IdleDecision) -> None:
        self.notifier.send(event, job.user, job.id,
                           notify_message(event, job, decision, self.idle_policy))

    async def _waiting_jobs(self) -> list[Queued]:
        """The waiting queue, reading from Redis only the jobs this process has not seen.

        What the policy and the start record use of a waiting job (its request) never changes
        while it waits; every state change is still checked by the store scripts.
        """
        for job_id in await self.store.pop_changed():  # a person changed it: read it again
            self._waiting_cache.pop(job_id, None)
            self._deps_met.discard(job_id)
            self._written_reasons.pop(job_id, None)  # (a release wrote its reason)
        ids = await self.store.waiting_ids()
        cache = self._waiting_cache
        missing = [job_id for job_id in ids if job_id not in cache]
        # Only the fields a waiting job is scheduled by (not the command, environment or
        # script: up to hundreds of KiB a job; the start reads the jobs it starts in full),
        # a chunk at a time, each kept as a `Queued` at once: a new leader's first read of
        # 100,000 jobs never holds them all as raw fields, nor the event loop for long.
        for first in range(0, len(missing), READ_CHUNK):
            chunk = missing[first:first + READ_CHUNK]
            rows = await self.store.job_fields(chunk, QUEUE_FIELDS)
            for job_id, row in zip(chunk, rows, strict=True):
                if row[0] is None:
                    continue  # gone since the ids were read
                try:
                    queued = Queued.of(Job.from_fields(
                        {k: v for k, v in zip(QUEUE_FIELDS, row, strict=True) if v is not None}))
                    cache[queued.id] = queued  # (keyed by its own id: one string, not two)
                except (ValueError, KeyError, TypeError) as exc:
                    # a malformed record (the policy refuses it): skip it
                    log.error("job %s cannot be scheduled: %s", job_id, exc)
        if len(cache) > len(ids) - len(missing):  # some left the queue
            current = set(ids)
            for job_id in [j for j in cache if j not in current]:
                del cache[job_id]
        return [cache[j] for j in ids if j in cache]

    async def _decide(self, epoch: int, state: ClusterState) -> None:
        """Schedule the waiting jobs: each start is one fenced script (GPUs and start record)."""
        now = state.now
        waiting = await self._waiting_jobs()
        if await self._spawn_tasks(epoch, state, waiting):
            waiting = await self._waiting_jobs()
        blocked = await self._dependencies(waiting, state.active, now)
        if blocked:
            waiting = [job for job in waiting if job.id not in blocked]
        if not waiting:
            self.free_gpus = -1
            await self._write_reasons(blocked, {})
            return
        # Held-by-a-person jobs are not in the queue the policy schedules. The policy runs in
        # a thread of its own: however long it takes (100,000 waiting jobs: about a second),
        # the event loop goes on renewing the lease and answering the API meanwhile.
        snapshot, decisions = await asyncio.to_thread(
            self._plan, state, [job.view for job in waiting])
        nodes, active = state.nodes, state.active
        if decisions.fairshare is not None:
            self._fairshare = (now, decisions.fairshare)
        self.free_gpus = sum(len(n.free) for n in snapshot.nodes if n.open) - sum(
            len(indices) for st in decisions.starts for _, indices in st.parts)
        # Start from fresh records: a cached request is stale if the job was requeued since.
        fresh = {j.id: j for j in await self.store.get_jobs([st.job_id for st in decisions.starts])}
        models = {n.name: n.gpu_model for n in nodes}
        hosts = {n.name: n.address or n.hostname for n in nodes}
        for start in decisions.starts:
            job = fresh.get(start.job_id)
            if job is None or job.state not in (JobState.PENDING, JobState.HELD) or job.hold:
                continue
            # the same GPUs on each node: the mean of their weights bills them exactly
            weight = sum(self.settings.billing_weight(models[name])
                         for name, _ in start.parts) / len(start.parts)
            if job.qos == "scavenger":
                weight *= self.settings.scavenger_billing_factor
            result = await self.store.start(epoch, job, start.node, start.indices, weight, now,
                                            start.rest, hosts)
            if result != Outcome.OK:
                log.info("start of job %s refused: %s", start.job_id, result)
            elif self.pause_after_allocate:  # fault injection only (bench/faults.py)
                log.warning("LABQ_TEST_PAUSE_AFTER_ALLOCATE: job %s allocated on %s GPUs %s; "
                            "pausing %s s", start.job_id, start.node, list(start.indices),
                            self.pause_after_allocate)
                await asyncio.sleep(self.pause_after_allocate)
        await self._preempt(epoch, decisions.preemptions, {j.id: j for j in active}, now)
        await self._write_reasons({**decisions.reasons, **blocked}, decisions.estimates)

    def _plan(self, state: ClusterState, waiting: list[PendingJob]) -> tuple[Snapshot, Decisions]:
        """The pure part of `decide`: the snapshot and the policy's decisions on it."""
        snapshot = build_snapshot(state, waiting, self.settings)
        return snapshot, schedule(snapshot, fairshare=self.fair)

    async def _spawn_tasks(self, epoch: int, state: ClusterState, waiting: Sequence[Queued]
                           ) -> bool:
        """Make the next tasks of arrays with indices left (up to each one's throttle).
        Returns whether any task was made."""
        arrays = await self.store.arrays()
        if not arrays:
            return False
        counts: dict[str, list[int]] = {}
        for queued in waiting:
            if queued.array_job:
                counts.setdefault(queued.array_job, [0, 0])[0] += 1
        for job in state.active:
            if job.array_job:
                counts.setdefault(job.array_job, [0, 0])[1] += 1
        gpus = sum(n.gpus_total for n in state.nodes if n.state == NodeState.UP)
        made = False
        for array in arrays:
            waits, runs = counts.get(array.id, [0, 0])
            count = spawn_count(array, waits, runs, gpus)
            if count and await self.store.spawn_tasks(epoch, array, count) == Outcome.OK:
                made = True
        return made

    async def _dependencies(self, waiting: Sequence[Queued], active: Sequence[Job],
                            now: float) -> dict[str, list[Reason]]:
        """Waiting jobs whose dependency is not met, with the reason; a job that can never
        start is cancelled under kill_invalid_depend. Met dependencies are remembered."""
        pending = [j for j in waiting if j.dependency and j.id not in self._deps_met]
        verdicts = (await check_dependencies(self.store, pending, [*active, *waiting])
                    if pending else {})
        blocked = {}
        for job_id, verdict in verdicts.items():
            if is_met(verdict):
                self._deps_met.add(job_id)
                continue
            reason = dependency_reason(verdict)
            never = reason.code == ReasonCode.DEPENDENCY_NEVER_SATISFIED
            if never and self.settings.kill_invalid_depend:
                cancelled = await self.store.cancel(job_id, "labq", True, now, reason.code)
                if cancelled == Outcome.CANCELLED:
                    log.info("job %s cancelled: %s", job_id, reason.detail)
                    continue
            blocked[job_id] = [reason]
        return blocked

    async def _preempt(self, epoch: int, plans: Sequence[Preemption], active: dict[str, Job],
                       now: float) -> None:
        """Ask the victims' nodes to stop them (SIGTERM, grace, kill); `_watch` requeues them."""
        for plan in plans:
            for victim in plan.victims:
                asked = await self.store.request_stop(epoch, victim, JobState.PREEMPTED, now)
                if asked == Outcome.OK:
                    log.info("preempting scavenger job %s for job %s", victim, plan.for_job)
                    job = replace(active[victim], stop_request=JobState.PREEMPTED.value)
                    await self._send_stop(epoch, job, now)

    async def _write_reasons(self, reasons: dict[str, list[Reason]],
                             estimates: dict[str, float]) -> None:
        """Write only reasons (and estimates) that changed since this coordinator wrote them,
        and a share of the others each cycle (`_refresh_reasons`)."""
        written = self._written_reasons
        self._refresh_reasons()
        changed, keys = {}, {}
        for job_id, items in reasons.items():
            # A fingerprint, not the reasons: the reasons of 100,000 jobs are not kept from
            # one cycle to the next. (Two different reasons alike in it: rewritten later.)
            key = hash((*items, round(estimates.get(job_id, 0.0))))
            if written.get(job_id) != key:
                changed[job_id] = [r.to_dict() for r in items]
                keys[job_id] = key
        if len(written) > len(reasons) - len(changed):
            for job_id in [j for j in written if j not in reasons]:
                del written[job_id]  # started, cancelled or gone
        held = {job_id for job_id in changed if reasons[job_id]
                and reasons[job_id][0].code in HOLDING_REASONS}
        await self.store.set_reasons(changed, held, estimates)
        for job_id, key in keys.items():  # only once written; the oldest writes first
            written.pop(job_id, None)
            written[job_id] = key

    def _refresh_reasons(self) -> None:
        """Forget the oldest writes, so that those jobs' reasons are written again: each cycle
        a share of them as large as the share of REASONS_REFRESH_S since the last, so each
        job's are rewritten about every REASONS_REFRESH_S (a hold and release between two
        cycles, or another writer, is corrected so), a few at a time, never all at once."""
        now = time.monotonic()
        share = min(1.0, (now - self._reasons_refreshed) / REASONS_REFRESH_S)
        self._reasons_refreshed = now
        self._refresh_due = min(self._refresh_due + len(self._written_reasons) * share,
                                len(self._written_reasons))  # (a fraction carried over)
        due = int(self._refresh_due)
        self._refresh_due -= due
        for job_id in list(itertools.islice(self._written_reasons, due)):
            del self._written_reasons[job_id]
