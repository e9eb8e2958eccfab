"""Real GPUs through NVML (`nvidia-ml-py`, imported as `pynvml`).

This is the only module of labq that imports `pynvml`. As nvitop's `nvmlQuery` does, every NVML
call goes through one wrapper, `NvmlBackend._query`, which initialises NVML lazily and turns each
documented error into a typed default, so that one field NVML cannot read degrades that field
only, never the whole heartbeat:

- `NVMLError_NotSupported`, `NVMLError_NoPermission`: the field is `None`, silently (common on
  consumer cards and in containers; not worth a log line every heartbeat).
- `NVMLError_GpuIsLost`: the GPU's health is `"LOST"`; its remaining fields are not queried.
- any other `NVMLError`: the field is `None` and a warning is logged, once per field.

Only a failing `nvmlInit` (no driver, no library) fails `read()`, with a `GpuBackendError`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pynvml

from agents.backends.base import GpuBackendError
from agents.procinfo import process_name
from scheduler.model import GpuInfo, GpuProcess

log = logging.getLogger(__name__)

T = TypeVar("T")
D = TypeVar("D")

# NVML's "value not available" for 64-bit counters (pynvml maps it to None; be safe anyway).
_NOT_AVAILABLE = 2**64 - 1

_SILENT_ERRORS: tuple[type[Exception], ...] = (
    pynvml.NVMLError_NotSupported,
    pynvml.NVMLError_NoPermission,
)


@dataclass
class _GpuState:
    """Per-GPU bookkeeping during one read: once a GPU is lost, stop asking it anything."""

    index: int | None
    lost: bool = False


class NvmlBackend:
    """Reads the node's NVIDIA GPUs through NVML. Not simulated."""

    simulated: bool = False

    def __init__(self, proc_root: str = "/proc") -> None:
        self._proc_root = proc_root
        self._initialized = False
        self._warned: set[str] = set()

    # -- the one wrapper -------------------------------------------------------------------

    def _ensure_init(self) -> None:
        if self._initialized:
            return
        try:
            pynvml.nvmlInit()
        except (pynvml.NVMLError, OSError) as exc:
            raise GpuBackendError(
                f"cannot read NVIDIA GPUs: NVML failed to initialise ({exc}). Install or load "
                "the NVIDIA driver (check that `nvidia-smi` works), or run the agent with "
                "--simulate to use simulated GPUs."
            ) from exc
        self._initialized = True

    def _query(
        self, gpu: _GpuState, field: str, fn: Callable[..., T], *args: Any, default: D
    ) -> T | D:
        """Call `fn(*args)`; on an NVML error return `default` (see the module docstring)."""
        self._ensure_init()
        if gpu.lost:
            return default
        try:
            return fn(*args)
        except _SILENT_ERRORS:
            return default
        except pynvml.NVMLError_GpuIsLost:
            log.warning("NVML reports GPU %s as lost (fell off the bus?)", gpu.index)
            gpu.lost = True
            return default
        except pynvml.NVMLError as exc:
            if field not in self._warned:
                self._warned.add(field)
                log.warning(
                    "NVML could not read %s (GPU %s): %s; reporting it as unknown "
                    "(later errors on this field are not logged)",
                    field,
                    gpu.index,
                    exc,
                )
            return default

    # -- reading ---------------------------------------------------------------------------

    def read(self) -> list[GpuInfo]:
        self._ensure_init()
        count = self._query(
            _GpuState(None), "device count", pynvml.nvmlDeviceGetCount, default=None
        )
        if count is None:
            raise GpuBackendError(
                "NVML started but could not count the GPUs; check `nvidia-smi` on this node."
            )
        return [self._read_gpu(index) for index in range(count)]

    def _read_gpu(self, index: int) -> GpuInfo:
        gpu = _GpuState(index)
        handle = self._query(gpu, "handle", pynvml.nvmlDeviceGetHandleByIndex, index, default=None)
        if handle is None:
            # A GPU NVML cannot even address is unusable to labq: report it as LOST so that
            # nothing is placed on it (the cause was logged by _query unless it was silent).
            return GpuInfo(
                index=index,
                uuid=f"UNKNOWN-{index}",
                model="unknown",
                memory_total_bytes=None,
                memory_used_bytes=None,
                utilization=None,
                health="LOST",
            )
        uuid = _text(self._query(gpu, "uuid", pynvml.nvmlDeviceGetUUID, handle, default=None))
        name = _text(self._query(gpu, "name", pynvml.nvmlDeviceGetName, handle, default=None))
        memory = self._query(gpu, "memory", pynvml.nvmlDeviceGetMemoryInfo, handle, default=None)
        rates = self._query(
            gpu, "utilization", pynvml.nvmlDeviceGetUtilizationRates, handle, default=None
        )
        power_mw = self._query(gpu, "power", pynvml.nvmlDeviceGetPowerUsage, handle, default=None)
        temperature = self._query(
            gpu,
            "temperature",
            pynvml.nvmlDeviceGetTemperature,
            handle,
            pynvml.NVML_TEMPERATURE_GPU,
            default=None,
        )
        ecc = self._query(
            gpu,
            "ecc errors",
            pynvml.nvmlDeviceGetTotalEccErrors,
            handle,
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            pynvml.NVML_VOLATILE_ECC,
            default=0,
        )
        processes = self._processes(gpu, handle)

        if gpu.lost:
            health = "LOST"
        elif ecc and int(ecc) > 0:
            health = "ECC_ERRORS"
        else:
            health = "OK"
        return GpuInfo(
            index=index,
            uuid=uuid or f"UNKNOWN-{index}",
            model=name or "unknown",
            memory_total_bytes=_bytes(getattr(memory, "total", None)),
            memory_used_bytes=_bytes(getattr(memory, "used", None)),
            utilization=_ratio(getattr(rates, "gpu", None)),
            power_watts=None if power_mw is None else float(power_mw) / 1000.0,
            temperature_c=None if temperature is None else float(temperature),
            health=health,
            processes=processes,
        )

    def _processes(self, gpu: _GpuState, handle: Any) -> list[GpuProcess]:
        """Compute and graphics processes, one entry per pid (a pid may be in both lists)."""
        found: dict[int, GpuProcess] = {}
        for field, fn in (
            ("compute processes", pynvml.nvmlDeviceGetComputeRunningProcesses),
            ("graphics processes", pynvml.nvmlDeviceGetGraphicsRunningProcesses),
        ):
            for entry in self._query(gpu, field, fn, handle, default=[]) or []:
                pid = int(entry.pid)
                used = _bytes(getattr(entry, "usedGpuMemory", None))
                known = found.get(pid)
                if known is None:
                    found[pid] = GpuProcess(
                        pid=pid,
                        used_memory_bytes=used,
                        name=process_name(pid, self._proc_root),
                    )
                elif used is not None and (
                    known.used_memory_bytes is None or used > known.used_memory_bytes
                ):
                    known.used_memory_bytes = used
        return [found[pid] for pid in sorted(found)]

    def close(self) -> None:
        if not self._initialized:
            return
        self._initialized = False
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            log.debug("nvmlShutdown failed: %s", exc)


def detect_nvidia() -> bool:
    """True if NVML initialises and reports at least one GPU. Never raises."""
    try:
        pynvml.nvmlInit()
    except Exception:
        return False
    try:
        return int(pynvml.nvmlDeviceGetCount()) >= 1
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _text(value: object) -> str | None:
    """NVML strings arrive as str or bytes depending on the binding version."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _bytes(value: Any) -> int | None:
    if value is None:
        return None
    number = int(value)
    if number < 0 or number >= _NOT_AVAILABLE:
        return None
    return number


def _ratio(percent: Any) -> float | None:
    if percent is None:
        return None
    return min(1.0, max(0.0, float(percent) / 100.0))
