"""Where a job's GPUs go: all on one node, best fit, honouring the GPU type."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.config import gpu_type_matches
from scheduler.policy.snapshot import NodeView, PendingJob


@dataclass(frozen=True)
class Placement:
    node: str
    indices: tuple[int, ...]


def fits_type(job: PendingJob, node: NodeView) -> bool:
    return job.gpu_type is None or gpu_type_matches(job.gpu_type, node.gpu_model)


def best_fit(job: PendingJob, nodes: Iterable[NodeView]) -> Placement | None:
    """The UP node of the right type that is left with the fewest free GPUs; lowest indices.

    Best fit keeps whole nodes free for the large jobs that need them.
    """
    best: NodeView | None = None
    for node in nodes:
        if not node.up or len(node.free) < job.gpus or not fits_type(job, node):
            continue
        if best is None or (len(node.free), node.name) < (len(best.free), best.name):
            best = node
    if best is None:
        return None
    return Placement(best.name, best.free[: job.gpus])
