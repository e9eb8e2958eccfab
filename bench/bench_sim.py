"""`labq sim` speed: the full Philly table (jobs >= 60 s, no window) replayed on 8x8, 32x8 and
256x8 GPUs (64 to 2,048), per policy; the target is <= 60 s per replay on a 2-core machine.

Usage: python bench/bench_sim.py [--trace PATH] [--clusters 8x8,32x8,256x8]
                                 [--policies labq,fifo,...] [--approximate]
Prints one line per (cluster, policy): the simulator's wall time (`sim_wall_s`, the replay
alone; loading the trace is timed apart), policy calls, jobs and average wait.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import machine

from scheduler.sim import Cluster, load_philly, simulate
from scheduler.sim.policies import POLICIES, get_policy
from scheduler.sim.report import summarize

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "philly.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--clusters", default="8x8,32x8,256x8")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--approximate", action="store_true",
                        help="fair now's class cut unchecked (simulate(exact=False)): faster, "
                             "not the coordinator's starts")
    args = parser.parse_args()
    if not args.trace.is_file():
        raise SystemExit(f"trace {args.trace} not found: give the Philly table with --trace")
    print(machine())
    began = time.perf_counter()
    jobs = load_philly(args.trace, min_duration=60)
    print(f"loaded {len(jobs)} jobs >= 60 s in {time.perf_counter() - began:.1f} s")
    for text in args.clusters.split(","):
        cluster = Cluster.parse(text)
        for name in args.policies.split(","):
            result = simulate(jobs, cluster, get_policy(name), exact=not args.approximate)
            s = summarize(result)
            verdict = "ok" if result.wall_s <= 60 else "OVER 60 s"
            print(f"{text:>6} ({cluster.gpus:>4} GPUs)  {name:<14} wall {result.wall_s:6.1f} s  "
                  f"[{verdict}]  calls {result.policy_calls:>7}  "
                  f"jobs {s['jobs']}  avg wait {s['wait_avg_s'] / 3600:8.1f} h", flush=True)


if __name__ == "__main__":
    main()
