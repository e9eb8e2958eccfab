"""The API's wire types, shared by the CLI, the API server, its OpenAPI description and `labq
top`: the submit request and the job record. Standard library only, so the CLI stays fast.

Each field is declared once here, with its JSON type; the OpenAPI schemas are generated from
these declarations (`submit_schema`, `job_schema`), and a test checks that the API serves
exactly these fields. Job states come from `scheduler.model` (standard library only too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypedDict

from scheduler.model import JobState

MAX_NAME = 128
MAX_TOKEN = 128


@dataclass(frozen=True)
class SubmitRequest:
    """POST /v1/jobs. None means "the cluster's default"."""

    command: list[str]
    gpus: int = 1  # on each node
    nodes: int = 1  # --nodes K: `gpus` GPUs on each of K nodes
    gpu_type: str | None = None
    time: str | None = None  # --time as typed: 30s, 2h, 1-12:30, ...
    account: str | None = None
    qos: str | None = None
    name: str | None = None
    workdir: str | None = None
    output: str | None = None  # --output pattern (%j = job id), relative to workdir
    env: dict[str, str] = field(default_factory=dict)
    array: str | None = None  # Slurm's --array: "0-99%8", "1,3,5-7", "0-20:2"
    requeue: bool = False
    error: str | None = None  # --error pattern (stderr apart from the output)
    script: str | None = None  # a batch script's text, captured at submit; `command` = its args
    submit_dir: str | None = None  # where the CLI ran
    dependency: str | None = None  # Slurm's --dependency: afterok:12:13,afterany:14 / ? / singleton
    hold: bool = False  # submit held (like sbatch -H): `labq release` lets it run
    as_user: str | None = None  # admins only
    token: str | None = None  # idempotency: the same token (per user) gives the same ids
    return_jobs: bool = False  # answer with the job records, not just the ids
    notify: str | None = None  # --notify begin,end,fail,timeout,requeue,all (or --mail-type)
    # CPUs and memory on each node (scheduler.resources): one of cpus / cpus_per_gpu, one of
    # mem / mem_per_gpu (sizes as typed: 16G, 512M, a plain number = MiB); None: the default
    cpus: int | None = None
    cpus_per_gpu: int | None = None
    mem: str | None = None
    mem_per_gpu: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SubmitRequest:
        """The request a client sent, as the server reads it: its known fields as sent (others
        ignored), absent ones at their defaults. The values are not checked here: JSON may
        carry anything, and `scheduler.server.validation.build_spec` checks each one, with
        one line saying what to fix, before a `JobSpec` is made of it."""
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in data.items() if k in known}
        given.setdefault("command", None)  # refused by the validation, as an empty command
        return cls(**given)


# The job record as the API serves it: name -> JSON schema. `private` jobs (another user's,
# under private_data) have PRIVATE_FIELDS null.
_STR = {"type": "string"}
_OPT_STR = {"type": ["string", "null"]}
_TIME = {"type": ["number", "null"]}
JOB_FIELDS: dict[str, dict[str, Any]] = {
    "id": _STR, "user": _STR, "account": _STR,
    "state": {"enum": [s.value for s in JobState]},  # the lifecycle is scheduler.model's
    "gpus": {"type": "integer"},  # in all: nodes x the GPUs on each
    "nodes": {"type": "integer"},  # how many nodes it runs on
    "gpu_type": _OPT_STR, "node": _OPT_STR,
    "gpu_indices": {"type": "array", "items": {"type": "integer"}},
    # a multi-node job's nodes and their GPUs, head first: [[node, [indices]], ...]
    "parts": {"type": "array", "items": {"type": "array"}},
    "submitted_at": {"type": "number"}, "started_at": _TIME, "ended_at": _TIME,
    "time_limit_s": {"type": "integer"}, "reason": _STR,
    "reasons": {"type": "array", "items": {"type": "object", "properties": {
        "code": _STR, "detail": _STR}}},
    "exit_code": {"type": ["integer", "null"]}, "name": _STR, "qos": _STR,
    "command": {"type": ["array", "null"], "items": _STR}, "workdir": _OPT_STR,
    "requeue": {"type": "boolean"}, "submitter": _STR, "billed": _TIME,
    "gpu_seconds": _TIME, "restarts": {"type": "integer"}, "stop_request": _STR,
    "est_start": _TIME, "hold": _STR, "output": _OPT_STR, "queued_at": _TIME,
    "env": {"type": ["array", "null"], "items": _STR},  # names only: values may be secrets
    "private": {"type": "boolean"},
    "error": _OPT_STR, "submit_dir": _OPT_STR, "dependency": _STR,
    "array_job": _STR,  # a task of an array: the array's id ("" otherwise)
    "array_task": {"type": ["integer", "null"]},  # its index
    "script": {"type": ["boolean", "null"]},  # a batch script was captured (its text is not served)
    "notify": _STR,  # the events the admin's job_notify_command is run for ("" = none)
    "cpu_seconds": _TIME,  # CPU time its last run used, as its node measured (null: not measured)
    "memory_peak_bytes": {"type": ["integer", "null"]},  # the most memory its last run held
    # CPUs and memory (MiB) asked for on each node, or per GPU (0: not asked; all four 0:
    # its node's share)
    "cpus": {"type": "integer"}, "cpus_per_gpu": {"type": "integer"},
    "mem": {"type": "integer"}, "mem_per_gpu": {"type": "integer"},
}
OPTIONAL_JOB_FIELDS: dict[str, dict[str, Any]] = {
    "run_time_s": {"type": "number"},  # a RUNNING job's time so far
    # GET /v1/jobs: an array's tasks that wait as one line ("17_[4-99%8]"): which indices and
    # its throttle (0: none). Its `id` is the line's id, `array_job` the array's.
    "array_tasks": _STR, "array_throttle": {"type": "integer"},
    # GET /v1/jobs/{id} only: a running job's idle GPUs (null when none, or tracking is off)
    "idle": {"type": ["object", "null"], "properties": {
        "gpus": {"type": "array", "items": {"type": "integer"}}, "idle_for_s": {"type": "number"},
        "threshold": {"type": "number"}, "policy": _STR, "stop_after_s": {"type": "number"},
        "text": _STR}},
}
# What private_data hides of other users' jobs from non-admins (Slurm's PrivateData=jobs,
# usage): what they run, where, with what, and what it cost. Who, what state, which GPUs and
# when stay, so the queue still makes sense.
PRIVATE_FIELDS = ("command", "workdir", "env", "exit_code", "billed", "gpu_seconds", "output",
                  "error", "submit_dir", "script", "cpu_seconds", "memory_peak_bytes")


def submit_schema() -> dict[str, Any]:
    """The OpenAPI (JSON Schema) of SubmitRequest, from its fields."""
    kinds: dict[str, dict[str, Any]] = {
        "command": {"type": "array", "items": _STR},  # a script's arguments may be none
        "gpus": {"type": "integer", "minimum": 1},
        "nodes": {"type": "integer", "minimum": 1},
        "name": {"type": ["string", "null"], "maxLength": MAX_NAME},
        "env": {"type": "object", "additionalProperties": _STR},
        "array": {"type": ["string", "null"], "maxLength": 4096},
        "script": {"type": ["string", "null"]}, "hold": {"type": "boolean"},
        "token": {"type": ["string", "null"], "maxLength": MAX_TOKEN},
        "requeue": {"type": "boolean"}, "return_jobs": {"type": "boolean"},
        "cpus": {"type": ["integer", "null"], "minimum": 1},
        "cpus_per_gpu": {"type": ["integer", "null"], "minimum": 1},
    }
    props = {f.name: kinds.get(f.name, _OPT_STR) for f in fields(SubmitRequest)}
    return {"type": "object", "required": ["command"], "properties": props}


def job_schema() -> dict[str, Any]:
    """The OpenAPI (JSON Schema) of a job record."""
    return {"type": "object", "required": list(JOB_FIELDS),
            "properties": {**JOB_FIELDS, **OPTIONAL_JOB_FIELDS}}


class Reason(TypedDict):
    code: str
    detail: str


class JobJson(TypedDict, total=False):
    """A job record as a client reads it (`labq top`, `--json`): the keys of JOB_FIELDS, typed,
    so a client's reads are checked against what the API serves."""

    id: str
    user: str
    account: str
    state: str
    gpus: int
    nodes: int
    gpu_type: str | None
    node: str | None
    gpu_indices: list[int]
    parts: list[list[Any]]
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    time_limit_s: int
    reason: str
    reasons: list[Reason]
    exit_code: int | None
    name: str
    qos: str
    command: list[str] | None
    workdir: str | None
    requeue: bool
    submitter: str
    billed: float | None
    gpu_seconds: float | None
    restarts: int
    stop_request: str
    est_start: float | None
    hold: str
    output: str | None
    env: list[str] | None
    private: bool
    run_time_s: float
    queued_at: float | None
    idle: dict[str, Any] | None
    error: str | None
    submit_dir: str | None
    dependency: str
    array_job: str
    array_task: int | None
    script: bool | None
    notify: str
    cpu_seconds: float | None
    memory_peak_bytes: int | None
    cpus: int
    cpus_per_gpu: int
    mem: int
    mem_per_gpu: int
    array_tasks: str
    array_throttle: int
