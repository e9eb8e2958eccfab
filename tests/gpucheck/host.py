"""What gpu-check reads on this host (NVML, nvidia-smi, /proc) and in the jobs' output."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any


def result_of(text: str) -> dict[str, Any] | None:
    for line in text.splitlines():
        if line.startswith("RESULT "):
            try:
                return dict(json.loads(line[len("RESULT "):]))
            except ValueError:
                return None
    return None


def same_uuid(a: str | None, b: str | None) -> bool:
    def norm(u: str) -> str:
        u = u.strip().lower()
        for prefix in ("gpu-", "mig-"):
            if u.startswith(prefix):
                u = u[len(prefix):]
        return u

    return bool(a) and bool(b) and norm(str(a)) == norm(str(b))


def host_nvml() -> tuple[list[dict[str, Any]] | None, str]:
    """This node's GPUs as NVML lists them (index, name, uuid, compute pids), or why not."""
    try:
        import pynvml
    except ImportError as exc:
        return None, f"nvidia-ml-py does not import: {exc}"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - any NVML failure is the answer
        return None, f"NVML did not start: {exc}"
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name, uuid = pynvml.nvmlDeviceGetName(h), pynvml.nvmlDeviceGetUUID(h)
            gpus.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                         "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid})
        return gpus, "ok"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def nvml_compute_pids() -> list[tuple[int, int, int | None]] | str:
    """(gpu index, pid, used bytes) of every compute process NVML lists now, or an error."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        return f"NVML: {exc}"
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                found.append((i, int(p.pid), getattr(p, "usedGpuMemory", None)))
        return found
    except Exception as exc:  # noqa: BLE001
        return f"NVML: {exc}"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def run_text(argv: list[str], timeout: float = 20) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({' '.join(argv)}: {exc})"
    return (done.stdout + done.stderr).strip()


def describe_pid(pid: int) -> str:
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return f"pid {pid}: not in this PID namespace"
    try:
        cgroup = (proc / "cgroup").read_text().strip().splitlines()[-1]
        comm = (proc / "comm").read_text().strip()
        uid = (proc / "status").read_text().split("Uid:")[1].split()[0]
    except (OSError, IndexError):
        return f"pid {pid}: unreadable"
    return f"pid {pid} ({comm}, uid {uid}, cgroup {cgroup})"


def gib(value: Any) -> str:
    return "-" if value is None else f"{int(value) / 2**30:.2f} GiB"


