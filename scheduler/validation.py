"""Turn what a client sent into a JobSpec, or say exactly what is wrong and how to fix it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from scheduler.config import Settings, gpu_family, gpu_type_matches
from scheduler.model import JobSpec, Node
from scheduler.timeparse import TimeLimitError, format_duration, parse_duration

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_ENV = ("CUDA_VISIBLE_DEVICES", "LABQ_JOB_ID", "LABQ_NODE", "LABQ_USER")
MAX_ARRAY = 10_000


class InputError(ValueError):
    """A request that cannot be accepted; the message says what was wrong and what to do."""


def build_spec(
    body: dict[str, Any], user: str, nodes: Sequence[Node], settings: Settings
) -> JobSpec:
    command = body.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise InputError(
            "empty command: give the command after `--`, e.g. labq submit -- python train.py"
        )
    if not command[0].strip():
        raise InputError("empty command: the first word of the command is blank")
    gpus = _int(body.get("gpus", 1), "--gpus")
    if gpus < 1:
        raise InputError(f"--gpus {gpus}: a job needs at least 1 GPU")
    gpu_type = body.get("gpu_type") or None
    if gpu_type is not None and not isinstance(gpu_type, str):
        raise InputError("--gpu-type must be a name such as A100")
    _check_fits(gpus, gpu_type, nodes)
    time_text = body.get("time")
    try:
        limit = parse_duration(str(time_text)) if time_text else settings.default_time_limit_s
    except TimeLimitError as exc:
        raise InputError(str(exc)) from exc
    if limit > settings.max_time_limit_s:
        raise InputError(f"--time {time_text}: longer than the cluster's maximum of "
                         f"{format_duration(settings.max_time_limit_s)}")
    qos = body.get("qos") or "normal"
    if qos not in settings.qos_names:
        raise InputError(f"unknown --qos {qos!r}: choose one of {', '.join(settings.qos_names)}")
    account = body.get("account") or settings.default_account
    if not _NAME.match(str(account)):
        raise InputError(f"bad --account {account!r}: use letters, digits, '_', '.', '-'")
    name = body.get("name") or ""
    if not isinstance(name, str):
        raise InputError("--name must be text")
    if len(name) > 128 or "\n" in name:
        raise InputError("--name must be one line of at most 128 characters")
    workdir = str(body.get("workdir") or "/")
    if not workdir.startswith("/"):
        raise InputError(f"--workdir {workdir!r} must be an absolute path")
    env = body.get("env") or {}
    if not isinstance(env, dict):
        raise InputError("--env must be given as K=V")
    for key, value in env.items():
        if not _ENV_KEY.match(str(key)) or not isinstance(value, str):
            raise InputError(f"bad --env {key!r}: use NAME=value with NAME like MY_VAR")
        if key in _RESERVED_ENV:
            raise InputError(f"--env {key} is set by labq for every job; leave it out")
    return JobSpec(
        user=user, account=str(account), command=list(command), gpus=gpus, gpu_type=gpu_type,
        time_limit_s=limit, qos=qos, name=name, workdir=workdir, env=dict(env),
        requeue=_flag(body.get("requeue"), "--requeue"), submitter=user,
    )


def array_size(body: dict[str, Any]) -> int:
    count = _int(body.get("array", 1), "--array")
    if not 1 <= count <= MAX_ARRAY:
        raise InputError(f"--array {count}: give a count from 1 to {MAX_ARRAY}")
    return count


def check_user_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(f"bad user name {name!r}: use letters, digits, '_', '.', '-'")
    return name


def _check_fits(gpus: int, gpu_type: str | None, nodes: Sequence[Node]) -> None:
    if not nodes:
        raise InputError("no GPU node has registered yet: wait for the agents (see `labq nodes`)")
    if gpu_type is not None:
        typed = [n for n in nodes if gpu_type_matches(gpu_type, n.gpu_model)]
        if not typed:
            known = sorted({gpu_family(n.gpu_model) for n in nodes} | {n.gpu_model for n in nodes})
            raise InputError(
                f"unknown --gpu-type {gpu_type!r}: this cluster has {', '.join(known)}"
            )
        nodes = typed
    most = max(n.gpus_total for n in nodes)
    if gpus > most:
        kind = f" of type {gpu_type}" if gpu_type else ""
        raise InputError(f"--gpus {gpus}: the largest node{kind} has {most} GPUs; "
                         f"a job's GPUs must all be on one node")


def _flag(value: Any, flag: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise InputError(f"{flag} must be true or false")


def _int(value: Any, flag: str) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise InputError(f"{flag} {value!r} must be a whole number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{flag} {value!r} must be a whole number") from None
