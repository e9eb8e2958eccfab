"""Turn what a client sent into a JobSpec, or say exactly what is wrong and how to fix it.

Every limit is checked here, before anything is written, and refused with one line that names
the limit (`Settings.max_*`): a request is either stored whole or not at all.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from scheduler.config import Settings
from scheduler.jobenv import why_not
from scheduler.model import JobSpec, Node
from scheduler.notifyspec import NotifyError, parse_notify
from scheduler.policy.arrays import ArraySpec, ArraySpecError, parse_array
from scheduler.policy.dependency import Dependency, DependencyError, parse_dependency
from scheduler.resources import Demand, SizeError, parse_mem
from scheduler.server.fits import (
    DoesNotFit,
    NodeShape,
    check_demand_fits,
    check_fits,
    node_shapes,
)
from scheduler.server.identity import known_uid
from scheduler.timeparse import TimeLimitError, format_duration, parse_duration
from scheduler.wire import MAX_NAME, MAX_TOKEN, SubmitRequest

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Control, formatting (bidi overrides, zero-width), line and paragraph separators, and lone
# surrogates: nothing a name or a path needs, and what terminal tricks and spoofing are made of.
_UNPRINTABLE = ("Cc", "Cf", "Zl", "Zp", "Cs")
_UNGIVABLE = re.compile("[\0\ud800-\udfff]")  # NUL and lone surrogates
MAX_PATH = 4096
MAX_SHORT = 64  # --gpu-type, --time, --qos


class InputError(ValueError):
    """A request that cannot be accepted; the message says what was wrong and what to do."""


def unprintable(text: str) -> str | None:
    """The first control or formatting character in `text`, as `U+XXXX`, or None."""
    if text.isprintable():  # none of _UNPRINTABLE's categories (it refuses a few more)
        return None
    for char in text:
        if unicodedata.category(char) in _UNPRINTABLE:
            return f"U+{ord(char):04X}"
    return None


def check_text(value: Any, flag: str, limit: int, *, one_line: bool = True) -> str:
    """A string of at most `limit` characters; with `one_line`, no control or formatting
    characters (without it, only NUL and lone surrogates, which no process can be given)."""
    if not isinstance(value, str):
        raise InputError(f"{flag} must be text")
    if len(value) > limit:
        raise InputError(f"{flag} must be at most {limit:,} characters: it has {len(value):,}")
    if one_line:
        bad = unprintable(value)
        if bad:
            raise InputError(f"{flag} must be one line of printable characters: it has the "
                             f"control or formatting character {bad}")
        return value
    found = _UNGIVABLE.search(value)
    if found:
        raise InputError(f"{flag} has the character U+{ord(found.group()):04X}, which no "
                         "program can be given")
    return value


def _size(values: Sequence[str]) -> int:
    return sum(len(v.encode("utf-8", "surrogatepass")) + 1 for v in values)


def check_script(value: Any, settings: Settings) -> str:
    """A batch script's text: what the kernel can run (`#!` first), within the size limit."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise InputError("the batch script must be text")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > settings.max_script_bytes:
        raise InputError(f"the batch script is {size:,} bytes: the limit is "
                         f"{settings.max_script_bytes:,} (max_script_bytes)")
    if not value.startswith("#!"):
        raise InputError("the batch script's first line must start with #! and the path to "
                         "an interpreter, e.g. #!/bin/bash")
    check_text(value, "the batch script", settings.max_script_bytes, one_line=False)
    return value


def submit_request(body: SubmitRequest | Mapping[str, Any]) -> SubmitRequest:
    """A submit's JSON body parsed into the wire type (a `SubmitRequest` stays as it is)."""
    return body if isinstance(body, SubmitRequest) else SubmitRequest.from_json(body)


