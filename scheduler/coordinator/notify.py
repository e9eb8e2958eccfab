"""Run the admin's `notify_command` for an event: a job's GPUs are idle, or a job its owner
asked to hear of (`--notify`, Slurm's `--mail-type`) began, ended, failed, ran out of time or
was queued again.

The command line is the admin's own text, run with `/bin/sh -c` so that it may be a pipeline
(`echo "$LABQ_NOTIFY_MESSAGE" | mail -s labq "$LABQ_NOTIFY_USER@lab.example"`). The event's data
never goes into that text: it reaches the command only as environment variables
(LABQ_NOTIFY_USER, LABQ_NOTIFY_JOB, LABQ_NOTIFY_EVENT, LABQ_NOTIFY_MESSAGE and, for a job's
events, the job's facts: LABQ_NOTIFY_STATE, _REASON, _NAME, _ACCOUNT, _EXIT_CODE, _NODES,
_RUN_S), so nothing a user controls (a job name, say) can change what runs; the job's own
environment and script never reach it. A command that fails or runs past its time limit is
logged, and killed with its process group; it never fails the caller. At most
`MAX_RUNNING` commands run at once and `MAX_WAITING` wait: past that an event is logged and
dropped, so a thousand jobs ending at once never make a thousand processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping

from scheduler.model import Job, JobState, NotifyEvent
from scheduler.timeparse import format_duration

log = logging.getLogger(__name__)

MAX_RUNNING = 8  # notify commands running at once
MAX_WAITING = 1000  # events waiting for a free slot; beyond, logged and dropped

OUTPUT_CAP = 2000  # characters of the command's output kept in the log
READ_CAP = 64 * 1024  # bytes of output held in memory; the rest is read and dropped


async def run_notify(command: str, user: str, job_id: str, event: str, message: str,
                     timeout_s: float, facts: Mapping[str, str] | None = None) -> bool:
    """Run `command` once for one event; True if it exited 0 within `timeout_s`. `facts`:
    more LABQ_NOTIFY_* variables (names without the prefix)."""
    env = {**os.environ, "LABQ_NOTIFY_USER": user, "LABQ_NOTIFY_JOB": job_id,
           "LABQ_NOTIFY_EVENT": event, "LABQ_NOTIFY_MESSAGE": message,
           **{f"LABQ_NOTIFY_{name}": value for name, value in (facts or {}).items()}}
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
    except OSError as exc:
        log.warning("notify_command could not start for %s of job %s: %s", event, job_id, exc)
        return False
    try:
        output = await asyncio.wait_for(_bounded_output(proc), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        log.warning("notify_command for %s of job %s ran past %.0f s: killed", event, job_id,
                    timeout_s)
        return False
    if proc.returncode != 0:
        text = output.decode(errors="replace")[-OUTPUT_CAP:]
        log.warning("notify_command for %s of job %s exited %s: %s", event, job_id,
                    proc.returncode, text.strip())
        return False
    return True


async def _bounded_output(proc: asyncio.subprocess.Process) -> bytes:
    """The command's first `READ_CAP` bytes of output; the rest is drained, not kept, so a
    chatty command cannot fill the coordinator's memory. Returns when the command exits."""
    assert proc.stdout is not None
    kept = b""
    while chunk := await proc.stdout.read(65536):
        if len(kept) < READ_CAP:
            kept += chunk[: READ_CAP - len(kept)]
    await proc.wait()
    return kept


class Notifier:
    """Runs notify_command for events in the background, keeping its tasks until they end: a
    slow mail server never holds the cycle. Every event is logged, command or not."""

    def __init__(self, command: str, timeout_s: float) -> None:
        self.command = command
        self.timeout_s = timeout_s
        self.running: set[asyncio.Task[bool]] = set()
        self._slots = asyncio.Semaphore(MAX_RUNNING)
        self.dropped = 0  # events not sent: too many waited

    def send(self, event: str, user: str, job_id: str, message: str,
             facts: Mapping[str, str] | None = None) -> None:
        log.info("%s: %s", event, message)
        if not self.command:
            return
        if len(self.running) >= MAX_RUNNING + MAX_WAITING:
            self.dropped += 1
            log.warning("notify_command: %d events wait already; %s of job %s not sent",
                        len(self.running), event, job_id)
            return
        task = asyncio.create_task(self._run(event, user, job_id, message, dict(facts or {})))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run(self, event: str, user: str, job_id: str, message: str,
                   facts: dict[str, str]) -> bool:
        async with self._slots:
            return await run_notify(self.command, user, job_id, event, message,
                                    self.timeout_s, facts)

    def job_event(self, job: Job, event: NotifyEvent, state: JobState | None, reason: str,
                  at: float, exit_code: int | None = None) -> None:
        """Tell the owner of `job` of `event`, if they asked for it (`job.notify`)."""
        if event.value not in job.notify.split(","):
            return
        run_s = at - job.started_at if job.started_at is not None else 0.0
        shown = f"job {job.id}" + (f" ({job.name})" if job.name else "")
        where = ", ".join(job.node_names)
        if event is NotifyEvent.BEGIN:
            message = f"{shown} began on {where}"
        elif event is NotifyEvent.REQUEUE:
            message = f"{shown} was queued again ({reason}) after {format_duration(run_s)}"
        else:
            message = (f"{shown} ended {state.value if state else ''}"
                       f"{f': {reason}' if reason else ''} after {format_duration(run_s)}"
                       f"{f' on {where}' if where else ''}")
        facts = {"STATE": state.value if state else job.state.value, "REASON": reason,
                 "NAME": job.name, "ACCOUNT": job.account, "NODES": where,
                 "EXIT_CODE": "" if exit_code is None else str(exit_code),
                 "RUN_S": f"{max(0.0, run_s):.0f}"}
        self.send(event.value, job.user, job.id, message, facts)


def end_event(notify: str, state: JobState) -> NotifyEvent | None:
    """The one event to tell of a job that ended in `state`, of those its owner asked for
    (`notify`, "begin,end"): the most specific, so "end,fail" tells a failure once, as a
    failure."""
    asked = set(notify.split(","))
    for event, applies in ((NotifyEvent.TIMEOUT, state is JobState.TIMEOUT),
                           (NotifyEvent.FAIL, state is JobState.FAILED),
                           (NotifyEvent.END, True)):
        if applies and event.value in asked:
            return event
    return None
