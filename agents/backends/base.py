"""What every GPU backend offers the agent, and the one error a backend raises."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from scheduler.model import GpuInfo


class GpuBackendError(RuntimeError):
    """The backend cannot read GPUs at all (e.g. no NVIDIA driver). The message says what to do."""


@runtime_checkable
class GpuBackend(Protocol):
    """A source of GPU snapshots for one node.

    `read` returns every GPU of the node; a field it could not read is `None` (the read as a
    whole only fails, with `GpuBackendError`, when the backend cannot start). Backends leave
    `GpuProcess.labq_job` unset: `agents.procinfo.tag_processes` fills it in.
    """

    simulated: bool

    def read(self) -> list[GpuInfo]:
        """One snapshot of every GPU on this node, ordered by index."""
        ...

    def close(self) -> None:
        """Release what the backend holds; safe to call more than once."""
        ...
