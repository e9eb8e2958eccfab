"""The records labq keeps: jobs, nodes and GPUs, and the job state machine."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from scheduler.resources import Demand


class JobState(StrEnum):
    """Where a job is in its life. The lifecycle is declared once, below (`TRANSITIONS`); the
    store's Lua scripts get the same sets from `lua_lifecycle()` and a test runs every script
    from every state to check they make no other move."""

    PENDING = "PENDING"
    HELD = "HELD"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    PREEMPTED = "PREEMPTED"

    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    def holds_gpus(self) -> bool:
        """STARTING, RUNNING, or PREEMPTED: being stopped, its GPUs not given back yet."""
        return self in GPU_HOLDING_STATES

    def is_waiting(self) -> bool:
        return self in WAITING_STATES


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}
)
GPU_HOLDING_STATES = frozenset({JobState.STARTING, JobState.RUNNING, JobState.PREEMPTED})
WAITING_STATES = frozenset({JobState.PENDING, JobState.HELD})  # HELD: a budget or a person

# Every move a job can make. STARTING holds GPUs from the allocation on; PREEMPTED is a job
# being stopped to make room, which goes back to PENDING (or ends, if it ended on its own or
# was cancelled meanwhile); a requeue (node lost, --requeue) is GPU-holding -> PENDING.
_ENDS = TERMINAL_STATES
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.HELD, JobState.STARTING, JobState.CANCELLED}),
    JobState.HELD: frozenset({JobState.PENDING, JobState.STARTING, JobState.CANCELLED}),
    JobState.STARTING: frozenset({JobState.RUNNING, JobState.PREEMPTED, JobState.PENDING,
                                  *_ENDS}),
    JobState.RUNNING: frozenset({JobState.PREEMPTED, JobState.PENDING, *_ENDS}),
    JobState.PREEMPTED: frozenset({JobState.PENDING, *_ENDS}),
    **{state: frozenset() for state in TERMINAL_STATES},
}


# The states a job is live in (not ended yet), in the order a person reads them.
LIVE_STATES = (JobState.PENDING, JobState.HELD, JobState.STARTING, JobState.RUNNING,
               JobState.PREEMPTED)


def state_names(states: frozenset[JobState] | tuple[JobState, ...]) -> frozenset[str]:
    """A state set as plain strings, for a client comparing the `state` of a JSON record."""
    return frozenset(s.value for s in states)


class ReasonCode(StrEnum):
    """The reason codes labq itself records when a job ends, is held or is queued again (as
    squeue and sacct show them). Declared once: the store's scripts get them as `REASON.<code>`
    (`lua_lifecycle`), the coordinator and the API compare with these members."""

    CANCELLED = "Cancelled"  # ended by a cancel
    TIME_LIMIT = "TimeLimit"  # ended by its time limit
    NODE_LOST = "NodeLost"  # its node stopped answering: queued again (--requeue) or ended
    PREEMPTED = "Preempted"  # stopped to make room, queued again
    REQUEUED = "Requeued"  # `labq requeue`: stopped and queued again by a person
    IDLE_GPU = "IdleGpu"  # stopped for leaving its GPUs idle
    USER_HOLD = "UserHold"  # its owner holds it
    ADMIN_HOLD = "AdminHold"  # an admin holds it
    RELEASED = "Released"  # let go from a hold
    DEPENDENCY_NEVER_SATISFIED = "DependencyNeverSatisfied"  # cancelled: its dependency failed


class NotifyEvent(StrEnum):
    """What a job's owner may ask to be told of (`--notify`, Slurm's `--mail-type`): the
    admin's `job_notify_command` runs once for each such event of the job."""

    BEGIN = "begin"  # it started
    END = "end"  # it ended, however (Slurm's END: success, failure, cancel, time limit)
    FAIL = "fail"  # it ended FAILED, or was lost with its node
    TIMEOUT = "timeout"  # it reached its time limit
    REQUEUE = "requeue"  # it was queued again (preempted, node lost, `labq requeue`)


