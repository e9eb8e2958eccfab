"""`labq eff ID` (seff): what an ended job used of what it was given: wall time against its
limit, GPU time, CPU time and CPU efficiency, peak memory, as its node measured them (from the
store, or from the history once the job has left it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from scheduler.cli.common import call, plain, print_json
from scheduler.cli.errors import LabqCommand
from scheduler.cli.histfmt import clock, elapsed, size


def cpus_given(job: dict[str, Any], nodes: list[dict[str, Any]] | None) -> tuple[int | None,
                                                                                str]:
    """The CPUs the job had on all its nodes, and where that figure comes from: what it
    asked (`cpus` per node, or `cpus_per_gpu`), else its node's share of the node's CPUs (by
    its GPUs there), else None (not known)."""
    count = max(1, int(job.get("nodes") or 1))
    per_node_gpus = int(job.get("gpus") or 0) // count
    if int(job.get("cpus") or 0) > 0:
        return int(job["cpus"]) * count, "asked"
    if int(job.get("cpus_per_gpu") or 0) > 0:
        return int(job["cpus_per_gpu"]) * per_node_gpus * count, "asked per GPU"
    node = next((n for n in nodes or [] if n.get("name") == job.get("node")), None)
    if node and int(node.get("cpus") or 0) > 0 and int(node.get("gpus_total") or 0) > 0:
        share = int(node["cpus"]) * per_node_gpus // int(node["gpus_total"])
        return max(1, share) * count, f"its share of {plain(node['name'])}'s cores"
    return None, ""


def efficiency(job: dict[str, Any], nodes: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The figures `labq eff` prints, None where not known."""
    wall = elapsed(job)
    cpus, source = cpus_given(job, nodes)
    cpu_s = job.get("cpu_seconds")
    limit = job.get("time_limit_s")
    return {
        "id": job["id"], "user": job["user"], "account": job["account"],
        "state": job["state"], "exit_code": job.get("exit_code"), "node": job.get("node"),
        "nodes": job.get("nodes") or 1, "gpus": job.get("gpus"), "gpu_type": job.get("gpu_type"),
        "wall_seconds": wall, "time_limit_s": limit,
        "time_used": wall / limit if wall is not None and limit else None,
        "gpu_seconds": job.get("gpu_seconds"), "billed": job.get("billed"),
        "cpu_seconds": cpu_s, "cpus": cpus, "cpus_from": source,
        "cpu_efficiency": (float(cpu_s) / (wall * cpus) if cpu_s is not None and wall
                           and cpus else None),
        "memory_peak_bytes": job.get("memory_peak_bytes"),
        "measured": cpu_s is not None or job.get("memory_peak_bytes") is not None,
        "private": bool(job.get("private")), "history": bool(job.get("history")),
    }


def _span(seconds: float) -> str:
    """A duration as sacct shows it, and in seconds where that says too little."""
    return clock(seconds) + (f" ({float(seconds):.2f} s)" if float(seconds) < 60 else "")


def eff_lines(fig: dict[str, Any]) -> list[str]:
    where = plain(fig["node"]) if fig["node"] else "no node"
    unmeasured = ("hidden (private_data)" if fig["private"] else
                  f"not measured on this node ({where})" if fig["node"] else "-")
    lines = [f"Job ID: {plain(fig['id'])}" + (" (from the history)" if fig["history"] else ""),
             f"User/Account: {plain(fig['user'])}/{plain(fig['account'])}",
             f"State: {fig['state']}" + (f" (exit code {fig['exit_code']})"
                                         if fig["exit_code"] is not None else ""),
             f"Nodes: {fig['nodes']} ({where})",
             f"GPUs: {fig['gpus']}" + (f" ({plain(fig['gpu_type'])})" if fig["gpu_type"] else "")]
    wall = fig["wall_seconds"]
    if wall is None:
        lines.append("Wall time: - (it never ran)")
    else:
        used = f", {fig['time_used']:.0%} of its limit {clock(fig['time_limit_s'])}" \
            if fig["time_used"] is not None else ""
        lines.append(f"Wall time: {_span(wall)}{used}")
    if fig["gpu_seconds"] is None:
        lines.append(f"GPU time: {unmeasured if fig['private'] else '-'}")
    else:
        lines.append(f"GPU time: {float(fig['gpu_seconds']) / 3600:.2f} GPU-hours (billed "
                     f"{float(fig['billed'] or 0) / 3600:.2f})")
    if fig["cpu_seconds"] is None:
        lines += [f"CPU time: {unmeasured}", "CPU efficiency: n/a"]
    else:
        lines.append(f"CPU time: {_span(fig['cpu_seconds'])} (measured on {where})")
        if fig["cpu_efficiency"] is None:
            lines.append("CPU efficiency: n/a (" + ("it never ran" if not wall else
                         "how many CPUs it had is not known") + ")")
        else:
            lines.append(f"CPU efficiency: {fig['cpu_efficiency']:.1%} of "
                         f"{clock(wall * fig['cpus'])} core-walltime ({fig['cpus']} "
                         f"CPU{'s' if fig['cpus'] != 1 else ''}, {fig['cpus_from']})")
    peak = fig["memory_peak_bytes"]
    lines.append(f"Peak memory: {unmeasured}" if peak is None else
                 f"Peak memory: {size(peak)}B ({int(peak):,} bytes)")
    return lines


@click.command(cls=LabqCommand)
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="the figures as JSON")
def eff(job_id: str, as_json: bool) -> None:
    """What an ended job used (seff): wall time, GPU time, CPU time and efficiency, peak
    memory, as its node measured them; from the history once it has left the store."""
    job = call("GET", f"/v1/history/{quote(job_id, safe='')}")
    needs_node = not job.get("cpus") and not job.get("cpus_per_gpu") and job.get("node")
    nodes = call("GET", "/v1/nodes") if needs_node and job.get("cpu_seconds") is not None \
        else None
    fig = efficiency(job, nodes)
    if as_json:
        print_json(fig)
        return
    for line in eff_lines(fig):
        click.echo(line)
