"""What the coordinator and a node agent say to each other about one job attempt.

The coordinator never starts or signals a process. It writes, in fenced store scripts:
  - a start record (`StartRecord`) in `{p}node:{name}:runs` when it allocates GPUs,
  - a stop request in `{p}node:{name}:stops` (cancel, time limit, preemption, idle GPUs),
and removes both when the job ends or is requeued. The node's agent converges on them and
reports each attempt it runs as a `RunStatus` in `{p}node:{name}:status`. Standard library
only: the CLI and the coordinator import this without the agent's code.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from scheduler.model import Job

# RunStatus.phase
STARTING = "STARTING"  # the runner is preparing the job
RUNNING = "RUNNING"  # the job's process runs (exec succeeded at started_at)
EXITED = "EXITED"  # it ran and ended (exit_code); `stopped`: labq's runner stopped it
FAILED = "FAILED"  # it never started: `message` says why (no such user, bad work directory)
PHASES = (STARTING, RUNNING, EXITED, FAILED)

DEFAULT_OUTPUT = "labq-%j.out"


def output_path(job: Job) -> str:
    """The job's output file: `--output` (default `labq-%j.out`, Slurm's `slurm-%j.out`) with
    `%j` as the job id and `%u` as the user, relative to the work directory."""
    pattern = job.output or DEFAULT_OUTPUT
    path = pattern.replace("%j", job.id).replace("%u", job.user)
    return os.path.normpath(os.path.join(job.workdir, path))


@dataclass(frozen=True)
class StartRecord:
    """Everything the agent needs to run one attempt of a job."""

    id: str
    attempt: int
    user: str
    command: list[str]
    workdir: str
    env: dict[str, str]
    gpu_indices: list[int]
    output: str
    time_limit_s: int

    @property
    def key(self) -> str:
        """`<job id>.<attempt>`: a requeued job's next attempt is a different run."""
        return f"{self.id}.{self.attempt}"

    @classmethod
    def for_job(cls, job: Job, indices: list[int]) -> StartRecord:
        return cls(job.id, job.restarts, job.user, list(job.command), job.workdir,
                   dict(job.env), list(indices), output_path(job), job.time_limit_s)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StartRecord:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class RunStatus:
    """What the agent saw of one attempt."""

    attempt: int
    phase: str
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    stopped: bool = False  # the runner stopped the job (a stop request, or the node shut down)
    message: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    lost: bool = False  # the runner died under the job (the agent killed what was left)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunStatus:
        data: dict[str, Any] = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def ended(self) -> bool:
        return self.phase in (EXITED, FAILED)
