"""`labq sim`: replay a trace through the live policy (registered with `main.add_command`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

POLICY_NAMES = ("labq", "labq-fairtree", "slurm-classic", "fifo-backfill", "fifo", "drf",
                "tiresias-las")  # see sim.policies

_ROWS = (("wait_avg_s", "avg wait"), ("wait_p50_s", "p50 wait"), ("wait_p99_s", "p99 wait"),
         ("queued_avg_s", "avg queued"), ("queued_p99_s", "p99 queued"),
         ("wait_tenant_avg_s", "tenant avg wait"), ("wait_tenant_max_s", "worst tenant wait"),
         ("jct_avg_s", "avg JCT"), ("jct_p99_s", "p99 JCT"), ("makespan_s", "makespan"),
         ("gpu_utilization", "GPU util"), ("jain_index", "Jain"),
         ("share_deviation", "share dev"), ("rho_max", "max rho"),
         ("rho_frac_above_1", "rho>1 frac"), ("sim_wall_s", "sim wall s"))


@click.command("sim")
@click.option("--trace", "trace_path", required=True, type=click.Path(path_type=Path),
              help="trace CSV (the Philly table or a generic CSV)")
@click.option("--format", "fmt", type=click.Choice(["philly", "csv"]), default="philly",
              show_default=True)
@click.option("--cluster", "cluster_text", required=True, help="NODESxGPUS[:MODEL], e.g. 8x8")
@click.option("--policy", default="labq", show_default=True,
              help=f"one of {', '.join(POLICY_NAMES)}")
@click.option("--compare", default=None, help="several policies, comma separated: P1,P2,...")
@click.option("--accounts", "accounts_path", type=click.Path(path_type=Path), default=None,
              help="CSV of tenant,shares for the fair-share tree (default: equal shares)")
@click.option("--budgets", "budgets_path", type=click.Path(path_type=Path), default=None,
              help="CSV of tenant,budget in billed GPU-hours for the whole replay; labq holds "
                   "jobs that would overspend, the other policies ignore it (see "
                   "budget_overruns)")
@click.option("--min-duration", type=float, default=60.0, show_default=True,
              help="drop jobs shorter than this many seconds")
@click.option("--window-hours", type=float, default=None,
              help="keep only the busiest window of this many hours")
@click.option("--window", "window_pick", type=click.Choice(["busiest", "contended"]),
              default="busiest", show_default=True,
              help="with --window-hours: the busiest window, or a random contended one drawn "
                   "from --seed (its own jobs would hold at least the cluster's GPUs on "
                   "average over it, and at least 2 tenants submit)")
@click.option("--sample", type=float, default=None, help="keep this fraction of jobs (seeded)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="write DIR/jobs.csv and DIR/summary.json (DIR/POLICY/ with --compare, "
                   "and PNG plots in DIR)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def sim(trace_path: Path, fmt: str, cluster_text: str, policy: str, compare: str | None,
        accounts_path: Path | None, budgets_path: Path | None, min_duration: float,
        window_hours: float | None, window_pick: str, sample: float | None, seed: int,
        out_dir: Path | None, as_json: bool) -> None:
    """Replay a job trace in virtual time through labq's own scheduling policy."""
    # Imported here: `labq submit` must not pay for the simulator's imports.
    from scheduler.sim.budgets import load_budgets
    from scheduler.sim.engine import Cluster, simulate
    from scheduler.sim.policies import get_policy
    from scheduler.sim.report import summarize, write_outputs, write_plots
    from scheduler.sim.trace import TraceError, load_accounts, load_trace

    try:
        cluster = Cluster.parse(cluster_text)
        names = [p.strip() for p in (compare or policy).split(",") if p.strip()]
        policies = [get_policy(n) for n in names]
        shares = load_accounts(accounts_path) if accounts_path is not None else None
        budgets = load_budgets(budgets_path) if budgets_path is not None else None
        jobs = load_trace(trace_path, fmt, min_duration=min_duration,
                          window_hours=window_hours, sample=sample, seed=seed,
                          window_pick=window_pick, capacity_gpus=cluster.gpus)
    except (TraceError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if not jobs:
        raise click.ClickException("no job left after the filters; loosen --min-duration or "
                                   "--window-hours")
    summaries: list[dict[str, Any]] = []
    results = []
    for p in policies:
        result = simulate(jobs, cluster, p, tenant_shares=shares, budgets=budgets)
        if out_dir is not None:
            summaries.append(write_outputs(result, out_dir / p.name if compare else out_dir))
        else:
            summaries.append(summarize(result))
        if compare and out_dir is not None:
            results.append(result)
    if results and out_dir is not None:
        write_plots(results, out_dir)
    if as_json:
        click.echo(json.dumps(summaries if compare else summaries[0], indent=2))
        return
    _table(summaries)


def _table(summaries: list[dict[str, Any]]) -> None:
    header = ["metric"] + [s["policy"] for s in summaries]
    rows = [header]
    for key, label in _ROWS:
        rows.append([label] + [_fmt(key, s[key]) for s in summaries])
    if summaries[0]["budget_overruns"] is not None:
        rows.append(["budget overruns"] + [
            f"{s['budget_overruns']['tenants']} ({s['budget_overruns']['gpu_hours']:.1f} GPU-h)"
            for s in summaries])
        rows.append(["never started"] + [str(s["jobs_never_started"]) for s in summaries])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    skipped = summaries[0]["jobs_skipped_too_large"]
    click.echo(f"{summaries[0]['jobs']} jobs replayed; {skipped} skipped (more GPUs than a node)")


def _fmt(key: str, value: float) -> str:
    if key in ("gpu_utilization", "jain_index", "share_deviation", "rho_max",
               "rho_frac_above_1"):
        return f"{value:.3f}"
    if key == "sim_wall_s":
        return f"{value:.1f}"
    return f"{value / 3600:.2f} h"
