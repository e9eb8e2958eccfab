"""What a replay writes: ``jobs.csv`` (one row per run) and ``summary.json``."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from scheduler.sim.budgets import overruns
from scheduler.sim.engine import Run, SimResult

JOB_COLUMNS = ("job_id", "tenant", "user", "gpus", "submit", "start", "end", "node",
               "gpu_indices", "status")
# How a run ended (the `status` column): it ran to its end, was preempted (requeued; another
# row follows), or was stopped at its time limit.
FINISHED, PREEMPTED, TIMEOUT = "finished", "preempted", "timeout"


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

    Waits and JCTs are over the jobs that finished. ``queued_*``: the time a job spent
    waiting in all (JCT - its time running), which counts the waits after each preemption;
    the wait counts only the first. The average wait weighs tenants by how
    many jobs they submit; ``wait_tenant_avg_s`` is the mean over tenants of each tenant's
    average wait, ``wait_tenant_max_s`` the worst tenant's average wait. `jobs_never_started`
    counts the jobs still waiting when the replay ran out of events (held by a budget).
    `budget_overruns` (None without ``--budgets``): the tenants whose charged use (billed
    GPU-seconds of all their runs) exceeded their budget, how many and by how many billed
    GPU-hours in all.

    Fairness over windows of `window_s`: a tenant's *demand* at an instant is the GPUs its
    jobs in the system (running or waiting, from submit to final end) ask for; its *entitled*
    GPUs at that instant are the weighted max-min fair split of the cluster capped at demand
    (water-filling with the tenants' shares, equal by default): a tenant asking for less than
    its share is entitled only to what it asks for, and the rest goes to the others. In each
    window a tenant with any demand is *present*; its entitled share is its entitled
    GPU-seconds over capacity × window, its received share the GPU-seconds it got over the
    same. Jain's index is taken on x = received / entitled per window and averaged over
    windows with any present tenant; ``share_deviation`` is the mean of |received share -
    entitled share| over all (window, present tenant) pairs.

    Finish-time fairness (Themis): ρ = JCT / JCT alone on the tenant's entitled part of the
    cluster (capacity × its shares / all tenants' shares, i.e. 1/N_tenants by default). Alone
    there, a job that fits runs for its duration; a bigger one is taken to slow down in
    proportion (duration × GPUs / entitled GPUs); a job stopped at its time limit counts only
    the time it could run (min(duration, limit)). ρ > 1: the job did worse than with its share.
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
    by_tenant: dict[str, list[float]] = defaultdict(list)
    for job, wait in zip(jobs, waits, strict=True):
        by_tenant[job.account].append(wait)
    tenant_waits = [sum(w) / len(w) for w in by_tenant.values()]
    jcts = [last_end[j.id] - j.submit for j in jobs]
    ran: dict[str, float] = defaultdict(float)
    for run in result.runs:
        ran[run.job.id] += run.end - run.start
    queued = [jct - ran[j.id] for j, jct in zip(jobs, jcts, strict=True)]
    origin = min((j.submit for j in result.jobs), default=0.0)
    makespan = max(last_end.values(), default=origin) - origin
    capacity = result.cluster.gpus
    used = sum(r.job.gpus * (r.end - r.start) for r in result.runs)
    jain_index, deviation = _window_fairness(result, window_s, last_end)
    rhos = finish_time_fairness(result, last_end)
    weight = result.cluster.billing_weight
    return {
        "policy": result.policy,
        "cluster": {"nodes": result.cluster.nodes, "gpus_per_node": result.cluster.gpus_per_node,
                    "model": result.cluster.model},
        "jobs": len(result.jobs), "jobs_finished": len(jobs),
        "jobs_skipped_too_large": len(result.skipped),
        "runs": len(result.runs),
        "preemptions": sum(1 for r in result.runs if r.preempted),
        "jobs_never_started": len(result.never_started),
        "jobs_timed_out": sum(1 for j in jobs if j.duration > j.time_limit),
        "wait_avg_s": sum(waits) / len(waits) if waits else 0.0,
        "wait_p50_s": percentile(waits, 50), "wait_p99_s": percentile(waits, 99),
        "wait_tenant_avg_s": sum(tenant_waits) / len(tenant_waits) if tenant_waits else 0.0,
        "wait_tenant_max_s": max(tenant_waits, default=0.0),
        "queued_avg_s": sum(queued) / len(queued) if queued else 0.0,
        "queued_p99_s": percentile(queued, 99),
        "jct_avg_s": sum(jcts) / len(jcts) if jcts else 0.0,
        "jct_p99_s": percentile(jcts, 99),
        "makespan_s": makespan,
        "gpu_utilization": used / (capacity * makespan) if makespan > 0 else 0.0,
        "jain_index": jain_index,
        "share_deviation": deviation,
        "jain_window_s": window_s,
        "rho_max": max(rhos.values(), default=0.0),
        "rho_frac_above_1": (sum(1 for r in rhos.values() if r > 1 + 1e-9) / len(rhos)
                             if rhos else 0.0),
        "tenant_shares": _tenant_shares(result),
        "budgets_gpu_hours": result.budgets,
        "budget_overruns": overruns(result.budgets, (
            (r.job.account, r.job.gpus * weight * (r.end - r.start)) for r in result.runs)),
        "sim_wall_s": result.wall_s,
        "policy_calls": result.policy_calls,
    }


def _tenant_shares(result: SimResult) -> dict[str, float]:
    return result.tenant_shares or {t: 1.0 for t in sorted({j.account for j in result.jobs})}


def finish_time_fairness(result: SimResult, last_end: dict[str, float] | None = None
                         ) -> dict[str, float]:
    """ρ per finished job (see `summarize`)."""
    if last_end is None:
        last_end = {r.job.id: r.end for r in result.runs if not r.preempted}
    shares = _tenant_shares(result)
    total = sum(shares.values()) or 1.0
    rhos = {}
    for job in result.jobs:
        if job.id not in last_end:
            continue
        entitled_gpus = result.cluster.gpus * shares.get(job.account, 1.0) / total
        alone = min(job.duration, float(job.time_limit)) * max(1.0, job.gpus / entitled_gpus)
        if alone > 0:
            rhos[job.id] = (last_end[job.id] - job.submit) / alone
    return rhos


def waterfill(capacity: float, demands: dict[str, float], weights: dict[str, float]
              ) -> dict[str, float]:
    """Weighted max-min fair split of `capacity` capped at each tenant's demand."""
    alloc = {t: 0.0 for t in demands}
    left = capacity
    # tenants in order of demand per weight: each either gets its demand or the rest is
    # split in proportion to weight among it and those after it
    order = sorted((t for t, d in demands.items() if d > 0),
                   key=lambda t: demands[t] / weights.get(t, 1.0))
    weight_left = sum(weights.get(t, 1.0) for t in order)
    for t in order:
        w = weights.get(t, 1.0)
        alloc[t] = min(demands[t], left * w / weight_left) if weight_left > 0 else 0.0
        left -= alloc[t]
        weight_left -= w
    return alloc


