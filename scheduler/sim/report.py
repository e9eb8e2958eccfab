"""What a replay writes: ``jobs.csv`` (one row per run) and ``summary.json``."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from scheduler.sim.engine import SimResult

JOB_COLUMNS = ("job_id", "tenant", "user", "gpus", "submit", "start", "end", "node",
               "gpu_indices")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def jain(values: list[float]) -> float:
    """Jain's index (sum x)^2 / (n sum x^2): 1 is perfectly even; 1.0 for no values."""
    square = sum(x * x for x in values)
    return 1.0 if not values or square == 0 else sum(values) ** 2 / (len(values) * square)


def summarize(result: SimResult, window_s: float = 3600.0) -> dict[str, Any]:
    """Waits (first start - submit), JCT (final end - submit), utilization, fairness.

    Jain's index: per window of `window_s`, each tenant with work in the system (pending or
    running) gets x = GPU-seconds received / its entitled GPU-seconds (capacity × window /
    tenants with work); the index is averaged over windows that have any such tenant.
    """
    first_start: dict[str, float] = {}
    last_end: dict[str, float] = {}
    for run in result.runs:
        jid = run.job.id
        first_start[jid] = min(first_start.get(jid, math.inf), run.start)
        if not run.preempted:
            last_end[jid] = run.end
    jobs = [j for j in result.jobs if j.id in last_end]
    waits = [first_start[j.id] - j.submit for j in jobs]
    jcts = [last_end[j.id] - j.submit for j in jobs]
    origin = min((j.submit for j in result.jobs), default=0.0)
    makespan = max(last_end.values(), default=origin) - origin
    capacity = result.cluster.gpus
    used = sum(r.job.gpus * (r.end - r.start) for r in result.runs)
    return {
        "policy": result.policy,
        "cluster": {"nodes": result.cluster.nodes, "gpus_per_node": result.cluster.gpus_per_node,
                    "model": result.cluster.model},
        "jobs": len(result.jobs), "jobs_finished": len(jobs),
        "jobs_skipped_too_large": len(result.skipped),
        "runs": len(result.runs),
        "preemptions": sum(1 for r in result.runs if r.preempted),
        "wait_avg_s": sum(waits) / len(waits) if waits else 0.0,
        "wait_p50_s": percentile(waits, 50), "wait_p99_s": percentile(waits, 99),
        "jct_avg_s": sum(jcts) / len(jcts) if jcts else 0.0,
        "jct_p99_s": percentile(jcts, 99),
        "makespan_s": makespan,
        "gpu_utilization": used / (capacity * makespan) if makespan > 0 else 0.0,
        "jain_index": _windowed_jain(result, window_s, first_start, last_end),
        "jain_window_s": window_s,
        "sim_wall_s": result.wall_s,
        "policy_calls": result.policy_calls,
    }


def _windowed_jain(result: SimResult, window_s: float, first_start: dict[str, float],
                   last_end: dict[str, float]) -> float:
    if not result.runs:
        return 1.0
    end = max(r.end for r in result.runs)
    windows = max(1, math.ceil(end / window_s))
    received: dict[str, list[float]] = defaultdict(lambda: [0.0] * windows)
    active: dict[str, list[int]] = defaultdict(lambda: [0] * (windows + 1))  # difference array
    for run in result.runs:
        got = received[run.job.account]
        w = int(run.start // window_s)
        while w < windows and w * window_s < run.end:
            lo, hi = max(run.start, w * window_s), min(run.end, (w + 1) * window_s)
            got[w] += run.job.gpus * max(0.0, hi - lo)
            w += 1
    for job in result.jobs:
        if job.id not in last_end:
            continue
        lo = min(windows - 1, int(job.submit // window_s))
        hi = min(windows - 1, int(max(job.submit, last_end[job.id] - 1e-9) // window_s))
        marks = active[job.account]
        marks[lo] += 1
        marks[hi + 1] -= 1
    running = {t: 0 for t in active}
    scores = []
    for w in range(windows):
        present = []
        for tenant, marks in active.items():
            running[tenant] += marks[w]
            if running[tenant] > 0:
                present.append(tenant)
        if not present:
            continue
        entitled = result.cluster.gpus * window_s / len(present)
        scores.append(jain([received[t][w] / entitled if t in received else 0.0
                            for t in present]))
    return sum(scores) / len(scores) if scores else 1.0


def write_jobs_csv(result: SimResult, path: Path) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(JOB_COLUMNS)
        for run in sorted(result.runs, key=lambda r: (r.start, len(r.job.id), r.job.id)):
            job = run.job
            out.writerow([job.id, job.account, job.user, job.gpus, _num(job.submit),
                          _num(run.start), _num(run.end), run.node,
                          ";".join(str(i) for i in run.indices)])


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:.3f}"


def write_outputs(result: SimResult, out_dir: str | Path) -> dict[str, Any]:
    """Write DIR/jobs.csv and DIR/summary.json; returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jobs_csv(result, out / "jobs.csv")
    summary = summarize(result)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
