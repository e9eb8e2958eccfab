"""A job's CPUs and memory: how they are asked for, and what they come to on a node.

Semantics (Slurm's, per node): `--cpus N` is the CPUs the job gets on each of its nodes (Slurm's
`--cpus-per-task` for labq's one task per node), `--cpus-per-gpu N` that many per GPU it has
there; `--mem SIZE` the memory on each node, `--mem-per-gpu SIZE` per GPU. One of each pair.
A job that asks neither gets the cluster's default per GPU (`[resources] def_cpus_per_gpu`,
`def_mem_per_gpu`, filled in at submit), and where that is 0 its node's share: the node's CPUs
(memory) x its GPUs there / the node's GPUs, rounded down (0: not counted, not limited). A
job's needs are resolved on the node it is placed on, by the coordinator (placement) and by
that node's agent (its cgroup), with the same function (`Demand.on`) from the same numbers
(the node's reported totals), so the two agree.

Sizes are MiB, as Slurm's: a plain number is MiB; `K`, `M`, `G`, `T` suffixes (optionally
with `B` or `iB`) are binary units. Standard library only: the CLI imports this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIB = 1 << 20
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_UNIT_MIB = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}
MAX_MIB = 1 << 40  # 1 EiB: nothing a node has comes near it


class SizeError(ValueError):
    """A memory size that is not one; the message says what to write."""


def parse_mem(text: str, flag: str = "--mem") -> int:
    """A memory size as Slurm writes it (`16G`, `512M`, `1.5G`, a plain number = MiB) in MiB,
    at least 1."""
    match = _SIZE.match(str(text))
    if not match:
        raise SizeError(f"{flag} {text!r}: give a size such as 16G, 512M or 2048 (MiB)")
    mib = float(match.group(1)) * _UNIT_MIB[match.group(2).upper()]
    if mib < 1:
        raise SizeError(f"{flag} {text!r}: at least 1M")
    if mib > MAX_MIB:
        raise SizeError(f"{flag} {text!r}: too large")
    return int(mib)


def format_mem(mib: int) -> str:
    """MiB as a person reads it: 512M, 16G, 1.5G, 2T."""
    if mib >= 1 << 20 and mib % (1 << 20) == 0:
        return f"{mib >> 20}T"
    if mib >= 1024 and mib % 1024 == 0:
        return f"{mib // 1024}G"
    if mib >= 1024:
        return f"{mib / 1024:.1f}G"
    return f"{mib}M"


@dataclass(frozen=True, slots=True)
class Demand:
    """What a job asked for on each node (0 = not asked): `cpus` or `cpus_per_gpu`, `mem` or
    `mem_per_gpu` (MiB). All four 0: its node's share of each."""

    cpus: int = 0
    cpus_per_gpu: int = 0
    mem: int = 0
    mem_per_gpu: int = 0

    def on(self, gpus: int, node_gpus: int, node_cpus: int, node_mem: int) -> tuple[int, int]:
        """(CPUs, MiB) the job gets on a node where it has `gpus` of the node's `node_gpus`
        GPUs, the node having `node_cpus` CPUs and `node_mem` MiB (0: not reported, then the
        share of it is 0, i.e. not counted, and explicit asks stand as asked)."""
        return (_one(self.cpus, self.cpus_per_gpu, gpus, node_gpus, node_cpus),
                _one(self.mem, self.mem_per_gpu, gpus, node_gpus, node_mem))

    def describe(self) -> str:
        """The ask in words, as `labq show` and a reason print it ("" = the node's share)."""
        parts = []
        if self.cpus:
            parts.append(f"{self.cpus} CPUs")
        elif self.cpus_per_gpu:
            parts.append(f"{self.cpus_per_gpu} CPUs per GPU")
        if self.mem:
            parts.append(f"{format_mem(self.mem)} memory")
        elif self.mem_per_gpu:
            parts.append(f"{format_mem(self.mem_per_gpu)} memory per GPU")
        return ", ".join(parts)


def _one(total: int, per_gpu: int, gpus: int, node_gpus: int, node_has: int) -> int:
    """One resource: as asked, or the node's share, rounded down, so that jobs taking their
    shares never block each other (on a node with fewer CPUs than GPUs a 1-GPU job's share
    is 0 CPUs: not counted, and no CPU limit)."""
    if total:
        return total
    if per_gpu:
        return per_gpu * max(1, gpus)
    if node_has <= 0 or node_gpus <= 0:
        return 0
    return node_has * gpus // node_gpus


def billing_weight(gpu_weight: float, gpus: int, cpus: int, mem: int, cpu_weight: float,
                   mem_weight: float) -> float:
    """A job's billing weight per GPU-second with its CPUs and memory folded in (Slurm's
    TRESBillingWeights, summed): the charge multiplies GPUs x this weight per second, so
    `gpu_weight + (cpus x cpu_weight + GiB x mem_weight) / gpus`. `cpus`, `mem` (MiB): what
    the job was given on all its nodes together; with both weights 0 (the default), GPUs
    alone are billed."""
    if not cpu_weight and not mem_weight:
        return gpu_weight
    extra = cpus * cpu_weight + mem / 1024 * mem_weight
    return gpu_weight + extra / max(1, gpus)