def entitled_gpu_seconds(result: SimResult, window_s: float, windows: int,
                         last_end: dict[str, float]) -> dict[str, list[float]]:
    """Each tenant's entitled GPU-seconds in each window (see `summarize`): water-filling
    over the tenants' demands, integrated between the instants where a demand changes."""
    shares = _tenant_shares(result)
    horizon = windows * window_s
    events: list[tuple[float, str, int]] = []
    for job in result.jobs:
        events.append((job.submit, job.account, job.gpus))
        events.append((last_end.get(job.id, horizon), job.account, -job.gpus))
    events.sort(key=lambda e: e[0])
    entitled: dict[str, list[float]] = defaultdict(lambda: [0.0] * windows)
    demand: dict[str, float] = defaultdict(float)
    capacity = float(result.cluster.gpus)
    i = 0
    while i < len(events):
        t = events[i][0]
        while i < len(events) and events[i][0] == t:
            demand[events[i][1]] += events[i][2]
            i += 1
        if i == len(events):
            break
        until = min(events[i][0], horizon)
        if until <= t:
            continue
        alloc = waterfill(capacity, {k: v for k, v in demand.items() if v > 0}, shares)
        w = int(t // window_s)
        while w < windows and w * window_s < until:
            span = min(until, (w + 1) * window_s) - max(t, w * window_s)
            for tenant, gpus in alloc.items():
                entitled[tenant][w] += gpus * span
            w += 1
    return entitled


def _window_fairness(result: SimResult, window_s: float, last_end: dict[str, float]
                     ) -> tuple[float, float]:
    """(mean Jain's index, share deviation) over windows (see `summarize`)."""
    if not result.runs:
        return 1.0, 0.0
    end = max(r.end for r in result.runs)
    windows = max(1, math.ceil(end / window_s))
    received: dict[str, list[float]] = defaultdict(lambda: [0.0] * windows)
    for run in result.runs:
        got = received[run.job.account]
        w = int(run.start // window_s)
        while w < windows and w * window_s < run.end:
            lo, hi = max(run.start, w * window_s), min(run.end, (w + 1) * window_s)
            got[w] += run.job.gpus * max(0.0, hi - lo)
            w += 1
    entitled = entitled_gpu_seconds(result, window_s, windows, last_end)
    scores: list[float] = []
    deviations: list[float] = []
    window_gpu_s = result.cluster.gpus * window_s
    for w in range(windows):
        xs = []
        for tenant, owed in entitled.items():
            if owed[w] <= 0:
                continue
            share = (received[tenant][w] if tenant in received else 0.0) / window_gpu_s
            xs.append(share / (owed[w] / window_gpu_s))
            deviations.append(abs(share - owed[w] / window_gpu_s))
        if xs:
            scores.append(jain(xs))
    return (sum(scores) / len(scores) if scores else 1.0,
            sum(deviations) / len(deviations) if deviations else 0.0)


def share_series(result: SimResult, bins: int = 200
                 ) -> tuple[list[float], dict[str, list[float]]]:
    """Bin starts (s) and each tenant's share of the cluster's GPUs in each bin."""
    end = max((r.end for r in result.runs), default=0.0)
    width = max(end / bins, 1e-9)
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * bins)
    for run in result.runs:
        got = series[run.job.account]
        b = min(bins - 1, int(run.start // width))
        while b < bins and b * width < run.end:
            lo, hi = max(run.start, b * width), min(run.end, (b + 1) * width)
            got[b] += run.job.gpus * max(0.0, hi - lo) / (result.cluster.gpus * width)
            b += 1
    return [b * width for b in range(bins)], dict(sorted(series.items()))


def job_waits(result: SimResult) -> list[float]:
    """Each finished job's wait (first start - submit)."""
    first: dict[str, float] = {}
    for run in result.runs:
        first[run.job.id] = min(first.get(run.job.id, math.inf), run.start)
    return [first[j.id] - j.submit for j in result.jobs if j.id in first]


def write_plots(results: list[SimResult], out_dir: str | Path) -> list[Path]:
    """PNG plots comparing policies: per-tenant GPU share over time (a panel per policy),
    pending queue length over time, and the CDF of waits. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 2.6 * len(results)), sharex=True,
                             squeeze=False)
    for ax, result in zip(axes[:, 0], results, strict=True):
        times, series = share_series(result)
        hours = [t / 3600 for t in times]
        if series:
            ax.stackplot(hours, *series.values(), labels=list(series), step="post")
        ax.set_ylim(0, 1)
        ax.set_ylabel("GPU share")
        ax.set_title(result.policy, fontsize=10)
    axes[-1, 0].set_xlabel("hours from the start of the replay")
    written.append(_save(plt, fig, out / "share_over_time.png"))

    fig, ax = plt.subplots(figsize=(9, 4))
    for result in results:
        samples = result.queue_samples
        ax.step([t / 3600 for t, _ in samples], [n for _, n in samples], where="post",
                label=result.policy)
    ax.set_xlabel("hours from the start of the replay")
    ax.set_ylabel("pending jobs")
    ax.legend()
    written.append(_save(plt, fig, out / "queue_length.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for result in results:
        waits = sorted(w / 3600 for w in job_waits(result))
        n = len(waits)
        ax.step(waits, [(i + 1) / n for i in range(n)], where="post", label=result.policy)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("wait (hours)")
    ax.set_ylabel("fraction of jobs")
    ax.legend()
    written.append(_save(plt, fig, out / "wait_cdf.png"))
    return written


def write_jobs_csv(result: SimResult, path: Path) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(JOB_COLUMNS)
        for run in sorted(result.runs, key=lambda r: (r.start, len(r.job.id), r.job.id)):
            job = run.job
            out.writerow([job.id, job.account, job.user, job.gpus, _num(job.submit),
                          _num(run.start), _num(run.end), run.node,
                          ";".join(str(i) for i in run.indices), _status(run)])


def _status(run: Run) -> str:
    if run.preempted:
        return PREEMPTED
    return TIMEOUT if run.job.duration > run.job.time_limit else FINISHED


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


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
