"""The simulator's cluster (`--cluster`), and what a replay gives back: its runs and result."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from scheduler.resources import SizeError, parse_mem
from scheduler.sim.trace import SimJob


@dataclass(frozen=True)
class Cluster:
    """Identical nodes: their GPUs, model and billing weight, and the CPUs and memory (MiB)
    each offers jobs (0: not counted, as a node that reports none)."""

    nodes: int
    gpus_per_node: int
    model: str = "gpu"
    billing_weight: float = 1.0
    cpus: int = 0
    mem: int = 0

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @classmethod
    def parse(cls, text: str) -> Cluster:
        """``NODESxGPUS[:MODEL][,cpus=N][,mem=SIZE]``, e.g. ``8x8:A100,cpus=64,mem=512G``."""
        head, *extras = text.split(",")
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*(?::\s*(\S+))?\s*", head)
        if not m or int(m[1]) < 1 or int(m[2]) < 1:
            raise ValueError(f"bad --cluster {text!r}: use NODESxGPUS[:MODEL], e.g. 8x8:A100 "
                             "(with ,cpus=N,mem=SIZE for each node's CPUs and memory)")
        sizes = {"cpus": 0, "mem": 0}
        for extra in extras:
            key, _, value = extra.strip().partition("=")
            try:
                if key == "cpus" and value.isdigit() and int(value) > 0:
                    sizes["cpus"] = int(value)
                elif key == "mem":
                    sizes["mem"] = parse_mem(value, "mem")
                else:
                    raise SizeError("")
            except SizeError:
                raise ValueError(f"bad --cluster {text!r}: {extra.strip()!r}: use cpus=N or "
                                 "mem=SIZE (16G, 512M)") from None
        return cls(int(m[1]), int(m[2]), m[3] or "gpu", cpus=sizes["cpus"], mem=sizes["mem"])


@dataclass(frozen=True)
class Run:
    """One run of a job: it started at `start` and ended (or was preempted) at `end`."""

    job: SimJob
    start: float
    end: float
    node: str
    indices: tuple[int, ...]
    preempted: bool = False
    rest: tuple[tuple[str, tuple[int, ...]], ...] = ()  # a job across nodes: its other nodes


@dataclass
class SimResult:
    policy: str
    cluster: Cluster
    jobs: list[SimJob]  # the jobs replayed (placeable ones)
    runs: list[Run]
    skipped: list[SimJob]  # jobs no node could ever hold (too many GPUs, unknown type)
    wall_s: float = 0.0
    policy_calls: int = 0
    queue_samples: list[tuple[float, int]] = field(default_factory=list)  # (time, pending)
    tenant_shares: dict[str, float] = field(default_factory=dict)  # every tenant's shares
    budgets: dict[str, float] | None = None  # --budgets: billed GPU-hours per tenant
    never_started: list[SimJob] = field(default_factory=list)  # still waiting at the end
