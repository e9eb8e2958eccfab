"""The commands that change jobs: cancel (by id or by filter), hold, release, update,
requeue; `JOB_COMMANDS` are every job command `labq` registers (submit and wait included)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import click

from scheduler.cli.common import call, client, fail
from scheduler.cli.errors import LabqCommand, usage_error
from scheduler.cli.logtail import TERMINAL
from scheduler.cli.submit import submit, wait
from scheduler.client import Client, ClientError, list_jobs
from scheduler.model import LIVE_STATES, JobState

# ---------------------------------------------------------------------------- cancel


# Slurm's codes `labq cancel --state` takes (PD is PENDING alone here: held jobs are S or H).
_STATE_CODES = {"PD": JobState.PENDING, "R": JobState.RUNNING, "CF": JobState.STARTING,
                "S": JobState.HELD, "H": JobState.HELD, "PR": JobState.PREEMPTED}
_LIVE_STATES = LIVE_STATES


def _states(text: str) -> set[str]:
    states = set()
    for item in text.split(","):
        word = item.strip().upper()
        word = _STATE_CODES.get(word, word)
        if word in TERMINAL:
            raise usage_error(f"--state {item}: ended jobs cannot be cancelled; choose from "
                              f"{', '.join(_LIVE_STATES)}")
        if word not in _LIVE_STATES:
            raise usage_error(f"--state {item!r}: choose from {', '.join(_LIVE_STATES)} "
                              "(or PD, R)")
        states.add(word)
    return states


def array_indices(spec: str, limit: int = 100_000) -> list[int]:
    """The indices of an array line's `array_tasks` (`4-99`, `1,3,5-7`, `0-20:2`; a `%N`
    throttle is ignored)."""
    out: list[int] = []
    for part in spec.split("%")[0].split(","):
        span, _, step_text = part.partition(":")
        low, dash, high = span.partition("-")
        step = int(step_text) if step_text else 1
        first = int(low)
        last = int(high) if dash else first
        out.extend(range(first, last + 1, max(step, 1)))
        if len(out) > limit:
            raise ValueError(f"array {spec!r} has more than {limit:,} tasks")
    return out


def _targets(rows: list[dict[str, Any]], matches: list[dict[str, Any]]) -> list[str]:
    """The ids to cancel for the `matches` among the queue's `rows`: an array whose every
    line matches by its array id (once), else each matching task by its own id (a line of
    waiting tasks, `17_[4-99%8]`, by each of its tasks)."""
    lines_of: dict[str, int] = {}
    for row in rows:
        if row.get("array_job"):
            lines_of[row["array_job"]] = lines_of.get(row["array_job"], 0) + 1
    matched_of: dict[str, int] = {}
    for row in matches:
        if row.get("array_job"):
            matched_of[row["array_job"]] = matched_of.get(row["array_job"], 0) + 1
    out: list[str] = []
    for row in matches:
        array = row.get("array_job") or ""
        if array and matched_of[array] == lines_of[array]:
            out.append(array)
        elif array and row.get("array_tasks"):
            try:
                indices = array_indices(str(row["array_tasks"]))
            except ValueError:
                fail(f"cannot read the tasks {row['array_tasks']!r} of array {array}: cancel "
                     f"it by id ({array}) or its tasks one by one ({array}_N)")
            out += [f"{array}_{index}" for index in indices]
        else:
            out.append(str(row["id"]))
    return list(dict.fromkeys(out))


def _filtered_ids(api: Client, job_ids: tuple[str, ...], user: str | None, name: str | None,
                  state: str | None, account: str | None) -> list[str]:
    states = _states(state) if state else None
    try:
        me = api.request("GET", "/v1/whoami")
    except ClientError as exc:
        fail(str(exc))
    if user and user != me["user"] and not me["admin"]:
        fail(f"-u {user}: you may cancel only your own jobs ({me['user']} is not an admin)")
    query = "all=1" if me["admin"] else f"user={me['user']}"
    try:
        rows: list[dict[str, Any]] = list_jobs(api, query)
    except ClientError as exc:
        fail(str(exc))
    rows = [r for r in rows if r.get("state") not in TERMINAL]
    owner = user or (None if job_ids else me["user"])
    wanted = set(job_ids)

    def fits(row: dict[str, Any]) -> bool:
        return ((owner is None or row.get("user") == owner)
                and (name is None or row.get("name") == name)
                and (account is None or row.get("account") == account)
                and (states is None or row.get("state") in states)
                and (not wanted or row.get("id") in wanted or row.get("array_job") in wanted))

    matches = [r for r in rows if fits(r)]
    seen = {r.get("id") for r in matches} | {r.get("array_job") for r in matches}
    for job_id in job_ids:
        if job_id not in seen:
            click.echo(f"labq: job {job_id} does not match the filters (or has ended); left "
                       "alone", err=True)
    return _targets(rows, matches)


@click.command(cls=LabqCommand)
@click.argument("job_ids", nargs=-1)
@click.option("--user", "-u", default=None, help="jobs of this user (others': admins only)")
@click.option("--name", "-n", default=None, help="jobs of this name")
@click.option("--state", "-t", default=None, help="jobs in this state: PENDING, RUNNING, HELD")
@click.option("--account", "-A", default=None, help="jobs charged to this account")
@click.option("--no-wait", is_flag=True, help="return without waiting for running jobs to stop")
def cancel(job_ids: tuple[str, ...], user: str | None, name: str | None, state: str | None,
           account: str | None, no_wait: bool) -> None:
    """Cancel jobs of yours (pending or running): by id (17, an array's 17 or one task
    17_5), or every job of yours that the filters match (with ids: those of them that do)."""
    if not job_ids and not (user or name or state or account):
        raise usage_error("labq cancel: give job ids, or filters: -u USER, --name NAME, "
                          "--state STATE, --account ACCOUNT")
    api = client()
    targets = list(job_ids)
    if user or name or state or account:
        targets = _filtered_ids(api, job_ids, user, name, state, account)
        if not targets:
            click.echo("labq: no job matches; nothing cancelled", err=True)
            return
    posts = EachJob(api, "cancel")
    stopping: list[str] = []
    for job_id, result in posts(targets):
        if result["result"] == "ALREADY_DONE":
            click.echo(f"job {job_id} had already ended")
        elif result["result"] == "STOPPING" and not no_wait:
            stopping.append(job_id)
        else:
            done = result["result"] == "CANCELLED"
            click.echo(f"job {job_id} {'cancelled' if done else 'is stopping'}")
    deadline = time.monotonic() + 30.0
    for job_id in stopping:
        state_now = _wait_terminal(api, job_id, max(0.0, deadline - time.monotonic()))
        click.echo(f"job {job_id} {state_now.lower() if state_now else 'is stopping'}")
    if posts.failed:
        sys.exit(1)


class EachJob:
    """POST /v1/jobs/{id}/ACTION for one job after another: yields each answer; a refusal is
    its one line on stderr, and `failed` says there was one (the command then exits 1)."""

    def __init__(self, api: Client, action: str) -> None:
        self.api, self.action, self.failed = api, action, False

    def __call__(self, job_ids: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        for job_id in job_ids:
            try:
                yield job_id, self.api.request("POST", f"/v1/jobs/{job_id}/{self.action}", {})
            except ClientError as exc:
                click.echo(f"labq: error: {exc}", err=True)
                self.failed = True


def _wait_terminal(api: Client, job_id: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        job = api.request("GET", f"/v1/jobs/{job_id}")
        if job["state"] in TERMINAL:
            return str(job["state"])
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


# ---------------------------------------------------------------------------- hold, release


@click.command(cls=LabqCommand)
@click.argument("job_ids", nargs=-1, required=True)
def hold(job_ids: tuple[str, ...]) -> None:
    """Keep pending jobs from starting until released (admins: anyone's)."""
    _hold_or_release(job_ids, "hold", done="held", already="was already held")


@click.command(cls=LabqCommand)
@click.argument("job_ids", nargs=-1, required=True)
def release(job_ids: tuple[str, ...]) -> None:
    """Let held jobs run again."""
    _hold_or_release(job_ids, "release", done="released", already="was not held")


def _hold_or_release(job_ids: tuple[str, ...], verb: str, done: str, already: str) -> None:
    for job_id in job_ids:
        result = call("POST", f"/v1/jobs/{job_id}/{verb}", {})
        click.echo(f"job {job_id} {already if result['result'] == 'ALREADY' else done}")


# ---------------------------------------------------------------------------- update, requeue


@click.command(cls=LabqCommand)
@click.argument("job_id")
@click.option("--time", "-t", "time_limit", default=None, help="a new time limit")
@click.option("--name", "-J", default=None, help="a new name")
@click.option("--gpus", "-G", default=None, type=int, help="GPUs (a pending job)")
@click.option("--gpu-type", default=None, help="GPU model or family (a pending job)")
@click.option("--dependency", "-d", default=None, help="new dependencies (a pending job)")
@click.option("--account", "-A", default=None, help="another account of yours")
@click.option("--qos", "-q", default=None, help="another quality of service")
@click.option("--requeue/--no-requeue", default=None,
              help="requeue (or not) if the node is lost")
def update(job_id: str, time_limit: str | None, name: str | None, gpus: int | None,
           gpu_type: str | None, dependency: str | None, account: str | None,
           qos: str | None, requeue: bool | None) -> None:
    """Change a job, like scontrol update: only what is given changes."""
    body = {key: value for key, value in (
        ("time", time_limit), ("name", name), ("gpus", gpus), ("gpu_type", gpu_type),
        ("dependency", dependency), ("account", account), ("qos", qos), ("requeue", requeue),
    ) if value is not None}
    if not body:
        raise usage_error("labq update: give what to change: --time, --name, --gpus, "
                          "--gpu-type, --dependency, --account, --qos or --requeue/--no-requeue")
    result = call("POST", f"/v1/jobs/{job_id}/update", body)
    changed = list(result.get("changed") or [])
    click.echo(f"job {result.get('id', job_id)}: "
               + (f"changed {', '.join(changed)}" if changed else "nothing changed"))


@click.command(cls=LabqCommand)
@click.argument("job_ids", nargs=-1, required=True)
def requeue(job_ids: tuple[str, ...]) -> None:
    """Put jobs back in the queue (a running one is stopped first), like scontrol requeue."""
    posts = EachJob(client(), "requeue")
    for job_id, result in posts(job_ids):
        said = str(result.get("result", "")).lower().replace("_", " ")
        click.echo(f"job {result.get('id', job_id)} {said or 'requeued'}")
    if posts.failed:
        sys.exit(1)


JOB_COMMANDS = (submit, cancel, hold, release, wait, update, requeue)