def build_spec(
    body: SubmitRequest | Mapping[str, Any], user: str,
    nodes: Sequence[Node] | Sequence[NodeShape],
    settings: Settings,
) -> JobSpec:
    """The JobSpec of a submit (`wire.SubmitRequest`, or its JSON body), every field checked;
    InputError, one line, for the first that will not do. `nodes`: the cluster's nodes, or
    their shapes (`node_shapes`: what an API keeps, so a submit need not walk every node)."""
    if user == "root":
        raise InputError("labq never runs a job as root: submit as the user the job should run "
                         "as (root: --as USER)")
    request = submit_request(body)
    script = check_script(request.script, settings)
    command: Any = request.command
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command) or (
            not command and not script):
        raise InputError(
            "empty command: give the command after `--`, e.g. labq submit -- python train.py"
        )
    if command and not script and not command[0].strip():
        raise InputError("empty command: the first word of the command is blank")
    size = _size(command)
    if size > settings.max_command_bytes:
        raise InputError(f"the command is {size:,} bytes: the limit is "
                         f"{settings.max_command_bytes:,} (max_command_bytes); put long input "
                         "in a file")
    for word in command:
        check_text(word, "the command", settings.max_command_bytes, one_line=False)
    gpus = _int(request.gpus, "--gpus")
    if gpus < 1:
        raise InputError(f"--gpus {gpus}: a job needs at least 1 GPU")
    node_count = _int(request.nodes, "--nodes")
    if node_count < 1:
        raise InputError(f"--nodes {node_count}: a job runs on at least 1 node")
    gpu_type = request.gpu_type or None
    if gpu_type is not None:
        check_text(gpu_type, "--gpu-type", MAX_SHORT)
    shapes = node_shapes(nodes)
    try:
        check_fits(gpus, gpu_type, shapes, node_count)
    except DoesNotFit as exc:
        raise InputError(str(exc)) from None
    time_text: Any = request.time
    if time_text is not None and (isinstance(time_text, bool)
                                  or not isinstance(time_text, int | str)):
        raise InputError("--time must be text such as 2h or 1-00:00:00")
    if isinstance(time_text, str):
        check_text(time_text, "--time", MAX_SHORT)
    try:
        limit = parse_duration(str(time_text)) if time_text else settings.default_time_limit_s
    except TimeLimitError as exc:
        raise InputError(str(exc)) from exc
    if limit > settings.max_time_limit_s:
        raise InputError(f"--time {time_text}: longer than the cluster's maximum of "
                         f"{format_duration(settings.max_time_limit_s)}")
    qos: Any = request.qos or "normal"
    if not isinstance(qos, str) or qos not in settings.qos_names:
        shown = qos if isinstance(qos, str) and len(qos) <= MAX_SHORT else "given"
        raise InputError(f"unknown --qos {shown!r}: choose one of {', '.join(settings.qos_names)}")
    account = check_account_name(request.account or settings.default_account)
    name = request.name or ""
    check_text(name, "--name", MAX_NAME)
    workdir = request.workdir or "/"
    check_text(workdir, "--workdir", MAX_PATH)
    if not workdir.startswith("/"):
        raise InputError(f"--workdir {workdir!r} must be an absolute path")
    output = request.output or ""
    check_text(output, "--output", MAX_PATH)
    error = request.error or ""
    check_text(error, "--error", MAX_PATH)
    submit_dir = request.submit_dir or ""
    check_text(submit_dir, "the submit directory", MAX_PATH)
    dependency = request.dependency or ""
    if dependency:
        check_text(dependency, "--dependency", MAX_PATH)
        dependency_of(dependency)
    env: Any = request.env or {}
    if not isinstance(env, dict):
        raise InputError("--env must be given as K=V")
    size = _size([*env, *(v for v in env.values() if isinstance(v, str))])
    if size > settings.max_env_bytes:
        raise InputError(f"the job's environment is {size:,} bytes in all: the limit is "
                         f"{settings.max_env_bytes:,} (max_env_bytes); pass less with --export "
                         "NONE or --export NAMES, or put long input in a file")
    for key, value in env.items():
        if not _ENV_KEY.match(key) or not isinstance(value, str):
            shown = key if len(key) <= MAX_SHORT else key[:MAX_SHORT] + "..."
            raise InputError(f"bad --env {shown!r}: use NAME=value with NAME like MY_VAR")
        check_text(value, f"--env {key}", settings.max_env_bytes, one_line=False)
        why = why_not(key)
        if why is not None:
            raise InputError(f"--env {key}: {why}; leave it out")
    demand = demand_of(request, settings)
    try:
        check_demand_fits(demand, gpus, gpu_type, shapes, node_count)
    except DoesNotFit as exc:
        raise InputError(str(exc)) from None
    return JobSpec(
        user=user, account=account, command=list(command), gpus=gpus * node_count,
        nodes=node_count, gpu_type=gpu_type,
        time_limit_s=limit, qos=qos, name=name, workdir=workdir, env=dict(env),
        requeue=flag(request.requeue, "--requeue"), submitter=user, output=output,
        error=error, script=script, submit_dir=submit_dir, dependency=dependency.strip(),
        notify=notify_of(request.notify), cpus=demand.cpus, cpus_per_gpu=demand.cpus_per_gpu,
        mem=demand.mem, mem_per_gpu=demand.mem_per_gpu,
    )


