"""`labq submit` and the commands that change jobs: cancel, hold, release, update, requeue,
and `labq wait`.

Nothing typed is silently misread: an option `labq submit` does not have is refused before
anything is queued (exit status 2, one line naming it and labq's own option where there is
one), and every usage error of these commands is one line (`OneLineUsageError`; `LabqGroup`
does the same for every command of a group that uses it).
"""

from __future__ import annotations

import os
import stat
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

import click
from click.core import ParameterSource

from scheduler import jobenv
from scheduler.cli.common import call, client, fail, print_json
from scheduler.client import Client, ClientError
from scheduler.logtail import TERMINAL
from scheduler.wire import SubmitRequest

# ---------------------------------------------------------------------------- one-line errors


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line, `labq: error: ...`, exit status 2 (click's is a usage
    block, a hint and the message)."""

    def __init__(self, message: str, ctx: click.Context | None = None, bare: str = "") -> None:
        super().__init__(message, ctx)
        self.bare = bare or message  # without the command's name

    def show(self, file: IO[Any] | None = None) -> None:
        text = " ".join(self.format_message().split())
        click.echo(f"labq: error: {text}", err=True)


def _one_line(exc: click.UsageError, ctx: click.Context | None = None) -> OneLineUsageError:
    if isinstance(exc, OneLineUsageError):
        return exc
    text = exc.format_message()
    ctx = exc.ctx or ctx
    name = ctx.command_path if ctx is not None else ""
    return OneLineUsageError(f"{name}: {text}" if name else text, ctx, text)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except click.UsageError as exc:
        raise _one_line(exc) from None


class LabqCommand(click.Command):
    """A command whose usage errors are one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _one_line_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


class LabqGroup(click.Group):
    """A group whose commands' (and subgroups') usage errors are one line, exit status 2:
    `@click.group(cls=LabqGroup)`."""

    command_class = LabqCommand
    group_class = type  # subgroups are LabqGroups too

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _one_line_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


def usage_error(message: str) -> OneLineUsageError:
    return OneLineUsageError(message)


# ---------------------------------------------------------------------------- submit