class HoldKind(StrEnum):
    """Who holds a job (`Job.hold`; "" while no person does): its owner or an admin."""

    USER = "user"
    ADMIN = "admin"


class ArrayState(StrEnum):
    """A job array's own record's state (its tasks are jobs, with job states)."""

    PENDING = "PENDING"  # indices remain to be made tasks
    SPAWNED = "SPAWNED"  # every index is a task now
    CANCELLED = "CANCELLED"


# The reasons a stop or a requeue counts as an eviction in the persisted metrics.
EVICTION_REASONS = (ReasonCode.IDLE_GPU, ReasonCode.NODE_LOST, ReasonCode.TIME_LIMIT)


def lua_table(name: str, values: tuple[str, ...] | list[str],
              where: str = "scheduler.model") -> str:
    """`local NAME = {v = 'v', ...}` whose unknown keys raise: a script that names a value not
    declared in Python fails loudly instead of comparing with nil."""
    entries = ", ".join(f"{v} = '{v}'" for v in values)
    return (f"local {name} = setmetatable({{{entries}}}, {{__index = function(_, key) "
            f"error('{name}.' .. tostring(key) .. ' is not declared in {where}') end}})")


def lua_lifecycle() -> str:
    """The state sets as Lua, prepended to every store script: `is_terminal(state)`,
    `holds_gpus(state)` and `is_waiting(state)` answer from the same sets as `JobState`;
    `STATE.<name>`, `REASON.<code>`, `HOLD.<kind>`, `NODE.<state>` and `ARRAY_STATE.<state>`
    are the job states, reason codes, hold kinds, node states and array states declared here."""
    def table(name: str, states: frozenset[JobState]) -> str:
        entries = ", ".join(f"{s.value} = true" for s in sorted(states))
        return f"local {name} = {{{entries}}}"

    return "\n".join([
        "-- Generated from scheduler.model (the lifecycle is declared there, once).",
        table("TERMINAL_STATES", TERMINAL_STATES),
        table("GPU_HOLDING_STATES", GPU_HOLDING_STATES),
        table("WAITING_STATES", WAITING_STATES),
        "local function is_terminal(state) return TERMINAL_STATES[state or ''] == true end",
        "local function holds_gpus(state) return GPU_HOLDING_STATES[state or ''] == true end",
        "local function is_waiting(state) return WAITING_STATES[state or ''] == true end",
        lua_table("STATE", [s.value for s in JobState]),
        lua_table("REASON", [r.value for r in ReasonCode]),
        lua_table("HOLD", [h.value for h in HoldKind]),
        lua_table("NODE", [n.value for n in NodeState]),
        lua_table("ARRAY_STATE", [a.value for a in ArrayState]),
        "",
    ])


class NodeState(StrEnum):
    """A node's liveness, from its agent's heartbeats. An admin's drain is apart from it
    (`Node.drained_by`): a drained node's agent still heartbeats, and a drained node shows as
    DRAINING while jobs still run there, DRAINED once none do (`Node.shown_state`)."""

    UP = "UP"
    DOWN = "DOWN"


@dataclass(frozen=True)
class Reason:
    """One reason a job waits: a short code (as squeue shows) and words for a person."""

    code: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


