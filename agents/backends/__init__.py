"""GPU backends of the node agent: NVML for real NVIDIA GPUs, or SIMULATED GPUs.

`make_backend` picks one by name. The NVML module (the only one importing `pynvml`) is imported
only when it is needed, so a simulated agent never loads NVML.
"""

from __future__ import annotations

from agents.backends.base import GpuBackend, GpuBackendError

__all__ = ["GpuBackend", "GpuBackendError", "detect_nvidia", "make_backend"]


def make_backend(
    kind: str, *, node_name: str, sim_gpus: int = 0, sim_model: str = ""
) -> GpuBackend:
    """A backend of `kind` "nvml" (real GPUs) or "simulated" (`sim_gpus` fake `sim_model`s)."""
    if kind == "nvml":
        from agents.backends.nvml import NvmlBackend

        return NvmlBackend()
    if kind == "simulated":
        from agents.backends.simulated import DEFAULT_MODEL, SimulatedBackend

        return SimulatedBackend(node_name, sim_gpus, sim_model or DEFAULT_MODEL)
    raise ValueError(f"unknown GPU backend {kind!r}: expected 'nvml' or 'simulated'")


def detect_nvidia() -> bool:
    """True if NVML initialises and reports at least one GPU. Never raises."""
    try:
        from agents.backends.nvml import detect_nvidia as detect
    except Exception:
        return False
    return detect()