class SubmitCommand(LabqCommand):
    """`labq submit`: an unknown option is refused with what to write instead."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        typed = list(args)  # click's parser consumes the list it is given
        try:
            return click.Command.parse_args(self, ctx, args)
        except click.NoSuchOption as exc:
            from scheduler.cli.directives import unknown_option

            name = exc.option_name
            raise OneLineUsageError(unknown_option(name, _value_after(typed, name),
                                                   submit_options()), ctx) from None
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from None


def _value_after(args: list[str], name: str) -> str | None:
    """The value typed with option `name` (`--opt=v`, `--opt v`, `-Xv`), if any."""
    for index, word in enumerate(args):
        if word == "--":
            break
        if word.startswith(name + "="):
            return word[len(name) + 1:]
        if word == name:
            following = args[index + 1] if index + 1 < len(args) else None
            return following if following and not following.startswith("-") else None
        if len(name) == 2 and word.startswith(name) and not word.startswith("--"):
            return word[2:] or None
    return None


@click.command(cls=SubmitCommand, context_settings={"allow_interspersed_args": False})
@click.option("--gpus", "-G", default=1, show_default=True, type=int, help="GPUs, all on one node")
@click.option("--gpu-type", default=None, help="GPU model or family, e.g. A100")
@click.option("--time", "-t", "time_limit", default=None,
              help="time limit: 30s, 10m, 2h, 1d or HH:MM:SS (default 1h)")
@click.option("--account", "-A", default=None, help="account to charge")
@click.option("--qos", "-q", default=None, help="quality of service: normal or scavenger")
@click.option("--name", "-J", default=None, help="a name for the job (a script's: its file name)")
@click.option("--workdir", "-D", default=None, help="directory to run in (default: here)")
@click.option("--output", "-o", default=None,
              help="output file, %j = job id (default: labq-%j.out in the work directory)")
@click.option("--error", "-e", default=None, help="stderr apart from the output, to this file")
@click.option("--env", "env_pairs", multiple=True,
              help="NAME=value for the job, over what --export sends (repeatable)")
@click.option("--export", "export", default=None,
              help="your environment for the job: ALL, NONE, or NAME[,NAME=value...] "
                   "(default ALL; with --as, NONE)")
@click.option("--array", "-a", default=None,
              help="a job array, as Slurm's: 0-99, 1,3,5-7, 0-20:2, 0-99%8 (8 at a time)")
@click.option("--dependency", "-d", default=None,
              help="start after other jobs, as Slurm's: afterok:12:13, afterany:14, singleton")
@click.option("--requeue/--no-requeue", default=False,
              help="requeue instead of failing if the node is lost")
@click.option("--hold", "-H", is_flag=True, help="submit held: `labq release ID` lets it run")
@click.option("--wait", "-W", "wait_end", is_flag=True,
              help="wait until the job ends, and exit with its exit code")
@click.option("--parsable", is_flag=True, help="print only the job id (labq always does)")
@click.option("--as", "as_user", default=None, help="admins: submit for this user")
@click.option("--json", "as_json", is_flag=True, help="print the job record(s) as JSON")
@click.argument("command", nargs=-1, type=click.UNPROCESSED,
                metavar="SCRIPT [ARGS]... | -- COMMAND...")
@click.pass_context
def submit(ctx: click.Context, **params: Any) -> None:
    """Queue a batch SCRIPT, or a COMMAND; prints the new job id.

    \b
    labq submit [OPTIONS] SCRIPT [ARGS...]     a file whose first line is #!...: its text is
                                               kept at submit; its #LABQ and #SBATCH lines
                                               are options (the command line's count over them)
    labq submit [OPTIONS] -- COMMAND [ARGS...] run as given (one word: a shell line)

    Example: labq submit --gpus 2 -- python train.py --lr 3e-4
    """
    command: tuple[str, ...] = params["command"]
    if not command:
        raise usage_error("empty command: give a batch script or the command after `--`, "
                          "e.g. labq submit -- python train.py")
    values = dict(params)
    script = _script_of(command[0])
    if script is not None:
        words, warnings = _directives(script, command[0])
        for warning in warnings:
            click.echo(f"labq: warning: {warning}", err=True)
        if words:
            values = _merged(ctx, words, command[0])
    _submit(values, command, script)


def submit_options() -> dict[str, bool]:
    """`labq submit`'s option strings, each with whether it takes a value."""
    options: dict[str, bool] = {}
    for param in submit.params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                options[name] = not param.is_flag
    return options


def _script_of(word: str) -> str | None:
    """The text of batch script `word` (a file, relative to here or a path, whose first line
    starts with `#!`), or None when the words are a command. A file with directives but no
    `#!` line, one too large, or one that is not UTF-8 text, is refused."""
    try:
        info = os.stat(word)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    # Directives are read only for a script (the table costs milliseconds at import).
    from scheduler.cli.directives import MAX_SCRIPT_BYTES, has_directives, script_problem

    try:
        with open(word, "rb") as handle:
            data = handle.read(MAX_SCRIPT_BYTES + 1)
    except OSError:
        return None  # not readable here: a program to run, not a script to read
    if not data.startswith(b"#!"):
        if b"\0" not in data[:4096] and has_directives(data.decode("utf-8", "replace")):
            fail(f"{word}: has #LABQ or #SBATCH lines but is no batch script: the first line "
                 "must start with #! followed by the path to an interpreter (e.g. #!/bin/bash)")
        return None
    if len(data) > MAX_SCRIPT_BYTES:
        fail(f"{word} is {info.st_size:,} bytes: a batch script may have at most "
             f"{MAX_SCRIPT_BYTES:,} (256 KiB); keep data in other files")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{word}: a batch script must be UTF-8 text (byte {exc.start} is not)")
    problem = script_problem(text)
    if problem:
        fail(f"{word}: {problem}")
    return text


def _directives(text: str, path: str) -> tuple[list[str], list[str]]:
    from scheduler.cli.directives import DirectiveError, parse_directives

    try:
        return parse_directives(text, path, submit_options())
    except DirectiveError as exc:
        raise usage_error(str(exc)) from None


def _merged(ctx: click.Context, words: list[str], path: str) -> dict[str, Any]:
    """The options of the command line over those of the script's directives (`words`);
    repeatable ones (--env) are both, the directives' first."""
    assert ctx.command is not None
    try:
        directive_ctx = ctx.command.make_context(ctx.info_name or "submit", list(words),
                                                 parent=ctx.parent)
    except click.UsageError as exc:
        message = exc.bare if isinstance(exc, OneLineUsageError) else exc.format_message()
        raise usage_error(f"{path}: its directives: {message}") from None
    given = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)
    values: dict[str, Any] = {}
    for param in ctx.command.params:
        name = param.name
        if name is None:
            continue
        ours, theirs = ctx.params.get(name), directive_ctx.params.get(name)
        typed = ctx.get_parameter_source(name) not in given
        in_script = directive_ctx.get_parameter_source(name) not in given
        if param.multiple:
            values[name] = (*(theirs or ()), *(ours or ())) if in_script else ours
        else:
            values[name] = theirs if in_script and not typed else ours
    return values


