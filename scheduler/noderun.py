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
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from scheduler.model import Job
from scheduler.resources import Demand

# RunStatus.phase
STARTING = "STARTING"  # the runner is preparing the job
RUNNING = "RUNNING"  # the job's process runs (exec succeeded at started_at)
EXITED = "EXITED"  # it ran and ended (exit_code); `stopped`: labq's runner stopped it
FAILED = "FAILED"  # it never started: `message` says why (no such user, bad work directory)
PHASES = (STARTING, RUNNING, EXITED, FAILED)

DEFAULT_OUTPUT = "labq-%j.out"


_PATTERN = re.compile(r"%(\d{0,2})([jxuAaN%])")


def expand_pattern(pattern: str, job: Job) -> str:
    """Slurm's filename pattern: `%j` job id, `%x` name, `%u` user, `%A` array id (the job id
    outside an array), `%a` task index (0 outside an array), `%N` node (kept as `%N` while
    the job has none), `%%` a `%`; a width as in `%3a` pads numbers with zeros."""
    def one(match: re.Match[str]) -> str:
        width, letter = match.group(1), match.group(2)
        value = {
            "j": job.id, "x": job.name or "labq", "u": job.user,
            "A": job.array_job or job.id,
            "a": "0" if job.array_task is None else str(job.array_task),
            "N": (job.node or "%N").split(".")[0], "%": "%",
        }[letter]
        return value.zfill(int(width)) if width and letter in "jAa" else value

    return _PATTERN.sub(one, pattern)


def output_path(job: Job) -> str:
    """The job's output file: `--output` (default `labq-%j.out`, Slurm's `slurm-%j.out`) with
    its patterns expanded (`expand_pattern`), relative to the work directory."""
    path = expand_pattern(job.output or DEFAULT_OUTPUT, job)
    return os.path.normpath(os.path.join(job.workdir, path))


def error_path(job: Job) -> str:
    """The job's stderr file (`--error`), or "" when stderr goes with the output."""
    if not job.error:
        return ""
    return os.path.normpath(os.path.join(job.workdir, expand_pattern(job.error, job)))


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
    error: str = ""  # absolute stderr path; "" = stderr goes to `output`
    script: str = ""  # a batch script: written to a file of the job's and run with `command`
    name: str = ""
    account: str = ""
    submit_dir: str = ""
    array_job: str = ""
    array_task: int | None = None
    # A multi-node job: this node's rank (0: the head node, which runs the command; the
    # others hold their GPUs), and every node's host name and labq name, by rank.
    rank: int = 0
    hosts: list[str] = field(default_factory=list)
    node_names: list[str] = field(default_factory=list)
    # Its Ray across the nodes: the head's port on the head node, and the job's token
    # (the same on every node; only agents read start records).
    ray_port: int = 0
    ray_token: str = ""
    # Its CPUs and memory as asked, per node (scheduler.resources; all 0: the node's share).
    cpus: int = 0
    cpus_per_gpu: int = 0
    mem: int = 0
    mem_per_gpu: int = 0

    @property
    def demand(self) -> Demand:
        return Demand(self.cpus, self.cpus_per_gpu, self.mem, self.mem_per_gpu)

    @property
    def key(self) -> str:
        """`<job id>.<attempt>`: a requeued job's next attempt is a different run."""
        return f"{self.id}.{self.attempt}"

    @classmethod
    def for_job(cls, job: Job, indices: list[int], rank: int = 0,
                hosts: list[str] | None = None,
                node_names: list[str] | None = None, ray_port: int = 0,
                ray_token: str = "") -> StartRecord:
        return cls(job.id, job.restarts, job.user, list(job.command), job.workdir,
                   dict(job.env), list(indices), output_path(job), job.time_limit_s,
                   error=error_path(job), script=job.script, name=job.name,
                   account=job.account, submit_dir=job.submit_dir, array_job=job.array_job,
                   array_task=job.array_task, rank=rank, hosts=list(hosts or []),
                   node_names=list(node_names or []), ray_port=ray_port, ray_token=ray_token,
                   cpus=job.cpus, cpus_per_gpu=job.cpus_per_gpu, mem=job.mem,
                   mem_per_gpu=job.mem_per_gpu)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StartRecord:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


STATE_FILE = "state.json"  # in the attempt's RUNDIR on the node: its runner's RunStatus
_RUNNER_ONLY = ("runner_pid", "runner_start")  # never reported: they mean nothing elsewhere


@dataclass
class RunStatus:
    """One attempt of a job on a node: the one run-state type. Its runner keeps it in
    RUNDIR/state.json (written atomically; `write`, `read`), with its own pid; the agent
    reports it to the coordinator without them (`to_json`, `reported`). `phase`: STARTING,
    RUNNING, EXITED (the job ran and ended) or FAILED (it never started: `message` says
    why)."""

    attempt: int = 0
    phase: str = STARTING
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None  # 128 + signal number when a signal ended it, as a shell says
    signal: int | None = None
    # the runner stopped the job: the agent asked (a stop request, the node shut down), or
    # stopped it by a policy of its own (`message` says why)
    stopped: bool = False
    message: str = ""
    usage: dict[str, int] = field(default_factory=dict)  # cgroup accounting, where available
    lost: bool = False  # the runner died under the job (the agent killed what was left)
    runner_pid: int = 0  # the runner's, on its node (state.json only)
    runner_start: int = 0  # the runner's start time (/proc/<pid>/stat): pid + this = it

    @property
    def ended(self) -> bool:
        return self.phase in (EXITED, FAILED)

    @property
    def stop(self) -> str:
        """How it was stopped, in words: "lost", "requested" (or by the agent's policy), ""."""
        return "lost" if self.lost else "requested" if self.stopped else ""

    def reported(self, attempt: int) -> RunStatus:
        """As the agent reports it: attempt `attempt`, without the runner's own fields."""
        return replace(self, attempt=attempt, runner_pid=0, runner_start=0)

    def to_json(self) -> str:
        """The report (the node's status hash): without the runner's own fields."""
        data = {k: v for k, v in asdict(self).items() if k not in _RUNNER_ONLY}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunStatus:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunStatus:
        """A report or a state.json, of this labq or an older one: a runner before the one
        run-state type wrote `stop` ("requested", "policy", "lost") for `stopped` and `lost`;
        a field not known here is ignored."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        how = data.get("stop")
        if isinstance(how, str) and how:
            known.setdefault("stopped", True)
            known.setdefault("lost", how == "lost")
        return cls(**known)

    def write(self, rundir: Path) -> None:
        """RUNDIR/state.json, atomically (the runner's, and the agent's when a runner died)."""
        tmp = rundir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, rundir / STATE_FILE)

    @classmethod
    def read(cls, rundir: Path) -> RunStatus | None:
        try:
            return cls.from_dict(json.loads((rundir / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError, AttributeError):
            return None
