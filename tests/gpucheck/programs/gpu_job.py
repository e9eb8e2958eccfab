"""The GPU job (check b, and the waiting job of check d): run as the job's user, with the job's
Python, by `python -c SOURCE RELEASE_FILE HOLD_S`; stdlib only (torch and pynvml if they import).

Prints `RESULT {...}` (who it runs as, CUDA_VISIBLE_DEVICES, NVML's UUIDs of those indices,
torch's view of its GPU and a timed matmul), then keeps its GPU busy until RELEASE_FILE exists or
HOLD_S seconds passed, and prints DONE.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def main(release: str, hold: float) -> None:
    out: dict[str, Any] = {
        "uid": os.getuid(), "user": os.environ.get("USER"), "pid": os.getpid(),
        "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "order": os.environ.get("CUDA_DEVICE_ORDER"), "python": sys.executable,
        "ray_override": os.environ.get("RAY_OVERRIDE_RESOURCES")}
    indices = [int(x) for x in (out["cvd"] or "").split(",") if x.strip().isdigit()]
    try:
        import pynvml

        pynvml.nvmlInit()
        uuids = []
        for i in indices:
            u = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
            uuids.append(u.decode() if isinstance(u, bytes) else u)
        out["nvml_uuids"] = uuids
    except Exception as exc:
        out["nvml_error"] = repr(exc)[:300]
    a: Any = None  # the matmul operands once torch works on the GPU
    b: Any = None
    try:
        import torch

        out["torch"] = torch.__version__
        out["torch_cuda"] = torch.version.cuda
        out["cuda_available"] = torch.cuda.is_available()
        out["device_count"] = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        out["name"] = props.name
        out["uuid"] = str(getattr(props, "uuid", ""))
        out["pci_bus_id"] = getattr(props, "pci_bus_id", None)
        a = torch.randn(4096, 4096, device="cuda")
        b = torch.randn(4096, 4096, device="cuda")
        torch.cuda.synchronize()
        t0 = time.time()
        for _ in range(20):
            c = a @ b
        torch.cuda.synchronize()
        out["tflops"] = round(20 * 2 * 4096**3 / (time.time() - t0) / 1e12, 1)
        ref = a[:32].double().cpu() @ b.double().cpu()
        err = (c[:32].double().cpu() - ref).abs().max().item() / ref.abs().max().item()
        out["matmul_rel_err"] = err
        out["mem_allocated"] = torch.cuda.memory_allocated()
    except Exception as exc:
        out["torch_error"] = repr(exc)[:500]
    print("RESULT " + json.dumps(out), flush=True)
    deadline = time.time() + hold
    while time.time() < deadline and not os.path.exists(release):
        if a is not None:
            c = a @ b
            torch.cuda.synchronize()
        else:
            time.sleep(0.2)
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