def _parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise usage_error(f"--env {pair!r}: write it as NAME=value")
        reason = jobenv.why_not(key)
        if reason:
            shown = key if len(key) <= 64 else key[:64] + "..."
            raise usage_error(f"--env {shown}: {reason}; leave it out")
        env[key] = value
    return env


def _job_env(export: str, pairs: tuple[str, ...]) -> dict[str, str]:
    """The submitting environment as `--export` says, then `--env` over it."""
    skipped: list[str] = []
    try:
        env = jobenv.exported(os.environ, export, skipped)
    except jobenv.ExportError as exc:
        raise usage_error(str(exc)) from None
    if skipped:
        click.echo(f"labq: warning: not sent with the job (their values are not UTF-8 text): "
                   f"{', '.join(sorted(skipped))}", err=True)
    env.update(_parse_env(pairs))
    return env


def _check_dir(path: str, what: str, writable: bool) -> None:
    if not os.path.exists(path):
        fail(f"{what} {path} does not exist: make it first (labq makes no folders)")
    if not os.path.isdir(path):
        fail(f"{what} {path} is not a directory")
    if writable and not os.access(path, os.W_OK | os.X_OK):
        fail(f"{what} {path}: you may not write there, and the job runs as you: choose a "
             "directory of yours (--workdir/-D, --output/-o, --error/-e)")


def _check_paths(workdir: str, given: bool, output: str | None, error: str | None,
                 as_user: str | None) -> None:
    """What the job needs of the file system, checked as the submitting user. With --as,
    whether the other user may write there is not checked (only that it exists)."""
    writable = as_user is None
    _check_dir(workdir, "--workdir" if given else "the current directory (the work directory)",
               writable)
    for flag, pattern in (("--output", output), ("--error", error)):
        if not pattern:
            continue
        folder = os.path.dirname(os.path.normpath(os.path.join(workdir, pattern)))
        if "%" not in folder:  # a folder named by the job's id or node is made known only then
            _check_dir(folder, f"{flag} {pattern}: the folder", writable)


def _submit(values: Mapping[str, Any], command: tuple[str, ...], script: str | None) -> None:
    as_user = values["as_user"] or None
    # An admin's environment (tokens, keys) is not handed to another user's job unasked.
    export = values["export"] or ("NONE" if as_user else "ALL")
    env = _job_env(export, values["env_pairs"])
    if as_user == "root" or (as_user is None and os.geteuid() == 0):
        fail("labq never runs a job as root: submit as the user the job should run as "
             "(admins: --as USER)")
    try:
        here = os.getcwd()
    except FileNotFoundError:
        fail("the current directory no longer exists: cd somewhere else")
    workdir = os.path.abspath(values["workdir"]) if values["workdir"] else here
    _check_paths(workdir, bool(values["workdir"]), values["output"], values["error"], as_user)
    array = values["array"]
    if array is not None and array.strip().isdigit():
        click.echo(f"labq: warning: --array {array} is one task, index {array} (Slurm's "
                   f"meaning); for {array} tasks write --array 0-{int(array) - 1}", err=True)
    name = values["name"]
    if script is not None and not name:
        name = os.path.basename(command[0])
    body = SubmitRequest(
        command=list(command[1:] if script is not None else command), gpus=values["gpus"],
        gpu_type=values["gpu_type"], time=values["time_limit"], account=values["account"],
        qos=values["qos"], name=name, workdir=workdir, output=values["output"],
        env=env, array=array, requeue=values["requeue"], error=values["error"],
        script=script, submit_dir=here, dependency=values["dependency"], hold=values["hold"],
        as_user=as_user, token=uuid.uuid4().hex, return_jobs=values["as_json"],
    ).to_json()
    api = client()
    try:
        result = api.request("POST", "/v1/jobs", body)
    except ClientError as exc:
        message = str(exc)
        if "max_env_bytes" in message and "--export" not in message:
            message += ("; your environment is sent with the job (--export ALL): send less "
                        "with --export NONE or --export NAME,...")
        fail(message)
    for warning in result.get("warnings", []):
        click.echo(f"labq: warning: {warning}", err=True)
    if values["as_json"]:
        jobs = result["jobs"]
        print_json(jobs[0] if len(jobs) == 1 else jobs)
    else:
        click.echo("\n".join(result["ids"]))
    if values["wait_end"]:
        sys.stdout.flush()
        sys.exit(wait_jobs(api, list(result["ids"])))


