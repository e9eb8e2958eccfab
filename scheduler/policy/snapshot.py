"""Immutable views of the cluster that the policy decides on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeView:
    name: str
    gpu_model: str
    gpus_total: int
    free: tuple[int, ...]  # free GPU indices, ascending
    up: bool = True


@dataclass(frozen=True)
class PendingJob:
    id: str
    user: str
    account: str
    gpus: int
    submitted_at: float
    gpu_type: str | None = None
    qos: str = "normal"
    time_limit_s: int = 3600


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[NodeView, ...]
    pending: tuple[PendingJob, ...]
    now: float
