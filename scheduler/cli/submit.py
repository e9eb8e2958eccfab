"""`labq submit` and `labq wait`.

Nothing typed is silently misread: an option `labq submit` does not have is refused before
anything is queued (exit status 2, one line naming it and labq's own option where there is
one); a batch script's #LABQ and #SBATCH lines are read as options (`directives`); the job
gets the submitting environment (`jobenv`).
"""

from __future__ import annotations

import os
import stat
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

import click
from click.core import ParameterSource

from scheduler import jobenv
from scheduler.cli.common import client, fail, print_json
from scheduler.cli.errors import LabqCommand, OneLineUsageError, one_line, usage_error
from scheduler.cli.logtail import TERMINAL
from scheduler.client import Client, ClientError
from scheduler.model import JobState
from scheduler.wire import SubmitRequest

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
            raise one_line(exc, ctx) from None


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
@click.option("--gpus", "-G", default=1, show_default=True, type=int,
              help="GPUs, all on one node (with --nodes: on each node)")
@click.option("--nodes", "-N", default=1, show_default=True, type=int,
              help="run on this many nodes, --gpus GPUs on each")
@click.option("--gpu-type", default=None, help="GPU model or family, e.g. A100")
@click.option("--cpus", "-c", default=None, type=int,
              help="CPUs on each node (default: the cluster's per GPU, else the node's share)")
@click.option("--cpus-per-gpu", default=None, type=int, help="CPUs per GPU (instead of --cpus)")
@click.option("--mem", default=None,
              help="memory on each node: 16G, 512M, a plain number is MiB (default: as CPUs)")
@click.option("--mem-per-gpu", default=None, help="memory per GPU (instead of --mem)")
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
@click.option("--notify", default=None,
              help="tell you of: begin,end,fail,timeout,requeue, all or none (the cluster's "
                   "notify command)")
@click.option("--mail-type", default=None,
              help="Slurm's spelling of --notify: BEGIN,END,FAIL,REQUEUE,TIME_LIMIT,ALL,NONE")
@click.option("--mail-user", default=None, hidden=True,
              help="accepted and ignored: the notify command is told the job's user")
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
        if not pattern or pattern == os.devnull:  # nothing kept: nothing to check
            continue
        folder = os.path.dirname(os.path.normpath(os.path.join(workdir, pattern)))
        if "%" not in folder:  # a folder named by the job's id or node is made known only then
            _check_dir(folder, f"{flag} {pattern}: the folder", writable)


def _submit(values: Mapping[str, Any], command: tuple[str, ...], script: str | None) -> None:
    result, api = post_submit(submit_body(values, command, script))
    if values["as_json"]:
        jobs = result["jobs"]
        print_json(jobs[0] if len(jobs) == 1 else jobs)
    else:
        click.echo("\n".join(result["ids"]))
    if values["wait_end"]:
        sys.stdout.flush()
        sys.exit(wait_jobs(api, list(result["ids"])))


def submit_body(values: Mapping[str, Any], command: tuple[str, ...], script: str | None
                ) -> dict[str, Any]:
    """The API request for `labq submit`'s options (`values`, by parameter name) and command;
    a path or user the job could not use is refused here, in one line."""
    as_user = values["as_user"] or None
    # An admin's environment (tokens, keys) is not handed to another user's job unasked.
    export = values["export"] or ("NONE" if as_user else "ALL")
    env = _job_env(export, values["env_pairs"])
    if as_user == "root" or (as_user is None and os.geteuid() == 0):
        fail("labq never runs a job as root: submit as the user the job should run as "
             "(root: --as USER)")
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
    notify = notify_of(values)
    name = values["name"]
    if script is not None and not name:
        name = os.path.basename(command[0])
    body = SubmitRequest(
        command=list(command[1:] if script is not None else command), gpus=values["gpus"],
        nodes=values["nodes"],
        gpu_type=values["gpu_type"], time=values["time_limit"], account=values["account"],
        qos=values["qos"], name=name, workdir=workdir, output=values["output"],
        env=env, array=array, requeue=values["requeue"], error=values["error"],
        script=script, submit_dir=here, dependency=values["dependency"], hold=values["hold"],
        as_user=as_user, token=uuid.uuid4().hex, return_jobs=bool(values.get("as_json")),
        notify=notify, cpus=values.get("cpus"), cpus_per_gpu=values.get("cpus_per_gpu"),
        mem=_mem(values.get("mem"), "--mem"),
        mem_per_gpu=_mem(values.get("mem_per_gpu"), "--mem-per-gpu"),
    ).to_json()
    return body


def _mem(text: str | None, flag: str) -> str | None:
    """A memory size, checked here so a typo is one line before anything is sent."""
    if text is None:
        return None
    from scheduler.resources import SizeError, parse_mem

    try:
        parse_mem(text, flag)
    except SizeError as exc:
        raise usage_error(str(exc)) from None
    return text


def notify_of(values: Mapping[str, Any]) -> str | None:
    """--notify (or Slurm's --mail-type, read as labq's events) as sent; notes on stderr for
    what labq accepts and ignores (Slurm's types with no labq event, --mail-user)."""
    from scheduler.notifyspec import NotifyError, from_mail_type, parse_notify

    notify, mail_type = values.get("notify"), values.get("mail_type")
    if values.get("mail_user"):
        click.echo("labq: note: --mail-user is ignored: the cluster's notify command is told "
                   "the job's user", err=True)
    try:
        if notify is not None:
            return parse_notify(notify)
        if mail_type is None:
            return None
        events, ignored = from_mail_type(mail_type)
        if ignored:
            click.echo(f"labq: note: --mail-type {','.join(ignored)}: labq has no such "
                       "event; ignored", err=True)
        return parse_notify(events, "--mail-type")
    except NotifyError as exc:
        raise usage_error(str(exc)) from None


def post_submit(body: dict[str, Any]) -> tuple[dict[str, Any], Client]:
    """POST the request; the API's answer (its warnings shown) and the client used."""
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
    return result, api


# ---------------------------------------------------------------------------- wait


def exit_status(job: Mapping[str, Any]) -> int:
    """The exit status `labq wait` gives for an ended job: its exit code (a signal's as the
    shell shows it, 128 + N), and 1 for one that did not succeed yet has no failing code."""
    code = job.get("exit_code")
    if job.get("state") == JobState.SUCCEEDED:
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
