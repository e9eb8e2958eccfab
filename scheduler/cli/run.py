"""`labq run [OPTIONS] -- COMMAND` (like `srun --pty`): an interactive job on the queue.

It is queued like any job (fair share, budgets, its time limit apply); while it waits, one
line on stderr says why, and Ctrl-C cancels it. Once placed, COMMAND runs as the user inside
the job's cgroup with only its GPUs, on a terminal of its own attached to this one (keys,
window size, Ctrl-C, output, exit status; scheduler.cli.attach and agents.attach). The job
ends when COMMAND exits or this terminal goes away; `labq run` exits with COMMAND's status.

The job's node connects back to this `labq run` (on the address it reaches the coordinator
from), proving it is the job with a one-time token given in the job's private environment:
so a GPU node must be able to reach the host `labq run` is typed on, as Slurm's nodes reach
`srun`'s.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import time
from typing import Any

import click

from scheduler.cli.attach import accept_job, listen_address, listener, relay, wait_message
from scheduler.cli.common import client
from scheduler.cli.errors import LabqCommand, usage_error
from scheduler.cli.submit import post_submit, submit, submit_body
from scheduler.client import ClientError
from scheduler.jobwire import TOKEN_ENV
from scheduler.model import TERMINAL_STATES

# labq submit's options that make sense for one interactive command
RUN_OPTIONS = ("gpus", "gpu_type", "time_limit", "account", "qos", "name", "workdir",
               "env_pairs", "export", "as_user", "cpus", "cpus_per_gpu", "mem", "mem_per_gpu",
               "notify")
STATE_POLL_S = 2.0


def _params() -> list[click.Parameter]:
    return [*(p for p in submit.params if p.name in RUN_OPTIONS),
            click.Argument(["command"], nargs=-1, type=click.UNPROCESSED,
                           metavar="-- COMMAND...")]


@click.command(cls=LabqCommand, params=_params(),
               context_settings={"allow_interspersed_args": False})
def run(**values: Any) -> None:
    """Run COMMAND interactively on GPUs from the queue (like srun --pty).

    \b
    labq run --gpus 1 -- bash                  a shell on one GPU
    labq run --gpus 1 --time 2h -- python      a Python prompt
    labq run --gpus 1 -- jupyter lab --no-browser --ip 0.0.0.0 --port 8888
    """
    command: tuple[str, ...] = values["command"]
    if not command:
        raise usage_error("labq run needs a command after `--`, e.g. labq run -- bash")
    token = secrets.token_hex(32)
    options = {**values, "nodes": 1, "output": "/dev/null", "error": None, "array": None,
               "dependency": None, "hold": False, "requeue": False, "as_json": False,
               "env_pairs": (*values["env_pairs"], f"{TOKEN_ENV}={token}"),
               "name": values["name"] or "interactive"}
    api = client()
    lsock = listener(listen_address(api.host if api.server else ""))
    host, port = lsock.getsockname()[:2]
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    attach = (sys.executable, "-m", "agents.attach", where, "--", *command)
    result, api = post_submit(submit_body(options, attach, None))
    job_id = str(result["ids"][0])
    shown: set[str] = set()
    last = [0.0]

    def still_waiting() -> bool:
        if time.monotonic() - last[0] < STATE_POLL_S:
            return True
        last[0] = time.monotonic()
        job = api.request("GET", f"/v1/jobs/{job_id}")
        if job["state"] in TERMINAL_STATES:
            click.echo(f"labq run: job {job_id} ended {job['state']} before it started"
                       f"{': ' + job['reason'] if job.get('reason') else ''}", err=True)
            return False
        if job["state"] != "RUNNING":
            wait_message(job, shown)
        return True

    try:
        conn = accept_job(lsock, token, still_waiting)
    except KeyboardInterrupt:
        with contextlib.suppress(ClientError):  # the coordinator away: the job's limit ends it
            api.request("POST", f"/v1/jobs/{job_id}/cancel", {})
        click.echo(f"\nlabq run: job {job_id} cancelled", err=True)
        sys.exit(130)
    finally:
        lsock.close()
    if conn is None:
        sys.exit(1)
    with conn:
        code = relay(conn)
    sys.exit(code)