@dataclass(slots=True)  # (slots: a queue of 100,000 jobs is 100,000 of these records)
class JobSpec:
    """What a user asked for; validated by `scheduler.server.validation` before it is stored."""

    user: str
    account: str
    command: list[str]
    gpus: int = 1  # in all: `nodes` x the GPUs on each node
    gpu_type: str | None = None
    time_limit_s: int = 3600
    qos: str = "normal"
    name: str = ""
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    requeue: bool = False
    submitter: str = ""
    output: str = ""  # output file pattern (%j = job id), relative to workdir; "" = labq-%j.out
    error: str = ""  # stderr file pattern ("" = with the output)
    script: str = ""  # a batch script captured at submit (then `command` is its arguments)
    submit_dir: str = ""  # where `labq submit` ran
    dependency: str = ""  # Slurm's --dependency expression, "" = none
    array_job: str = ""  # the array's id, for a task of an array
    array_task: int | None = None  # the task's index in its array
    nodes: int = 1  # the nodes it runs on, each with gpus // nodes of its GPUs
    notify: str = ""  # --notify: the events the admin's job_notify_command runs for, "begin,end"
    # CPUs and memory (MiB) on each of its nodes, or per GPU there; 0 = not asked (all four
    # 0: its node's share; see scheduler.resources)
    cpus: int = 0
    cpus_per_gpu: int = 0
    mem: int = 0
    mem_per_gpu: int = 0

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // max(1, self.nodes)


# What a user asks for: a Job is its JobSpec and more (a subclass), so `Job.spec` and
# `Job.from_spec` copy these by name.
REQUEST_FIELDS = tuple(JobSpec.__dataclass_fields__)

# Job hash fields that hold JSON rather than plain strings.
_JSON_FIELDS = ("command", "env", "gpu_indices", "reasons", "gpu_idle_since", "parts")


