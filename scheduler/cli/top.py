"""`labq top`: a live terminal view of the cluster, for a login node without Grafana.

Nodes and their GPUs (utilization, memory, which job and user hold each, and the allocated GPUs
the coordinator reports idle: `idle` and `idle_s` on a GPU of `/v1/nodes`), running jobs, the
head of the queue with the reasons each job waits, and the caller's usage, fair share and
budgets. It reads only the coordinator's API (`/v1/nodes`, `/v1/jobs?all=1`,
`/v1/priority?all=1`, `/v1/quota`): `fetch` gathers one `TopData`, and `render` turns it into a
rich renderable with no I/O, so a frame can be tested from hand-built data. Registered on `labq`
with `main.add_command`. Everything a user typed (names, accounts, reasons) goes through
`markup` or `plain`: shown as typed, never read as rich markup or terminal codes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from scheduler.cli.common import markup, plain
from scheduler.client import Client, ClientError
from scheduler.timeparse import format_duration
from scheduler.wire import JobJson

HOLDING = ("STARTING", "RUNNING", "PREEMPTED")  # states whose jobs hold GPUs
WAITING = ("PENDING", "HELD")
GIB = 2**30


@dataclass
class TopData:
    """One reading of the API, in the shapes it answers with."""

    nodes: list[dict[str, Any]]
    jobs: list[JobJson]  # active and waiting jobs of every user (scheduler.wire)
    quota: dict[str, Any]  # the caller's
    priority_order: list[str] = field(default_factory=list)  # pending job ids, first = next
    fetched_at: float = 0.0


def fetch(client: Client, clock: Callable[[], float] = time.time) -> TopData:
    """Read everything a frame shows. Raises `ClientError` when the coordinator cannot answer."""
    nodes = client.request("GET", "/v1/nodes")
    jobs = client.request("GET", "/v1/jobs?all=1")
    quota = client.request("GET", "/v1/quota")
    try:
        order = [row["id"] for row in client.request("GET", "/v1/priority?all=1")]
    except ClientError:
        order = []  # the queue head then falls back to submit order
    return TopData(nodes=nodes, jobs=jobs, quota=quota, priority_order=order,
                   fetched_at=clock())


# ---------------------------------------------------------------------------- rendering


def _percent_bar(ratio: float | None, width: int = 10) -> Any:
    from rich.text import Text

    if ratio is None:
        return Text("-", style="dim")
    ratio = min(1.0, max(0.0, ratio))
    filled = round(ratio * width)
    style = "green" if ratio >= 0.5 else "yellow" if ratio >= 0.1 else "red"
    text = Text("█" * filled, style=style)
    text.append("·" * (width - filled), style="dim")
    text.append(f" {ratio * 100:3.0f}%")
    return text


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.0f}"


def _nodes_table(data: TopData, jobs_by_id: dict[str, JobJson], now: float) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="nodes and GPUs", title_justify="left", header_style="bold",
                  box=None, padding=(0, 1), expand=False)
    for col in ("NODE", "STATE", "GPU", "MODEL", "UTIL", "MEM GiB", "JOB", "USER", "NOTE"):
        table.add_column(col, no_wrap=col not in ("NOTE",))
    for node in sorted(data.nodes, key=lambda n: n["name"]):
        beat = now - float(node.get("last_heartbeat") or 0)
        state = Text(plain(node["state"]), style="green" if node["state"] == "UP" else "bold red")
        if node.get("simulated"):
            state.append(" sim", style="dim")
        if node["state"] == "UP" and beat > 10:
            state.append(f" ({format_duration(beat)} ago)", style="yellow")
        gpus = node.get("gpus") or []
        if not gpus:
            table.add_row(markup(node["name"]), state, "-", markup(node.get("gpu_model") or "-"),
                          "", "", "", "", "no GPUs reported")
        for position, gpu in enumerate(sorted(gpus, key=lambda g: g["index"])):
            job_id = node.get("allocations", {}).get(str(gpu["index"]))
            job = jobs_by_id.get(job_id) if job_id else None
            notes = []
            if gpu.get("idle"):  # allocated, below the idle threshold long enough (/v1/nodes)
                notes.append(Text(f"IDLE {format_duration(gpu.get('idle_s'))}",
                                  style="bold red"))
            foreign = [p for p in gpu.get("processes", []) if not p.get("labq_job")]
            if foreign:
                notes.append(Text(f"{len(foreign)} process(es) not from labq", style="yellow"))
            if gpu.get("health", "OK") != "OK":
                notes.append(Text(f"health {plain(gpu['health'])}", style="bold red"))
            table.add_row(
                markup(node["name"]) if position == 0 else "", state if position == 0 else "",
                str(gpu["index"]), markup(gpu["model"]), _percent_bar(gpu.get("utilization")),
                f"{_gib(gpu.get('memory_used_bytes'))}/{_gib(gpu.get('memory_total_bytes'))}",
                markup(job_id) if job_id else Text("free", style="dim"),
                markup(job["user"]) if job else "", Text(", ").join(notes))
    return table


def _running_table(running: list[JobJson], now: float) -> Any:
    from rich.table import Table

    table = Table(title=f"running jobs ({len(running)})", title_justify="left",
                  header_style="bold", box=None, padding=(0, 1))
    for col in ("JOBID", "NAME", "USER", "ACCOUNT", "STATE", "GPUS", "NODE:GPUS", "TIME",
                "LIMIT"):
        table.add_column(col, no_wrap=True)
    for job in sorted(running, key=lambda j: j.get("started_at") or j["submitted_at"]):
        where = f"{job['node']}:{','.join(str(i) for i in job['gpu_indices'])}" \
            if job.get("node") else "-"
        started = job.get("started_at")
        ran = now - started if started else None
        cells = [job["id"], job.get("name") or "-", job["user"], job["account"], job["state"],
                 str(job["gpus"]), where]
        table.add_row(*(markup(c) for c in cells), format_duration(ran),
                      format_duration(job["time_limit_s"]))
    return table


def queue_head(data: TopData) -> list[JobJson]:
    """Waiting jobs, next first: pending ones by priority, then held ones by age."""
    waiting = [j for j in data.jobs if j["state"] in WAITING]
    rank = {job_id: i for i, job_id in enumerate(data.priority_order)}
    return sorted(waiting, key=lambda j: (j["state"] != "PENDING",
                                          rank.get(j["id"], len(rank)), j["submitted_at"]))


def _queue_table(waiting: list[JobJson], now: float, rows: int) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"queue ({len(waiting)} waiting)", title_justify="left",
                  header_style="bold", box=None, padding=(0, 1))
    for col in ("#", "JOBID", "USER", "ACCOUNT", "STATE", "GPUS", "WAITED", "REASON"):
        table.add_column(col, no_wrap=col != "REASON", overflow="fold")
    for place, job in enumerate(waiting[:rows], start=1):
        gpu_type = job.get("gpu_type")
        gpus = f"{job['gpus']}{':' + gpu_type if gpu_type else ''}"
        reasons = job.get("reasons") or ([{"code": job["reason"], "detail": ""}]
                                         if job.get("reason") else [])
        reason = Text()
        for i, r in enumerate(reasons):
            reason.append("; " if i else "")
            reason.append(plain(r["code"]), style="bold")
            reason.append(f": {plain(r['detail'])}" if r.get("detail") else "")
        waited = now - float(job.get("queued_at") or job["submitted_at"])
        cells = [job["id"], job["user"], job["account"], job["state"], gpus]
        table.add_row(str(place), *(markup(c) for c in cells), format_duration(waited), reason)
    if len(waiting) > rows:
        table.add_row("", Text(f"… and {len(waiting) - rows} more", style="dim"))
    return table


def _quota_panel(quota: dict[str, Any]) -> Any:
    from rich.text import Text

    text = Text()
    text.append(plain(quota["user"]), style="bold")
    text.append(f": {quota['gpu_seconds'] / 3600:.2f} GPU-hours used, "
                f"{quota['billed_units'] / 3600:.2f} billed; running {quota['running_jobs']} "
                f"job(s) on {quota['running_gpus']} GPU(s), {quota['pending_jobs']} waiting")
    for row in quota.get("shares", []):
        if row.get("user") == quota["user"]:
            text.append(f"\n  account {plain(row['account'])}: fair share "
                        f"{row['fairshare']:.3f}, "
                        f"effective usage {row['effective_usage']:.3f}, "
                        f"normalized shares {row['norm_shares']:.3f}")
    for budget in quota.get("budgets", []):
        until = time.strftime("%Y-%m-%d", time.gmtime(budget["period_end"] - 1))
        style = "bold red" if budget.get("warning") == "100%" else \
            "yellow" if budget.get("warning") else ""
        text.append(f"\n  budget {budget['scope']} {plain(budget['name'])}: ", style=style)
        text.append(f"{budget['left_hours']:.1f} of {budget['limit_hours']:.1f} billed "
                    f"GPU-hours left ({budget['period']} to {until})"
                    + (f", {budget['warning']} used" if budget.get("warning") else ""),
                    style=style)
    if not quota.get("budgets"):
        text.append("\n  no budget applies", style="dim")
    return text


def render(data: TopData | None, now: float, *, error: str | None = None,
           interval: float | None = None, queue_rows: int = 10) -> Any:
    """One frame: a pure function of what the API answered (or the error it gave) and `now`."""
    from rich.console import Group
    from rich.rule import Rule
    from rich.text import Text

    header = Text("labq top", style="bold")
    header.append(f"  {time.strftime('%H:%M:%S', time.localtime(now))}")
    if interval:
        header.append(f"  every {interval:g}s, Ctrl-C quits", style="dim")
    parts: list[Any] = [header]
    if error:
        line = Text(f"coordinator not reachable: {error}", style="bold red")
        if interval:
            line.append(f" (retrying every {interval:g}s)")
        if data is not None:
            line.append(f"; showing what it said {format_duration(now - data.fetched_at)} ago")
        parts.append(line)
    if data is None:
        return Group(*parts)
    jobs_by_id = {j["id"]: j for j in data.jobs}
    running = [j for j in data.jobs if j["state"] in HOLDING]
    waiting = queue_head(data)
    total = sum(int(n.get("gpus_total") or 0) for n in data.nodes)
    allocated = sum(int(n.get("gpus_allocated") or 0) for n in data.nodes)
    up = sum(1 for n in data.nodes if n["state"] == "UP")
    idle = sum(1 for n in data.nodes for g in n.get("gpus") or [] if g.get("idle"))
    header.append(f"  {up}/{len(data.nodes)} nodes up, {allocated}/{total} GPUs allocated, "
                  f"{len(running)} running, {len(waiting)} waiting")
    if idle:
        header.append(f", {idle} allocated GPU(s) idle", style="bold red")
    parts += [_nodes_table(data, jobs_by_id, now), Rule(style="dim"),
              _running_table(running, now), Rule(style="dim"),
              _queue_table(waiting, now, queue_rows), Rule(style="dim"),
              _quota_panel(data.quota)]
    return Group(*parts)


# ---------------------------------------------------------------------------- the command


def _client() -> Client:
    from scheduler.cli.common import settings

    return Client(settings().socket, timeout=10.0)


def run_live(read: Callable[[], TopData], interval: float, queue_rows: int,
             console: Any = None, max_frames: int | None = None) -> None:
    """Redraw every `interval` seconds until Ctrl-C (or `max_frames`); a failed read shows why,
    keeps the last good data on screen, and is retried at the next refresh."""
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    data: TopData | None = None
    with Live(console=console, auto_refresh=False, screen=console.is_terminal,
              redirect_stdout=False) as live:
        frames = 0
        while max_frames is None or frames < max_frames:
            frames += 1
            error = None
            try:
                data = read()
            except ClientError as exc:
                error = str(exc)
            live.update(render(data, time.time(), error=error, interval=interval,
                               queue_rows=queue_rows), refresh=True)
            if max_frames is None or frames < max_frames:
                time.sleep(interval)


@click.command("top")
@click.option("--interval", "-n", type=click.FloatRange(min=0.5), default=2.0,
              show_default=True, help="seconds between refreshes")
@click.option("--once", is_flag=True, help="print one frame and exit (for scripts)")
@click.option("--rows", type=click.IntRange(min=1), default=10, show_default=True,
              help="waiting jobs shown at the head of the queue")
def top(interval: float, once: bool, rows: int) -> None:
    """A live view of nodes, GPUs, running jobs, the queue and your quota, like top."""
    from rich.console import Console

    from scheduler.cli.common import fail

    client = _client()
    if once:
        try:
            data = fetch(client)
        except ClientError as exc:
            fail(str(exc))
        console = Console()
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(width=200)  # piped: no terminal to fit, keep rows on one line
        console.print(render(data, time.time(), queue_rows=rows))
        return
    try:
        run_live(lambda: fetch(client), interval, rows)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