# ---------------------------------------------------------------------------- wait


def exit_status(job: Mapping[str, Any]) -> int:
    """The exit status `labq wait` gives for an ended job: its exit code (a signal's as the
    shell shows it, 128 + N), and 1 for one that did not succeed yet has no failing code."""
    code = job.get("exit_code")
    if job.get("state") == "SUCCEEDED":
        return _status(code) if code else 0
    return _status(code) if code else 1


def _status(code: int) -> int:
    return min(128 - code if code < 0 else code, 255)


def wait_jobs(api: Client, job_ids: list[str], poll_s: float = 0.25, most_s: float = 5.0
              ) -> int:
    """Wait until every job has ended; the highest exit status among them. A job that did
    not succeed is named on stderr; stdout stays clean."""
    waiting = list(dict.fromkeys(job_ids))
    worst = 0
    delay = poll_s
    while waiting:
        for job_id in list(waiting):
            try:
                job = api.request("GET", f"/v1/jobs/{job_id}")
            except ClientError as exc:
                fail(str(exc))
            if job["state"] not in TERMINAL:
                continue
            waiting.remove(job_id)
            status = exit_status(job)
            if status:
                code = job.get("exit_code")
                said = "" if code is None else f", exit code {code}"
                click.echo(f"labq: job {job_id} {job['state']}{said}", err=True)
            worst = max(worst, status)
        if waiting:
            time.sleep(delay)
            delay = min(delay * 1.5, most_s)
    return worst


@click.command(cls=LabqCommand)
@click.argument("job_ids", nargs=-1, required=True)
def wait(job_ids: tuple[str, ...]) -> None:
    """Wait until jobs end; exit with the job's exit code (of several: the highest; 1 for one
    that did not succeed without a code). Like sbatch --wait, for jobs already queued."""
    sys.exit(wait_jobs(client(), list(job_ids)))


# ---------------------------------------------------------------------------- cancel


_STATE_CODES = {"PD": "PENDING", "R": "RUNNING", "CF": "STARTING", "S": "HELD", "H": "HELD",
                "PR": "PREEMPTED"}
_LIVE_STATES = ("PENDING", "HELD", "STARTING", "RUNNING", "PREEMPTED")


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
        rows: list[dict[str, Any]] = api.request("GET", f"/v1/jobs?{query}")
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
    failed = False
    stopping: list[str] = []
    for job_id in targets:
        try:
            result = api.request("POST", f"/v1/jobs/{job_id}/cancel", {})
        except ClientError as exc:
            click.echo(f"labq: error: {exc}", err=True)
            failed = True
            continue
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
    if failed:
        sys.exit(1)


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
    api = client()
    failed = False
    for job_id in job_ids:
        try:
            result = api.request("POST", f"/v1/jobs/{job_id}/requeue", {})
        except ClientError as exc:
            click.echo(f"labq: error: {exc}", err=True)
            failed = True
            continue
        said = str(result.get("result", "")).lower().replace("_", " ")
        click.echo(f"job {result.get('id', job_id)} {said or 'requeued'}")
    if failed:
        sys.exit(1)


JOB_COMMANDS = (submit, cancel, hold, release, wait, update, requeue)
