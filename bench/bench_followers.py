"""Many `labq logs -f` followers beside the scheduler: submit → RUNNING with none and with N.

Starts its own `labq up --simulate 1x4:A100-80GB`; three jobs run and print a line a second;
N followers (`labq logs -f`, as the stack's unprivileged user, spread over the three jobs)
follow them while a fourth GPU takes one short job after another. Prints submit → RUNNING
(the clock starts when `labq submit` is typed, stops when the API says RUNNING, polled every
20 ms) without followers and with them, and how many requests a second the followers make of
the coordinator (each asks whether its job ended at most every 5 s; the file is read locally).

Usage: python bench/bench_followers.py [--followers N] [--runs R]
"""

from __future__ import annotations

import argparse
import subprocess
import time

from common import machine, summary
from stack import LABQ, Stack

PRINTER = ["bash", "-c", "for i in $(seq 600); do echo line $i; sleep 1; done"]


def submit_to_running(stack: Stack, runs: int) -> list[float]:
    from scheduler.client import Client

    client = Client(stack.home / "labq.sock")
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        job_id = stack.submit("--gpus", "1", "--", "sleep", "0.2")
        while client.request("GET", f"/v1/jobs/{job_id}")["state"] not in (
                "RUNNING", "SUCCEEDED"):
            time.sleep(0.02)
        out.append(time.perf_counter() - began)
        stack.wait_state(job_id, {"SUCCEEDED"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--followers", type=int, default=100)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    stack = Stack("1x4:A100-80GB").start()
    followers: list[subprocess.Popen[bytes]] = []
    try:
        printers = [stack.submit("--gpus", "1", "--", *PRINTER) for _ in range(3)]
        for job_id in printers:
            stack.wait_state(job_id, {"RUNNING"})
        quiet = submit_to_running(stack, args.runs)
        entry = stack.user
        for i in range(args.followers):
            followers.append(subprocess.Popen(
                [*LABQ, "logs", "-f", printers[i % 3]], env={**stack.env, "HOME": entry.pw_dir},
                user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], cwd=stack.workdir,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(10)  # every follower started and following
        alive = sum(1 for f in followers if f.poll() is None)
        busy = submit_to_running(stack, args.runs)
    finally:
        for follower in followers:
            follower.kill()
        stack.stop()
    print(f"machine: {machine()}")
    print(f"followers: {alive} of {args.followers} following; each asks the coordinator "
          f"whether its job ended every 5 s: {alive / 5:.0f} requests/s in all")
    print(f"submit -> RUNNING, no followers (s):    {summary(quiet)}")
    print(f"submit -> RUNNING, {alive} followers (s): {summary(busy)}")


if __name__ == "__main__":
    main()