@dataclass(kw_only=True, slots=True)
class Job(JobSpec):
    """A job as stored: its request (the `JobSpec` it is, field for field, declared once there)
    and what became of it. Times are Unix seconds; `None` where not reached yet. (`dependency`
    is what is still to be met; `gpus` counts every node's: fair share, caps, budgets and
    charges count these.)"""

    id: str
    state: JobState
    submitted_at: float
    node: str | None = None
    gpu_indices: list[int] = field(default_factory=list)
    started_at: float | None = None
    ended_at: float | None = None
    reason: str = ""
    reasons: list[dict[str, str]] = field(default_factory=list)
    exit_code: int | None = None
    stop_request: str = ""
    charged_until: float | None = None
    billed: float = 0.0
    gpu_seconds: float = 0.0
    restarts: int = 0
    billing_weight: float = 1.0  # of the node's GPU model, fixed when the job starts
    hold: str = ""  # "user" or "admin" while a person holds the job
    est_start: float | None = None  # when a waiting job is expected to start (backfill plan)
    queued_at: float | None = None  # last requeue (None: never requeued, waits since submit)
    stop_reason: str = ""  # why labq stops it, when not the stop_request's own (e.g. IdleGpu)
    # GPU index -> since when its utilization has stayed below the idle threshold (running jobs)
    gpu_idle_since: dict[int, float] = field(default_factory=dict)
    idle_notified: bool = False  # the owner was told its GPUs are idle (this idle spell)
    starting_at: float | None = None  # when its GPUs were allocated (it became STARTING)
    stop_requested_at: float | None = None  # when labq or a person asked it to stop
    # What the node measured of its last run (the job's cgroup), None where it could not:
    cpu_seconds: float | None = None  # CPU time, user + system, of every process of the job
    memory_peak_bytes: int | None = None  # the most memory the job held at once
    # A multi-node job holding GPUs: [[node, [GPU indices]], ...], by rank (the head node,
    # which is `node` with `gpu_indices`, first). Empty for a job of one node.
    parts: list[list[Any]] = field(default_factory=list)

    @property
    def demand(self) -> Demand:  # CPUs and memory as asked, per node (scheduler.resources)
        return Demand(self.cpus, self.cpus_per_gpu, self.mem, self.mem_per_gpu)

    @property
    def node_names(self) -> list[str]:
        """Every node it holds GPUs on, the head node first (none while it waits)."""
        if self.parts:
            return [str(part[0]) for part in self.parts]
        return [self.node] if self.node else []

    @property
    def spec(self) -> JobSpec:
        """What was asked for: the request part of the record, as validated at submit (or
        changed since by `labq update`)."""
        return JobSpec(**{name: getattr(self, name) for name in REQUEST_FIELDS})

    @classmethod
    def from_spec(cls, spec: JobSpec, job_id: str, now: float, **fields: Any) -> Job:
        """A new PENDING job of a validated request, submitted `now`; `fields` set more."""
        request = {name: getattr(spec, name) for name in REQUEST_FIELDS}
        return cls(**{"id": job_id, "state": JobState.PENDING, "submitted_at": now, **request,
                      **fields})

    @property
    def waiting_since(self) -> float:  # start of the current wait: the submit or last requeue
        return self.queued_at if self.queued_at is not None else self.submitted_at

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    def to_fields(self) -> dict[str, str]:
        """Flat string fields for a Redis hash (empty string = not set)."""
        fields: dict[str, str] = {}
        for key in _FIELD_NAMES:
            value = getattr(self, key)
            if key in _JSON_FIELDS:
                fields[key] = json.dumps(value)
            elif value is None or value is False:
                fields[key] = ""
            elif value is True:
                fields[key] = "1"
            elif isinstance(value, JobState):
                fields[key] = value.value
            else:
                fields[key] = str(value)
        return fields

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> Job:
        def opt_float(key: str) -> float | None:
            text = raw.get(key, "")
            return float(text) if text else None

        exit_text = raw.get("exit_code", "")
        alike: dict[str, Any] = {key: raw.get(key, "") for key in _TEXT_FIELDS}
        alike.update({key: int(raw.get(key) or n) for key, n in _INT_FIELDS.items()})
        alike.update({key: opt_float(key) for key in _OPT_FLOAT_FIELDS})
        return cls(
            id=raw["id"],
            user=raw["user"],
            account=raw.get("account", ""),
            state=JobState(raw["state"]),
            command=json.loads(raw.get("command") or "[]"),
            submitted_at=float(raw.get("submitted_at") or 0),
            gpu_type=raw.get("gpu_type") or None,
            qos=raw.get("qos") or "normal",
            workdir=raw.get("workdir") or "/",
            env=json.loads(raw.get("env") or "{}"),
            requeue=bool(raw.get("requeue")),
            node=raw.get("node") or None,
            gpu_indices=json.loads(raw.get("gpu_indices") or "[]"),
            reasons=json.loads(raw.get("reasons") or "[]"),
            exit_code=int(exit_text) if exit_text not in ("", None) else None,
            billed=float(raw.get("billed") or 0),
            gpu_seconds=float(raw.get("gpu_seconds") or 0),
            billing_weight=float(raw.get("billing_weight") or 1.0),
            gpu_idle_since={int(k): float(v) for k, v in
                            json.loads(raw.get("gpu_idle_since") or "{}").items()},
            idle_notified=bool(raw.get("idle_notified")),
            array_task=int(raw["array_task"]) if raw.get("array_task") else None,
            memory_peak_bytes=int(raw["memory_peak_bytes"]) if raw.get("memory_peak_bytes")
            else None,
            parts=json.loads(raw.get("parts") or "[]"),
            **alike,
        )


_FIELD_NAMES = tuple(Job.__dataclass_fields__)
# Fields `from_fields` reads alike: plain text ("" when absent), whole numbers (with their
# default when absent), and times or measures that may be unset (None).
_TEXT_FIELDS = ("name", "submitter", "reason", "stop_request", "hold", "stop_reason", "output",
                "error", "script", "submit_dir", "dependency", "array_job", "notify")
_INT_FIELDS = {"gpus": 0, "time_limit_s": 0, "restarts": 0, "nodes": 1, "cpus": 0,
               "cpus_per_gpu": 0, "mem": 0, "mem_per_gpu": 0}
_OPT_FLOAT_FIELDS = ("started_at", "ended_at", "charged_until", "est_start", "queued_at",
                     "starting_at", "stop_requested_at", "cpu_seconds")


@dataclass
class GpuProcess:
    pid: int
    used_memory_bytes: int | None
    name: str = ""
    labq_job: str | None = None


