"""Immutable views of the cluster that the policy decides on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scheduler.policy.budget import BudgetState
from scheduler.policy.fairshare import FAIR_TREE, Account, Assoc, FairShareTable
from scheduler.policy.priority import DEFAULT_QOS_FACTORS, PriorityWeights
from scheduler.resources import Demand

if TYPE_CHECKING:
    from scheduler.policy.fairengine import FairShare

DEFAULT_PAST_WEIGHT = 0.2  # see fairnow and docs/sim-results.md


@dataclass(frozen=True)
class NodeView:
    name: str
    gpu_model: str
    gpus_total: int
    free: tuple[int, ...]  # free GPU indices, ascending
    up: bool = True
    billing_weight: float = 1.0  # billing units per GPU-second of this node's GPU model
    unhealthy: tuple[int, ...] = ()  # GPUs the agent reports unhealthy: never given to a job
    # Of those, the GPUs held back only because a process labq did not start runs there
    # (`foreign_gpu_policy = "avoid"`): named apart in the reason a job waits.
    foreign: tuple[int, ...] = ()
    # An admin drained it (the reason; "" = not drained): up, but no new job starts here.
    drained: str = ""
    # Its CPUs and memory (MiB) as its agent reports them (0: not reported, not counted), and
    # what the jobs holding GPUs here leave of them (`cluster.read`: total - theirs).
    cpus: int = 0
    mem: int = 0
    cpus_free: int = 0
    mem_free: int = 0

    def need(self, demand: Demand, gpus: int) -> tuple[int, int]:
        """(CPUs, MiB) a job asking `demand` gets here with `gpus` of this node's GPUs."""
        return demand.on(gpus, self.gpus_total, self.cpus, self.mem)

    @property
    def open(self) -> bool:
        """New jobs may start here: up and not drained."""
        return self.up and not self.drained

    @property
    def gpus_usable(self) -> int:
        """GPUs a job could ever get here (the unhealthy ones are not freed by a job's end)."""
        return self.gpus_total - len(self.unhealthy)


@dataclass(frozen=True, slots=True)
class PendingJob:
    id: str
    user: str
    account: str
    gpus: int
    submitted_at: float
    gpu_type: str | None = None
    qos: str = "normal"
    time_limit_s: int = 3600
    nodes: int = 1  # `gpus` in all, `per_node` of them on each of this many nodes
    demand: Demand = Demand()  # its CPUs and memory on each node (all 0: the node's share)
    # Derived once, when the job is made: a cycle groups and sorts by them, and the simulator
    # shows the same jobs call after call (the coordinator keeps them between cycles too).
    # (account, user): the association the job is charged to.
    assoc: tuple[str, str] = field(init=False, repr=False, compare=False)
    # The job's place among its association's jobs under fair_now (`fairnow.own_order`).
    own_key: tuple[bool, int, int, float, int, str] = field(init=False, repr=False,
                                                            compare=False)

    def __post_init__(self) -> None:
        _check_gpus("pending", self.id, self.gpus)
        object.__setattr__(self, "assoc", (self.account, self.user))
        object.__setattr__(self, "own_key", (self.qos == "scavenger", self.gpus,
                                             self.time_limit_s, self.submitted_at,
                                             len(self.id), self.id))

    @property
    def per_node(self) -> int:
        """The GPUs it needs on each of its nodes."""
        return self.gpus // self.nodes if self.nodes > 1 else self.gpus


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job that holds GPUs now (STARTING or RUNNING)."""

    id: str
    user: str
    account: str
    gpus: int
    node: str
    indices: tuple[int, ...] = ()
    ends_at: float = float("inf")  # start + time limit: when its GPUs are free at the latest
    qos: str = "normal"
    rate: float = 0.0  # billed units per second (GPUs x billing weight)
    # A multi-node job's other nodes and their GPUs (`node`, `indices`: its head node's).
    rest: tuple[tuple[str, tuple[int, ...]], ...] = ()
    demand: Demand = Demand()  # its CPUs and memory on each node (all 0: the node's share)
    # (account, user): the association the job is charged to; derived once.
    assoc: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_gpus("running", self.id, self.gpus)
        object.__setattr__(self, "assoc", (self.account, self.user))

    @property
    def parts(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Each node it holds GPUs on, with those GPUs: the head node first."""
        return ((self.node, self.indices), *self.rest)

    @property
    def node_names(self) -> tuple[str, ...]:
        return (self.node, *(name for name, _ in self.rest))


@dataclass(frozen=True)
class Limits:
    """Caps on GPUs held at once. An account's cap covers its sub-accounts' jobs too: which
    accounts are above which is the share inputs' account tree (`AccountTree.covering`)."""

    user_gpus: Mapping[str, int] = field(default_factory=dict)
    account_gpus: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ShareInputs:
    """What fair share and priority need: the tree, its users, their decayed usage, weights."""

    accounts: tuple[Account, ...] = ()
    assocs: tuple[Assoc, ...] = ()
    usage: Mapping[tuple[str, str], float] = field(default_factory=dict)
    algorithm: str = FAIR_TREE
    weights: PriorityWeights = field(default_factory=PriorityWeights)
    qos_factors: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_QOS_FACTORS))
    # fair_now only (see `fairnow`): the part of the fair-share factor that is Fair Tree's
    # on past usage (the rest is on GPUs held now), in [0, 1].
    past_weight: float = DEFAULT_PAST_WEIGHT
    # The fair-share table of exactly these inputs, when the caller already has it (the
    # simulator refreshes usage every minute of virtual time but schedules far more often).
    table: FairShareTable | None = None
    # The fair-share engine of whoever made these inputs (the simulator's `ShareBuilder`),
    # which `schedule` ranks with when not given one: it keeps the account tree and fair
    # now's last split between the calls of one replay.
    engine: FairShare | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[NodeView, ...]
    pending: tuple[PendingJob, ...]
    now: float
    running: tuple[RunningJob, ...] = ()
    limits: Limits = field(default_factory=Limits)
    shares: ShareInputs | None = None  # None: first come, first served
    budgets: BudgetState | None = None  # None: no budgets
    # GPUs of all pending normal-QOS jobs per (account, user), given only when `pending`
    # holds part of the queue (the simulator's cut): fair_now's demand. None: from `pending`.
    queued_gpus: Mapping[tuple[str, str], float] | None = None

    def __post_init__(self) -> None:
        """A queue with a job id twice is refused: a job's place, level and total are keyed
        by its id."""
        if len({job.id for job in self.pending}) != len(self.pending):
            count = Counter(job.id for job in self.pending)
            twice = sorted(job_id for job_id, n in count.items() if n > 1)
            raise ValueError(f"a snapshot's pending jobs have distinct ids; given twice: "
                             f"{', '.join(twice[:5])}")


def _check_gpus(kind: str, job_id: str, gpus: int) -> None:
    if gpus < 0:
        raise ValueError(f"{kind} job {job_id} asks for {gpus} GPUs: a GPU count is >= 0")
