"""submit → RUNNING on an idle cluster, labq beside Ray alone, and `labq submit` wall time.

Starts its own `labq up --simulate 1x4:A100-80GB`. For labq, the clock starts when the `labq
submit` command is typed and stops when `labq show` would say RUNNING (polled on the store every
20 ms). For Ray alone, the same command is submitted with JobSubmissionClient to the same node
and the same kind of pinning, and the clock stops when Ray reports RUNNING.

Usage: python bench/bench_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import Stack, machine, summary

COMMAND = ["sleep", "2"]


def labq_submit_to_running(stack: Stack, runs: int) -> tuple[list[float], list[float]]:
    from scheduler.client import Client

    client = Client(stack.home / "labq.sock")
    latencies, cli_walls = [], []
    for _ in range(runs):
        began = time.perf_counter()
        job_id = subprocess.run([*stack_cmd(), "submit", "--", *COMMAND], env=stack.env,
                                capture_output=True, text=True, check=True).stdout.strip()
        cli_walls.append(time.perf_counter() - began)
        while client.request("GET", f"/v1/jobs/{job_id}")["state"] != "RUNNING":
            time.sleep(0.02)
        latencies.append(time.perf_counter() - began)
        stack.wait_state(job_id, {"SUCCEEDED"})
    return latencies, cli_walls


def ray_submit_to_running(address: str, runs: int) -> list[float]:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    latencies = []
    for _ in range(runs):
        began = time.perf_counter()
        job_id = client.submit_job(
            entrypoint="export CUDA_VISIBLE_DEVICES=0; " + " ".join(COMMAND),
            submission_id=f"ray-{uuid.uuid4().hex[:8]}",
            runtime_env={"env_vars": {"CUDA_VISIBLE_DEVICES": "0"}},
            entrypoint_resources={"labq_gpu_0": 1.0},
            entrypoint_label_selector={"labq-node": "sim-0"},
        )
        while client.get_job_status(job_id).value != "RUNNING":
            time.sleep(0.02)
        latencies.append(time.perf_counter() - began)
        while not client.get_job_status(job_id).is_terminal():
            time.sleep(0.1)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    stack = Stack("1x4:A100-80GB").start()
    try:
        stack.wait_state(stack.submit("--", "true"), {"SUCCEEDED"})  # warm Ray's worker pool
        address = json.loads((stack.home / "run.json").read_text())["ray_address"]
        labq, cli, ray = [], [], []
        for _ in range(args.runs):  # interleaved, so both see the same machine state
            one, wall = labq_submit_to_running(stack, 1)
            labq += one
            cli += wall
            ray += ray_submit_to_running(address, 1)
        bare = []
        for _ in range(args.runs):  # the CLI alone: a submit that is refused by validation
            began = time.perf_counter()
            subprocess.run([*stack_cmd(), "submit", "--gpus", "0", "--", "true"], env=stack.env,
                           capture_output=True)
            bare.append(time.perf_counter() - began)
    finally:
        stack.stop()
    print(f"machine: {machine()}")
    print(f"labq submit -> RUNNING  (s): {summary(labq)}")
    print(f"ray  submit -> RUNNING  (s): {summary(ray)}")
    overhead = sorted(labq)[len(labq) // 2] - sorted(ray)[len(ray) // 2]
    print(f"labq overhead over Ray, median (s): {overhead:.3f}")
    print(f"`labq submit` wall time (s): {summary(cli)}")
    print(f"`labq submit` refused by validation, wall time (s): {summary(bare)}")


def stack_cmd() -> list[str]:
    """The installed `labq` script, as a user runs it."""
    return [str(Path(sys.executable).parent / "labq")]


if __name__ == "__main__":
    main()
