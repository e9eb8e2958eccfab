"""Step 2 of a cycle, watch: bring every active job in line with what its nodes' agents
report (`reactions`), apply the transitions with fenced store scripts, and tell owners who
asked (`--notify`) that their job began, ended or was queued again.

A mixin of `Coordinator` (it uses the coordinator's store, node channel, settings, notifier
and kick); kept apart so the cycle's loop reads as its steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace

from scheduler.config import Settings
from scheduler.coordinator.nodes import NodeChannel
from scheduler.coordinator.notify import Notifier, end_event
from scheduler.coordinator.reactions import (
    Action,
    EndOrRequeue,
    Finish,
    MarkRunning,
    RequestStop,
    Requeue,
    SendStop,
    combined_status,
    react,
)
from scheduler.model import Job, JobState, NotifyEvent
from scheduler.store import Outcome, Store

STOP_RETRY_S = 5.0


class Watching:
    """The watch step; needs the attributes below from the `Coordinator` it is mixed into."""

    store: Store
    nodes: NodeChannel
    settings: Settings
    notifier: Notifier
    kick: asyncio.Event
    _last_stop_sent: dict[str, float]

    async def _watch(self, epoch: int, active: Sequence[Job], now: float
                     ) -> tuple[bool, dict[str, Job]]:
        """Follow every active job with what its node's agent last reported. Returns whether
        a job gave its GPUs back (ended or was requeued), and the new record of each job an
        action changed."""
        reports = await self.nodes.reports({name for j in active for name in j.node_names})
        freed = False
        updated: dict[str, Job] = {}
        for job in active:
            if job.parts:  # across nodes: the head's run, once every node runs its part
                status = combined_status(job, {name: reports.get(name, {}).get(job.id)
                                               for name in job.node_names})
            else:
                status = reports.get(job.node or "", {}).get(job.id)
            for action in react(job, status, now, self.settings.launch_timeout_s,
                                self.settings.stop_grace_s):
                after = await self._apply(epoch, job, action, now)
                if after is not job:
                    job = updated[job.id] = after
                freed |= isinstance(action, Finish | Requeue | EndOrRequeue)
        return freed, updated

    async def _apply(self, epoch: int, job: Job, action: Action, now: float) -> Job:
        """Carry out one action; returns the job's record after it (a new one where the
        action changed what the cycle reads of it, else `job`)."""
        if isinstance(action, MarkRunning):
            if await self.store.mark_running(epoch, job.id, action.at) == Outcome.OK:
                self.notifier.job_event(job, NotifyEvent.BEGIN, JobState.RUNNING, "",
                                        action.at)
            return replace(job, started_at=action.at)
        elif isinstance(action, Finish):
            outcome = await self.store.finish(epoch, job, action.state, action.exit_code,
                                              action.reason, action.at, usage=action.usage)
            if outcome == Outcome.OK:
                self._tell_end(job, action.state, action.reason, action.at, action.exit_code)
            self._ended(job)
        elif isinstance(action, Requeue):
            outcome = await self.store.requeue(epoch, job, action.reason, action.at)
            self._tell_requeue(job, outcome, action.reason, action.at)
            self._ended(job)
        elif isinstance(action, EndOrRequeue):
            await self._end_or_requeue(epoch, job, action.reason, action.at,
                                       usage=action.usage)
            self._ended(job)
        elif isinstance(action, RequestStop):
            if await self.store.request_stop(epoch, job.id, action.state, now) == Outcome.OK:
                return replace(job, stop_request=action.state.value)
        elif isinstance(action, SendStop):
            await self._send_stop(epoch, job, now)
        return job

    async def _end_or_requeue(self, epoch: int, job: Job, reason: str, now: float,
                              charge_until: float | None = None,
                              usage: Mapping[str, int] | None = None) -> None:
        """Queue it again if it asked (--requeue), else end it FAILED with `reason`."""
        if job.requeue:
            outcome = await self.store.requeue(epoch, job, reason, now, charge_until)
            self._tell_requeue(job, outcome, reason, now)
        elif await self.store.finish(epoch, job, JobState.FAILED, None, reason, now,
                                     charge_until, usage) == Outcome.OK:
            self._tell_end(job, JobState.FAILED, reason, now)

    def _tell_end(self, job: Job, state: JobState, reason: str, at: float,
                  exit_code: int | None = None) -> None:
        event = end_event(job.notify, state)
        if event is not None:
            self.notifier.job_event(job, event, state, reason, at, exit_code)

    def _tell_requeue(self, job: Job, outcome: Outcome, reason: str, at: float) -> None:
        """A requeue queues the job again (OK), or ends it in the stop a person or its time
        limit asked for (ENDED)."""
        if outcome == Outcome.OK:
            self.notifier.job_event(job, NotifyEvent.REQUEUE, JobState.PENDING, reason, at)
        elif outcome == Outcome.ENDED and job.stop_request:
            self._tell_end(job, JobState(job.stop_request), job.stop_reason or reason, at)

    def _ended(self, job: Job) -> None:
        self._last_stop_sent.pop(job.id, None)
        self.kick.set()  # its GPUs are free: schedule now

    async def _send_stop(self, epoch: int, job: Job, now: float) -> None:
        """Hand a stop to the job's node (again after STOP_RETRY_S: cheap and idempotent)."""
        if now - self._last_stop_sent.get(job.id, 0.0) >= STOP_RETRY_S:
            self._last_stop_sent[job.id] = now
            await self.nodes.send_stop(epoch, job)
