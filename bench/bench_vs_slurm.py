"""Accepted submissions per second, labq (durable submits) beside `sbatch`, in one run; and
what the durable submit costs in the store alone.

Starts a local Slurm 22.05 peer (bench/slurm_peer/start.sh, as bench_latency.py; run as root)
and its own `labq up --simulate 1x4:A100-80GB`, whose embedded Valkey keeps an append-only file
(`appendonly yes`, `appendfsync always`) and whose every submit waits for `WAITAOF` (its
record fsynced) before it is acknowledged. Then, round after round so both see the same
machine:

- `sbatch`: 4 shells at once, each running `sbatch --parsable --gpus=1 --wrap 'sleep 600'`
  one after another as the same unprivileged user (a loop over submissions, as a student's
  script does); a submission counts when sbatch printed its id;
- labq through its API: 4 clients at once, each one job per `POST /v1/jobs` over a keep-alive
  connection (bench_throughput.py's raw client), as that same user (no admin: its caps are
  checked, as a student's script's), the answer read and decoded;
- labq through its CLI: 4 shells at once, each running `labq submit -- sleep 600` one after
  another as that user (a Python process started per submission).

Each round's jobs are cancelled afterwards (scancel / labq cancel), and the next is measured
only once both have ended every job and their daemons are idle (`settle`): else one side's
round would pay for the other's clean-up. Each side starts its first jobs during its round
(Slurm's slurmd, labq's agent), so a round should be long enough to be mostly submissions
(--per-client 1000: about 30 s of sbatch). Then, in the store alone
(Store.submit from 8 concurrent clients on a scratch valkey-server): submissions per second
with no AOF, with AOF `always` + WAITAOF as labq runs it, and with AOF `everysec` + WAITAOF,
and one client's submit latency with each.

Usage: python bench/bench_vs_slurm.py [--rounds 3] [--per-client 1000] [--cli-per-client 20]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import pwd
import shutil
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from bench_throughput import cpu_seconds
from bench_throughput import run as labq_api_rate
from common import machine, scratch_valkey
from stack import JOB_USERS, LABQ, Stack

PEER = Path(__file__).resolve().parent / "slurm_peer" / "start.sh"
CLIENTS = 4
STUDENT = JOB_USERS[0]
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


def _shell_loop(argv: list[str], user: str, cwd: str, env: dict[str, str], count: int,
                start_at: float, out: mp.Queue) -> None:
    """Run `argv` `count` times, one after another, as `user`; (accepted, seconds)."""
    while time.time() < start_at:
        time.sleep(0.001)
    began, accepted = time.perf_counter(), 0
    for _ in range(count):
        done = subprocess.run([RUNUSER, "-u", user, "--", *argv], capture_output=True,
                              text=True, cwd=cwd, env=env)
        accepted += done.returncode == 0 and done.stdout.strip() != ""
    out.put((accepted, time.perf_counter() - began))


def shells_rate(argv: list[str], user: str, cwd: str, env: dict[str, str], count: int) -> float:
    """Submissions accepted per second from CLIENTS shells at once, `count` each."""
    out: mp.Queue = mp.Queue()
    start_at = time.time() + 0.5
    procs = [mp.Process(target=_shell_loop, args=(argv, user, cwd, env, count, start_at, out))
             for _ in range(CLIENTS)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(r[0] for r in results) / max(r[1] for r in results)


def settle(stack: Stack, user: str, timeout: float = 120) -> float:
    """Wait until neither Slurm nor labq holds a job of `user` (what a round's cancel left to
    clean up: slurmctld ending its jobs, labq's coordinator ending its own) and their daemons
    are idle for a second, so that no round is measured while the other side still works on
    the last one; the seconds waited."""
    began = time.monotonic()
    deadline = began + timeout
    daemons = stack.pids("scheduler.cli")
    slurm = [int(p) for p in subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True,
                                            text=True).stdout.split()]
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-u", user], capture_output=True,
                                text=True).stdout.strip()
        active = stack.labq("queue", "-u", user, "--json", check=False,
                            as_root=True).stdout.count('"id"')
        before = sum(cpu_seconds(p) for p in daemons + slurm)
        time.sleep(1.0)
        busy = sum(cpu_seconds(p) for p in daemons + slurm) - before
        if not queued and not active and busy < 0.05:
            break
    return time.monotonic() - began


def store_rates(appendonly: bool, fsync: str = "always", submits: int = 2000,
                clients: int = 8) -> tuple[float, float]:
    """(submissions/s from `clients` concurrent Store.submit callers, one caller's median
    submit latency in ms) on a scratch store with or without an AOF (WAITAOF when with)."""
    from scheduler.model import JobSpec
    from scheduler.store import Store

    proc, url = scratch_valkey(appendonly=appendonly, fsync=fsync)

    async def measure() -> tuple[float, float]:
        store = Store.from_url(url, f"bench{uuid.uuid4().hex[:6]}:")
        spec = JobSpec(user="alice", account="lab", command=["sleep", "600"])
        try:
            async def one_client(n: int) -> None:
                for _ in range(n):
                    await store.submit([spec], uuid.uuid4().hex, time.time())

            await one_client(20)  # the first submit finds out whether there is an AOF
            began = time.perf_counter()
            await asyncio.gather(*(one_client(submits // clients) for _ in range(clients)))
            rate = submits / (time.perf_counter() - began)
            latencies = []
            for _ in range(30):
                t0 = time.perf_counter()
                await store.submit([spec], uuid.uuid4().hex, time.time())
                latencies.append(1000 * (time.perf_counter() - t0))
            return rate, statistics.median(latencies)
        finally:
            await store.close()

    try:
        return asyncio.run(measure())
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-client", type=int, default=1000, help="sbatch and API submits")
    parser.add_argument("--cli-per-client", type=int, default=20, help="`labq submit` runs")
    args = parser.parse_args()
    subprocess.run(["bash", str(PEER)], check=True, capture_output=True)
    # caps far above the rounds' submissions: checked at each submit, never reached
    stack = Stack("1x4:A100-80GB", LABQ_MAX_PENDING_JOBS="1000000",
                  LABQ_MAX_STORED_JOBS_PER_USER="1000000").start()
    # every submitter is one student, no admin of the stack: its caps are checked
    user, workdir = STUDENT, str(stack.workdir)
    env = {"PATH": "/usr/bin:/bin", "HOME": pwd.getpwnam(user).pw_dir, "USER": user}
    sbatch = ["sbatch", "--parsable", "--gpus=1", "-D", workdir, "-o", "/dev/null",
              "--wrap", "sleep 600"]
    rows: list[tuple[float, float, float]] = []
    try:
        for _ in range(args.rounds):
            settled = settle(stack, user)
            slurm = shells_rate(sbatch, user, workdir, env, args.per_client)
            subprocess.run(["scancel", "-u", user], check=False)
            settled += settle(stack, user)
            api, _, _ = labq_api_rate(stack, "raw", CLIENTS, args.per_client, 1, student=user)
            stack.labq("cancel", "-u", user, check=False, as_root=True)
            settled += settle(stack, user)
            cli = shells_rate([*LABQ, "submit", "--", "sleep", "600"], user, workdir,
                              {**stack.env, **env}, args.cli_per_client)
            stack.labq("cancel", "-u", user, check=False, as_root=True)
            rows.append((slurm, api, cli))
            print(f"round {len(rows)}: waited {settled:.0f} s in all for both to settle",
                  flush=True)
    finally:
        stack.stop()
    without = store_rates(appendonly=False)
    durable = store_rates(appendonly=True)
    everysec = store_rates(appendonly=True, fsync="everysec")
    print(f"machine: {machine()}")
    print(f"{CLIENTS} concurrent submitters, {args.rounds} rounds, accepted submissions/s:")
    for i, (slurm, api, cli) in enumerate(rows, 1):
        print(f"  round {i}: sbatch {slurm:7.1f}/s | labq API {api:7.1f}/s "
              f"({api / slurm:5.1f}x) | labq submit CLI {cli:6.1f}/s ({cli / slurm:4.2f}x)")
    print("the store alone, 8 clients (Store.submit): "
          f"no AOF {without[0]:,.0f}/s (one submit {without[1]:.2f} ms) | "
          f"AOF always + WAITAOF {durable[0]:,.0f}/s (one submit {durable[1]:.2f} ms) | "
          f"AOF everysec + WAITAOF {everysec[0]:,.0f}/s (one submit {everysec[1]:.2f} ms)")


if __name__ == "__main__":
    main()
