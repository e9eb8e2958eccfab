"""The process outside labq (check d): run as root, not as a job, by
`python -c SOURCE SIZE HOLD_S`; stdlib only (torch if libcuda does not work).

Holds SIZE bytes of GPU memory on CUDA device 0 (the caller sets CUDA_VISIBLE_DEVICES) for
HOLD_S seconds: through the driver (libcuda, no toolkit needed), else torch. Prints
`HOLDING SIZE HOW` once it holds them.
"""

from __future__ import annotations

import ctypes
import sys
import time
from typing import Any


def ok(code: int, what: str) -> None:
    if code != 0:
        raise RuntimeError(what + " returned CUresult " + str(code))


def main(size: int, hold: float) -> None:
    keep: Any = None  # what holds the memory, alive until the end
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        ok(cuda.cuInit(0), "cuInit")
        dev = ctypes.c_int()
        ok(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
        ctx = ctypes.c_void_p()
        ok(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
        ok(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        keep = ctypes.c_uint64()
        ok(cuda.cuMemAlloc_v2(ctypes.byref(keep), ctypes.c_size_t(size)), "cuMemAlloc")
        how = "libcuda"
    except Exception as exc:
        print("libcuda:", exc, "- trying torch", flush=True)
        import torch

        keep = torch.ones(size, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        how = "torch"
    print("HOLDING", size, how, flush=True)
    time.sleep(hold)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
