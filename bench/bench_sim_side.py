"""`labq sim` side by side: the full Philly table (jobs >= 60 s) replayed under each policy by
several copies of the code, one replay at a time, taking turns, each in a process of its own;
prints each replay's CPU seconds (the replay alone, trace loading left out), wall seconds,
policy calls and run hash.

Usage: python bench/bench_sim_side.py CODE [CODE ...] [--policies slurm-classic,drf]
                                      [--cluster 8x8] [--rounds 2] [--trace PATH]
CODE: a folder holding a `scheduler/` package (e.g. `git archive REV scheduler | tar -x -C
DIR`), or `.` for this checkout.

Run hash: SHA-256 over every run, sorted by job id, of
``repr((job id, start, end, node, GPU indices, other nodes, preempted))``, written one after
the other; its first 12 hex digits are the ones `docs/sim-results.md` quotes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "philly.csv"


def run_hash(runs: list[tuple[object, ...]]) -> str:
    """The first 12 hex digits of the run hash (see the module docstring) of `runs`, each
    (job id, start, end, node, indices, rest, preempted)."""
    digest = hashlib.sha256()
    for row in sorted(runs, key=lambda r: str(r[0])):
        digest.update(repr(row).encode())
    return digest.hexdigest()[:12]


def replay(code: str, policy: str, cluster: str, trace: str) -> None:
    """One replay with the `scheduler` package found under `code` (in this process)."""
    sys.path.insert(0, os.path.abspath(code))
    from scheduler.sim import Cluster, load_philly, simulate
    from scheduler.sim.policies import get_policy

    jobs = load_philly(trace, min_duration=60)
    began = time.process_time()
    result = simulate(jobs, Cluster.parse(cluster), get_policy(policy))
    cpu = time.process_time() - began
    rows = [(r.job.id, r.start, r.end, r.node, r.indices, r.rest, r.preempted)
            for r in result.runs]
    print(f"{policy:<14} {code:<24} cpu {cpu:6.2f} s  wall {result.wall_s:6.2f} s  "
          f"calls {result.policy_calls:>6}  runs {len(rows)}  hash {run_hash(rows)}  "
          f"load {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("code", nargs="+")
    parser.add_argument("--policies", default="labq,labq-fairtree,slurm-classic,"
                                              "fifo-backfill,drf")
    parser.add_argument("--cluster", default="8x8")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        replay(args.code[0], args.policies, args.cluster, str(args.trace))
        return
    if not args.trace.is_file():
        raise SystemExit(f"trace {args.trace} not found: give the Philly table with --trace")
    for _ in range(args.rounds):
        for policy in args.policies.split(","):
            for code in args.code:
                subprocess.run([sys.executable, __file__, code, "--one", "--policies", policy,
                                "--cluster", args.cluster, "--trace", str(args.trace)],
                               check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


if __name__ == "__main__":
    main()
