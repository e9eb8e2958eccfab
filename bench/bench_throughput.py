"""Submissions accepted per second from 4 concurrent clients, one job per request and in arrays.

Starts its own `labq up --simulate 1x4:A100-80GB`; each client is its own process with one
keep-alive connection to the coordinator's Unix socket (what a script looping over submissions,
or any HTTP client of the API, does). The scheduler runs live meanwhile, so the figure includes
a busy coordinator.

Every job is one full HTTP/1.1 request (`POST /v1/jobs` with a JSON body and a fresh token)
whose whole response is read and decoded; a submission counts only if the coordinator answered
200 with its id. By default the clients write the request and parse the response with a few
lines of socket code (`--client raw`), because the clients share the 2 cores with the server and
`http.client` spends about 0.17 ms of CPU per request on its own; `--client labq` uses
`scheduler.client.Client` (what `labq submit` uses) instead.

Runs, in order: one job per request while the first 4 jobs launch on Ray (Ray's worker
processes start on the same 2 cores), then again once those jobs run (the steady state of a
full cluster), then arrays. Usage:
python bench/bench_throughput.py [--per-client N] [--array K] [--client raw|labq]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pwd
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import machine
from stack import E2E_USER, Stack

Submit = Callable[[dict[str, Any]], list[str]]


def raw_submitter(socket_path: str) -> Submit:
    """POST /v1/jobs over a keep-alive Unix-socket connection; returns the accepted ids."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    reader = sock.makefile("rb")
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: labq\r\nContent-Type: application/json\r\n"

    def submit(body: dict[str, Any]) -> list[str]:
        payload = json.dumps(body).encode()
        sock.sendall(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(payload), payload))
        status = reader.readline()
        length = None
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"no Content-Length in the answer to a submit ({status!r})")
        answer = json.loads(reader.read(length))
        if status.split()[1] != b"200":
            raise RuntimeError(f"submit refused: {status!r} {answer}")
        return list(answer["ids"])

    return submit


def labq_submitter(socket_path: str) -> Submit:
    from scheduler.client import Client

    client = Client(socket_path)
    return lambda body: list(client.request("POST", "/v1/jobs", body)["ids"])


def client_loop(socket_path: str, workdir: str, kind: str, count: int, array: int,
                start_at: float, out: mp.Queue, student: str = "") -> None:
    body: dict[str, Any] = {"command": ["sleep", "600"], "workdir": workdir, "time": "1h"}
    if student:  # as that user, no admin: a student's script (its caps checked)
        entry = pwd.getpwnam(student)
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    else:  # as root, the stack's admin, for its test user (labq never runs a job as root)
        body["as_user"] = E2E_USER
    submit = (raw_submitter if kind == "raw" else labq_submitter)(socket_path)
    # An array is one record of `array` tasks (`--array 0-99`), each a job once it nears its
    # turn. It runs in the stack's work folder, where the user may write its output (not in /).
    if array > 1:
        body["array"] = f"0-{array - 1}"
    while time.time() < start_at:
        time.sleep(0.001)
    began, cpu = time.perf_counter(), time.process_time()
    accepted = 0
    for _ in range(count):
        accepted += len(submit({**body, "token": uuid.uuid4().hex})) * array
    out.put((accepted, time.perf_counter() - began, time.process_time() - cpu))


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(stack: Stack, kind: str, clients: int, per_client: int, array: int,
        student: str = "") -> tuple[float, float, float]:
    """(jobs accepted per second, the clients' own CPU seconds per 1,000 requests, the
    coordinator's CPU seconds per 1,000 requests). `student`: the clients submit as that
    user (not an admin of the stack), not as root for the stack's test user."""
    coordinator = stack.pids("scheduler.cli coordinator")[0]  # the one serving the API
    out: mp.Queue = mp.Queue()
    start_at = time.time() + 0.5
    procs = [mp.Process(target=client_loop,
                        args=(str(stack.home / "labq.sock"), str(stack.workdir), kind,
                              per_client, array, start_at, out, student))
             for _ in range(clients)]
    for p in procs:
        p.start()
    server_cpu = cpu_seconds(coordinator)
    results = [out.get() for _ in procs]
    server_cpu = cpu_seconds(coordinator) - server_cpu
    for p in procs:
        p.join()
    accepted = sum(r[0] for r in results)
    wall = max(r[1] for r in results)
    requests = clients * per_client
    return (accepted / wall, 1000 * sum(r[2] for r in results) / requests,
            1000 * server_cpu / requests)


def wait_until_full(stack: Stack, gpus: int, timeout: float = 120) -> None:
    """Until `gpus` jobs are RUNNING and none is STARTING: the launches are over."""
    from scheduler.client import Client

    client = Client(stack.home / "labq.sock")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [job["state"] for job in client.request("GET", "/v1/jobs?all=1")
                  if job["state"] in ("STARTING", "RUNNING")]
        if states.count("RUNNING") >= gpus and "STARTING" not in states:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the first {gpus} jobs did not all start within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-client", type=int, default=1000)
    parser.add_argument("--array", type=int, default=100)
    parser.add_argument("--client", choices=("raw", "labq"), default="raw")
    args = parser.parse_args()
    stack = Stack("1x4:A100-80GB").start()
    try:
        cold = run(stack, args.client, 4, args.per_client, 1)
        wait_until_full(stack, 4)
        single = run(stack, args.client, 4, args.per_client, 1)
        arrays = run(stack, args.client, 4, max(1, args.per_client // args.array), args.array)
    finally:
        stack.stop()
    print(f"machine: {machine()}; client: {args.client}")
    for label, (rate, client_cpu, server_cpu) in (
            ("1 job per request, first jobs launching", cold),
            ("1 job per request, cluster full", single),
            (f"arrays of {args.array}, cluster full", arrays)):
        print(f"4 clients, {label:<40}: {rate:>7,.0f} jobs accepted/s  (CPU per request: "
              f"coordinator {server_cpu:.2f} ms, client {client_cpu:.2f} ms)")

if __name__ == "__main__":
    main()
