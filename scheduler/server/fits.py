"""Whether a job could ever fit the cluster: GPUs (of a type) on one node or on each of its
nodes, and CPUs and memory where nodes report theirs. Checked against node shapes (model,
GPUs, CPUs, memory, and how many nodes have them): a lab's nodes come in a few shapes, so a
submit's check costs the same with 1,000 nodes as with 10."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.config import gpu_family, gpu_type_matches
from scheduler.model import Node
from scheduler.resources import Demand, format_mem


class DoesNotFit(ValueError):
    """No node could ever run the job as asked; the message says what is short."""


@dataclass(frozen=True, slots=True)
class NodeShape:
    """What the checks read of a node, and how many nodes are so."""

    gpu_model: str
    gpus_total: int
    cpus: int
    memory_mb: int
    count: int = 1


def node_shapes(nodes: Sequence[Node] | Sequence[NodeShape]) -> tuple[NodeShape, ...]:
    """The nodes' shapes (shapes are returned as they are)."""
    if all(isinstance(n, NodeShape) for n in nodes):
        return tuple(n for n in nodes if isinstance(n, NodeShape))
    counts = Counter((n.gpu_model, n.gpus_total, n.cpus, n.memory_mb) for n in nodes)
    return tuple(NodeShape(*shape, count=count) for shape, count in counts.items())


def check_fits(gpus: int, gpu_type: str | None, nodes: Sequence[NodeShape], count: int = 1
               ) -> None:
    """`gpus` GPUs (of the type) on one node, or on each of `count` nodes."""
    if not nodes:
        raise DoesNotFit("no GPU node has registered yet: wait for the agents (see `labq nodes`)")
    if gpu_type is not None:
        typed = [n for n in nodes if gpu_type_matches(gpu_type, n.gpu_model)]
        if not typed:
            known = sorted({gpu_family(n.gpu_model) for n in nodes} | {n.gpu_model for n in nodes})
            raise DoesNotFit(
                f"unknown --gpu-type {gpu_type!r}: this cluster has {', '.join(known)}"
            )
        nodes = typed
    most = max(n.gpus_total for n in nodes)
    if gpus > most:
        kind = f" of type {gpu_type}" if gpu_type else ""
        raise DoesNotFit(f"--gpus {gpus}: the largest node{kind} has {most} GPUs; "
                         f"a job's GPUs must all be on one node"
                         + (" (--gpus counts the GPUs on each of its --nodes)" if count > 1
                            else ""))
    large = sum(n.count for n in nodes if n.gpus_total >= gpus)
    if count > large:
        kind = f" of type {gpu_type}" if gpu_type else ""
        raise DoesNotFit(f"--nodes {count} --gpus {gpus}: this cluster has {large} node(s){kind} "
                         f"with {gpus} GPUs")


def check_demand_fits(demand: Demand, gpus: int, gpu_type: str | None,
                      nodes: Sequence[NodeShape], count: int) -> None:
    """Refuse a job whose CPUs or memory no node of its type could ever give it (where nodes
    report theirs): it would wait for ever. Names the resource that is short."""
    typed = [n for n in nodes if n.gpus_total >= gpus
             and (gpu_type is None or gpu_type_matches(gpu_type, n.gpu_model))]
    shown: tuple[tuple[str, Callable[[int], str]], ...] = (
        ("CPUs", lambda cpus: f"{cpus} CPUs"), ("memory", format_mem))
    for which, (resource, show) in enumerate(shown):  # 0: CPUs, 1: memory (MiB)
        reporting = [(n, (n.cpus, n.memory_mb)[which]) for n in typed]
        reporting = [(n, has) for n, has in reporting if has]
        if not reporting:
            continue
        need = [demand.on(gpus, n.gpus_total, n.cpus, n.memory_mb)[which] for n, _ in reporting]
        if sum(n.count for (n, has), k in zip(reporting, need, strict=True) if k <= has) < min(
                count, sum(n.count for n, _ in reporting)):
            most = max(has for _, has in reporting)
            raise DoesNotFit(f"not enough {resource}: the job asks for {show(min(need))} on a "
                             f"node; the largest node{_of(gpu_type)} has {show(most)}")


def _of(gpu_type: str | None) -> str:
    return f" of type {gpu_type}" if gpu_type else ""
