"""Run the admin's `notify_command` for an event (e.g. a job's GPUs are idle).

The command line is the admin's own text, run with `/bin/sh -c` so that it may be a pipeline
(`echo "$LABQ_NOTIFY_MESSAGE" | mail -s labq "$LABQ_NOTIFY_USER@lab.example"`). The event's data
never goes into that text: it reaches the command only as environment variables
(LABQ_NOTIFY_USER, LABQ_NOTIFY_JOB, LABQ_NOTIFY_EVENT, LABQ_NOTIFY_MESSAGE), so nothing a user
controls (a job name, say) can change what runs. A command that fails or runs past its time
limit is logged, and killed with its process group; it never fails the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

log = logging.getLogger(__name__)

OUTPUT_CAP = 2000  # characters of the command's output kept in the log
READ_CAP = 64 * 1024  # bytes of output held in memory; the rest is read and dropped


async def run_notify(command: str, user: str, job_id: str, event: str, message: str,
                     timeout_s: float) -> bool:
    """Run `command` once for one event; True if it exited 0 within `timeout_s`."""
    env = {**os.environ, "LABQ_NOTIFY_USER": user, "LABQ_NOTIFY_JOB": job_id,
           "LABQ_NOTIFY_EVENT": event, "LABQ_NOTIFY_MESSAGE": message}
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

    def send(self, event: str, user: str, job_id: str, message: str) -> None:
        log.info("%s: %s", event, message)
        if not self.command:
            return
        task = asyncio.create_task(run_notify(self.command, user, job_id, event, message,
                                              self.timeout_s))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
