"""Submissions accepted per second from 4 concurrent clients, one job per request and in arrays.

Starts its own `labq up --simulate 1x4:A100-80GB`; each client is its own process with one
keep-alive connection to the coordinator's Unix socket (what a script looping over `labq submit`
in Python, or the API, does). The scheduler runs live meanwhile, so the figure includes a busy
coordinator. Usage: python bench/bench_throughput.py [--per-client N] [--array K]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import uuid

from common import Stack, machine


def client_loop(socket_path: str, count: int, array: int, start_at: float,
                out: mp.Queue) -> None:  # type: ignore[type-arg]
    from scheduler.client import Client

    client = Client(socket_path)
    body = {"command": ["sleep", "600"], "workdir": "/", "time": "1h", "array": array}
    while time.time() < start_at:
        time.sleep(0.001)
    began = time.perf_counter()
    accepted = 0
    for _ in range(count):
        result = client.request("POST", "/v1/jobs", {**body, "token": uuid.uuid4().hex})
        accepted += len(result["ids"])
    out.put((accepted, time.perf_counter() - began))


def run(stack: Stack, clients: int, per_client: int, array: int) -> float:
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    start_at = time.time() + 0.5
    procs = [mp.Process(target=client_loop,
                        args=(str(stack.home / "labq.sock"), per_client, array, start_at, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    accepted = sum(r[0] for r in results)
    wall = max(r[1] for r in results)
    return accepted / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-client", type=int, default=1000)
    parser.add_argument("--array", type=int, default=100)
    args = parser.parse_args()
    stack = Stack("1x4:A100-80GB").start()
    try:
        single = run(stack, 4, args.per_client, 1)
        arrays = run(stack, 4, max(1, args.per_client // args.array), args.array)
    finally:
        stack.stop()
    print(f"machine: {machine()}")
    print(f"4 clients, 1 job per request : {single:,.0f} jobs accepted/s")
    print(f"4 clients, arrays of {args.array:<4}    : {arrays:,.0f} jobs accepted/s")


if __name__ == "__main__":
    main()
