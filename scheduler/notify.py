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
        output, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
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