@dataclass
class GpuInfo:
    """One GPU as an agent last saw it. A field the backend could not read is `None`."""

    index: int
    uuid: str
    model: str
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    utilization: float | None  # ratio 0..1
    power_watts: float | None = None
    temperature_c: float | None = None
    health: str = "OK"
    processes: list[GpuProcess] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuInfo:
        procs = [GpuProcess(**p) for p in data.get("processes", [])]
        fields = {k: v for k, v in data.items() if k != "processes"}
        return cls(**fields, processes=procs)


@dataclass
class NodeReport:
    """What an agent sends each heartbeat."""

    name: str
    gpus: list[GpuInfo]
    simulated: bool = False
    hostname: str = ""
    agent_pid: int = 0
    # the IP address the node's peers reach it at (a job across nodes: its Ray, LABQ_NODES)
    address: str = ""
    cpus: int = 0  # the CPUs jobs may use here (0: not reported)
    memory_mb: int = 0  # the memory, MiB (0: not reported)

    @property
    def gpu_model(self) -> str:
        models = sorted({g.model for g in self.gpus})
        return ",".join(models)


@dataclass
class Node:
    name: str
    state: NodeState
    gpus_total: int
    gpu_model: str
    last_heartbeat: float
    gpus: list[GpuInfo]
    allocations: dict[int, str]  # gpu index -> job id
    simulated: bool = False
    hostname: str = ""
    address: str = ""  # the agent's: where other nodes reach it (else its hostname)
    drained_by: str = ""  # who drained it ("" = not drained): no new job starts here
    drain_reason: str = ""  # why, as the admin said
    drained_at: float | None = None  # when
    cpus: int = 0  # as its agent reports them (0: not reported, not counted)
    memory_mb: int = 0  # MiB, as its agent reports it (0: not reported, not counted)

    @property
    def gpus_allocated(self) -> int:
        return len(self.allocations)

    @property
    def drained(self) -> bool:
        return bool(self.drained_by)

    @property
    def shown_state(self) -> str:
        """What `labq nodes`, the API and metrics show: UP or DOWN, or for a drained node
        DRAINING while jobs still hold its GPUs and DRAINED once none do."""
        if not self.drained:
            return self.state.value
        return "DRAINING" if self.allocations else "DRAINED"

    def free_indices(self, avoid_foreign: bool = True) -> list[int]:
        """GPUs no job holds that the agent last reported healthy: labq starts nothing on a GPU
        that is LOST or has ECC errors (the GPU is back once the agent reports it OK), nor, with
        `avoid_foreign`, on one where a process runs that labq did not start."""
        return [i for i in range(self.gpus_total)
                if i not in self.allocations and i not in self.unusable(avoid_foreign)]

    def unusable(self, avoid_foreign: bool = True) -> set[int]:
        """GPUs no new job may get: unhealthy ones, and (`avoid_foreign`) those running a
        process labq did not start, until the agent reports them otherwise."""
        return {g.index for g in self.gpus if g.health != "OK"
                or (avoid_foreign and any(not p.labq_job for p in g.processes))}

    def foreign_processes(self) -> list[dict[str, Any]]:
        """GPU processes labq did not start (in no labq job's cgroup or process tree)."""
        found = []
        for gpu in self.gpus:
            for proc in gpu.processes:
                if not proc.labq_job:
                    found.append({"gpu": gpu.index, "pid": proc.pid, "name": proc.name})
        return found

    def to_dict(self) -> dict[str, Any]:
        plain = ("name", "gpus_total", "gpus_allocated", "gpu_model", "last_heartbeat",
                 "simulated", "hostname", "address", "shown_state", "drained_by",
                 "drain_reason", "drained_at", "cpus", "memory_mb")
        return {"state": self.state.value, **{key: getattr(self, key) for key in plain},
                "allocations": {str(k): v for k, v in sorted(self.allocations.items())},
                "foreign_processes": self.foreign_processes(),
                "gpus": [g.to_dict() for g in self.gpus]}
