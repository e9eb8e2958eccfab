"""`labq submit` and the commands that change jobs: cancel, hold, release."""

from __future__ import annotations

import os
import sys
import time
import uuid

import click

from scheduler.cli.common import call, client, fail, print_json
from scheduler.client import Client, ClientError
from scheduler.wire import SubmitRequest

# ---------------------------------------------------------------------------- submit


def _parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env {pair!r}: write it as NAME=value")
        env[key] = value
    return env


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--gpus", "-G", default=1, show_default=True, type=int, help="GPUs, all on one node")
@click.option("--gpu-type", default=None, help="GPU model or family, e.g. A100")
@click.option("--time", "-t", "time_limit", default=None,
              help="time limit: 30s, 10m, 2h, 1d or HH:MM:SS (default 1h)")
@click.option("--account", "-A", default=None, help="account to charge")
@click.option("--qos", default=None, help="quality of service: normal or scavenger")
@click.option("--name", "-J", default=None, help="a name for the job")
@click.option("--workdir", "-D", default=None, help="directory to run in (default: here)")
@click.option("--env", "env_pairs", multiple=True, help="NAME=value for the job (repeatable)")
@click.option("--output", "-o", default=None,
              help="output file, %j = job id (default: labq-%j.out in the work directory)")
@click.option("--array", default=1, type=int, help="submit N copies at once")
@click.option("--requeue", is_flag=True, help="requeue instead of failing if the node is lost")
@click.option("--as", "as_user", default=None, help="admins: submit for this user")
@click.option("--json", "as_json", is_flag=True, help="print the job record(s) as JSON")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def submit(gpus: int, gpu_type: str | None, time_limit: str | None, account: str | None,
           qos: str | None, name: str | None, workdir: str | None, env_pairs: tuple[str, ...],
           output: str | None, array: int, requeue: bool, as_user: str | None,
           as_json: bool, command: tuple[str, ...]) -> None:
    """Queue COMMAND; prints the new job id.  Example: labq submit --gpus 2 -- python train.py"""
    body = SubmitRequest(
        command=list(command), gpus=gpus, gpu_type=gpu_type, time=time_limit, account=account,
        qos=qos, name=name, workdir=os.path.abspath(workdir) if workdir else os.getcwd(),
        output=output, env=_parse_env(env_pairs), array=array, requeue=requeue,
        as_user=as_user, token=uuid.uuid4().hex, return_jobs=as_json,
    ).to_json()
    result = call("POST", "/v1/jobs", body)
    for warning in result.get("warnings", []):
        click.echo(f"labq: warning: {warning}", err=True)
    if as_json:
        jobs = result["jobs"]
        print_json(jobs[0] if len(jobs) == 1 else jobs)
    else:
        click.echo("\n".join(result["ids"]))



@click.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--no-wait", is_flag=True, help="return without waiting for running jobs to stop")
def cancel(job_ids: tuple[str, ...], no_wait: bool) -> None:
    """Cancel jobs of yours (pending or running)."""
    api = client()
    failed = False
    for job_id in job_ids:
        try:
            result = api.request("POST", f"/v1/jobs/{job_id}/cancel", {})
        except ClientError as exc:
            click.echo(f"labq: error: {exc}", err=True)
            failed = True
            continue
        if result["result"] == "ALREADY_DONE":
            click.echo(f"job {job_id} had already ended")
        elif result["result"] == "STOPPING" and not no_wait:
            state = _wait_terminal(api, job_id, 30.0)
            click.echo(f"job {job_id} {state.lower() if state else 'is stopping'}")
        else:
            done = result["result"] == "CANCELLED"
            click.echo(f"job {job_id} {'cancelled' if done else 'is stopping'}")
    if failed:
        sys.exit(1)


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
def hold(job_ids: tuple[str, ...]) -> None:
    """Keep pending jobs from starting until released (admins: anyone's)."""
    _hold_or_release(job_ids, "hold", done="held", already="was already held")


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
def release(job_ids: tuple[str, ...]) -> None:
    """Let held jobs run again."""
    _hold_or_release(job_ids, "release", done="released", already="was not held")


def _hold_or_release(job_ids: tuple[str, ...], verb: str, done: str, already: str) -> None:
    for job_id in job_ids:
        result = call("POST", f"/v1/jobs/{job_id}/{verb}", {})
        click.echo(f"job {job_id} {already if result['result'] == 'ALREADY' else done}")


def _wait_terminal(api: Client, job_id: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.request("GET", f"/v1/jobs/{job_id}")
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"):
            return str(job["state"])
        time.sleep(0.2)
    return None



JOB_COMMANDS = (submit, cancel, hold, release)