def notify_of(value: Any) -> str:
    """The request's --notify as the canonical event list ("" = none)."""
    if value is None or value == "":
        return ""
    text = check_text(value, "--notify", MAX_SHORT)
    try:
        return parse_notify(text)
    except NotifyError as exc:
        raise InputError(str(exc)) from None


def demand_of(request: SubmitRequest, settings: Settings) -> Demand:
    """The CPUs and memory asked for on each node: one of --cpus / --cpus-per-gpu, one of
    --mem / --mem-per-gpu; what is not asked gets the cluster's default per GPU
    (`[resources]`), whose 0 means the node's share (`scheduler.resources`)."""
    cpus = _count(request.cpus, "--cpus")
    cpus_per_gpu = _count(request.cpus_per_gpu, "--cpus-per-gpu")
    if cpus and cpus_per_gpu:
        raise InputError("give --cpus or --cpus-per-gpu, not both")
    mem = _mem(request.mem, "--mem")
    mem_per_gpu = _mem(request.mem_per_gpu, "--mem-per-gpu")
    if mem and mem_per_gpu:
        raise InputError("give --mem or --mem-per-gpu, not both")
    if not cpus and not cpus_per_gpu:
        cpus_per_gpu = settings.def_cpus_per_gpu
    if not mem and not mem_per_gpu:
        mem_per_gpu = settings.def_mem_per_gpu
    return Demand(cpus, cpus_per_gpu, mem, mem_per_gpu)


def _count(value: Any, flag_name: str) -> int:
    if value is None or value == "":
        return 0
    number = _int(value, flag_name)
    if number < 1:
        raise InputError(f"{flag_name} {number}: give at least 1 CPU")
    return number


def _mem(value: Any, flag_name: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InputError(f"{flag_name} must be a size such as 16G or 512M")
    text = check_text(str(value), flag_name, MAX_SHORT)
    try:
        return parse_mem(text, flag_name)
    except SizeError as exc:
        raise InputError(str(exc)) from None


def array_spec(body: SubmitRequest | Mapping[str, Any], limit: int) -> ArraySpec | None:
    """The request's --array (None: a single job)."""
    text: Any = submit_request(body).array
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise InputError("--array must be text such as 0-99%8")
    check_text(text, "--array", MAX_PATH)
    try:
        return parse_array(text, limit)
    except ArraySpecError as exc:
        raise InputError(str(exc)) from None


def dependency_of(text: str) -> Dependency:
    try:
        return parse_dependency(text)
    except DependencyError as exc:
        raise InputError(str(exc)) from None


def check_token(value: Any) -> str | None:
    """A client's idempotency token (None: none given)."""
    if value is None or value == "":
        return None
    return check_text(value, "token", MAX_TOKEN)


def check_job_user(user: str, settings: Settings) -> None:
    """A job may run as `user`: a known user, not root, no system uid (below min_job_uid,
    default UID_MIN of /etc/login.defs), not in job_user_deny. The node's runner checks the
    same again."""
    uid = known_uid(user)
    if uid is None:
        raise InputError(f"no user {user!r} on the coordinator's host: jobs run as known "
                         "users only")
    floor = settings.job_uid_floor()
    if uid == 0 or user == "root":
        raise InputError("labq never runs a job as root: submit as the user the job should run "
                         "as (root: --as USER)")
    if uid < floor:
        raise InputError(f"labq runs no job as {user}: uid {uid} is a system uid (below "
                         f"min_job_uid {floor})")
    if user in settings.job_user_deny:
        raise InputError(f"labq runs no job as {user}: that user is in job_user_deny")


def check_account_name(name: Any) -> str:
    return _check_name(name, "--account")


def check_user_name(name: Any) -> str:
    return _check_name(name, "user name")


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        shown = name if isinstance(name, str) and len(name) <= MAX_NAME else "given"
        raise InputError(f"bad {what} {shown!r}: use at most 64 letters, digits, '_', '.', "
                         "'-', '@'")
    return name


def flag(value: Any, name: str) -> bool:
    """A JSON boolean (absent: false); "false", 0 or 1 are refused, never read as true."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise InputError(f"{name} must be true or false (a JSON boolean)")


MAX_WHOLE = 10**9  # no count or size labq takes comes near it


def _int(value: Any, flag: str) -> int:
    shown = _shown(value)
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise InputError(f"{flag} {shown} must be a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{flag} {shown} must be a whole number") from None
    if abs(number) > MAX_WHOLE:
        raise InputError(f"{flag} {shown}: too large")
    return number


def _shown(value: Any) -> str:
    """A value as an error shows it: at most 24 characters."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**20 else "(a huge number)"
    return text if len(text) <= 24 else text[:24] + "..."
