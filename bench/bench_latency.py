"""submit → RUNNING on an idle cluster for a plain command: labq beside Slurm, in one run.

Starts its own `labq up --simulate 1x4:A100-80GB` and a local Slurm 22.05 peer (Debian's
slurm-wlm with 4 `slurmd` and fake GPUs on loopback, bench/slurm_peer/start.sh; run as root).
Both run the same command (`sleep 2`) on 1 GPU as the same unprivileged user, interleaved so
both see the same machine state. The clock starts when the submit command is typed (`labq
submit` / `sbatch`, each run as that user) and stops when the scheduler says RUNNING (labq: its
API, polled every 20 ms; Slurm: `squeue`, polled every 20 ms).

Usage: python bench/bench_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

from common import machine, summary
from stack import Stack

COMMAND = ["sleep", "2"]
PEER = Path(__file__).resolve().parent / "slurm_peer" / "start.sh"


def labq_submit_to_running(stack: Stack) -> tuple[float, float]:
    """(submit → RUNNING, `labq submit` wall time), as the stack's user."""
    from scheduler.client import Client

    client = Client(stack.home / "labq.sock")
    began = time.perf_counter()
    job_id = stack.submit("--", *COMMAND)
    wall = time.perf_counter() - began
    while client.request("GET", f"/v1/jobs/{job_id}")["state"] != "RUNNING":
        time.sleep(0.02)
    latency = time.perf_counter() - began
    stack.wait_state(job_id, {"SUCCEEDED"})
    return latency, wall


def slurm_submit_to_running(user: str, workdir: Path) -> tuple[float, float]:
    """(submit → RUNNING, `sbatch` wall time), as `user`."""
    began = time.perf_counter()
    job_id = subprocess.run(
        ["runuser", "-u", user, "--", "sbatch", "--parsable", "--gpus=1", "-D", str(workdir),
         "-o", str(workdir / "slurm-%j.out"), "--wrap", " ".join(COMMAND)],
        capture_output=True, text=True, check=True).stdout.strip()
    wall = time.perf_counter() - began
    while _squeue_state(job_id) != "RUNNING":
        time.sleep(0.02)
    latency = time.perf_counter() - began
    while _squeue_state(job_id) not in ("", "COMPLETED"):
        time.sleep(0.1)
    return latency, wall


def _squeue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                          text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    subprocess.run(["bash", str(PEER)], check=True, capture_output=True)
    stack = Stack("1x4:A100-80GB").start()
    try:
        stack.wait_state(stack.submit("--", "true"), {"SUCCEEDED"})  # first-start costs
        labq, labq_cli, slurm, sbatch = [], [], [], []
        for _ in range(args.runs):
            latency, wall = labq_submit_to_running(stack)
            labq.append(latency)
            labq_cli.append(wall)
            latency, wall = slurm_submit_to_running(stack.user.pw_name, stack.workdir)
            slurm.append(latency)
            sbatch.append(wall)
    finally:
        stack.stop()
    print(f"machine: {machine()}")
    print(f"labq  submit -> RUNNING (s): {summary(labq)}")
    print(f"slurm submit -> RUNNING (s): {summary(slurm)}")
    print(f"`labq submit` wall time (s): {summary(labq_cli)}")
    print(f"`sbatch` wall time (s):      {summary(sbatch)}")


if __name__ == "__main__":
    main()
