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

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from scheduler.cli.common import Col, Named, fitted_table, out_width, plain
from scheduler.cli.queue_view import where_cell
from scheduler.client import Client, ClientError, list_jobs
from scheduler.model import GPU_HOLDING_STATES, WAITING_STATES, JobState
from scheduler.timeparse import format_duration
from scheduler.wire import JobJson

HOLDING = GPU_HOLDING_STATES  # states whose jobs hold GPUs
WAITING = WAITING_STATES
GIB = 2**30
PIPE_WIDTH = 200  # `--once` into a pipe or file: a width for the rules and words

if TYPE_CHECKING:
    from scheduler.cli.common import Cell


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
    jobs = list_jobs(client, "all=1")
    quota = client.request("GET", "/v1/quota")
    try:
        order = [row["id"] for row in client.request("GET", "/v1/priority?all=1")]
    except ClientError:
        order = []  # the queue head then falls back to submit order
    return TopData(nodes=nodes, jobs=jobs, quota=quota, priority_order=order,
                   fetched_at=clock())


# ---------------------------------------------------------------------------- rendering


def _percent_bar(ratio: float | None, width: int = 10) -> Any:
    """Utilization as a bar of `width` cells and a percentage (just the percentage at 0)."""
    from rich.text import Text

    if ratio is None:
        return Text("-", style="dim")
    ratio = min(1.0, max(0.0, ratio))
    filled = round(ratio * width)
    style = "green" if ratio >= 0.5 else "yellow" if ratio >= 0.1 else "red"
    text = Text("█" * filled, style=style)
    text.append("·" * (width - filled), style="dim")
    text.append(f" {ratio * 100:3.0f}%" if width else f"{ratio * 100:.0f}%",
                style="" if width else style)
    return text


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.0f}"


def _titled(table: Any, title: str) -> Any:
    table.title, table.title_justify, table.title_style = title, "left", "bold"
    return table


NODE_COLS = [Col("NODE", cut=6), Col("STATE"), Col("GPU", right=True), Col("MODEL", cut=5),
             Col("UTIL"), Col("MEM GiB", right=True), Col("JOB"), Col("USER", cut=4),
             Col("NOTE", cut=10)]


def _node_state(node: dict[str, Any], now: float) -> Any:
    from rich.text import Text

    beat = now - float(node.get("last_heartbeat") or 0)
    shown = str(node.get("shown_state") or node["state"])  # DRAINING/DRAINED for a drained node
    style = {"UP": "green", "DRAINING": "yellow", "DRAINED": "yellow"}.get(shown, "bold red")
    state = Text(plain(shown), style=style)
    if node.get("simulated"):
        state.append(" sim", style="dim")
    if node["state"] == "UP" and beat > 10:
        state.append(f" ({format_duration(beat)} ago)", style="yellow")
    return state


def _gpu_notes(gpu: dict[str, Any]) -> Any:
    from rich.text import Text

    notes = []
    if gpu.get("idle"):  # allocated, below the idle threshold long enough (/v1/nodes)
        notes.append(Text(f"IDLE {format_duration(gpu.get('idle_s'))}", style="bold red"))
    if gpu.get("health", "OK") != "OK":
        notes.append(Text(f"health {plain(gpu['health'])}", style="bold red"))
    foreign = [p for p in gpu.get("processes", []) if not p.get("labq_job")]
    if foreign:
        notes.append(Text(f"{len(foreign)} process(es) not from labq", style="yellow"))
    return Text(", ").join(notes)


def _nodes_table(data: TopData, jobs_by_id: dict[str, JobJson], now: float,
                 width: int | None) -> Any:
    from rich.text import Text

    bar = 10 if width is None or width >= 120 else 0
    rows: list[list[Cell]] = []
    for node in sorted(data.nodes, key=lambda n: n["name"]):
        state = _node_state(node, now)
        gpus = node.get("gpus") or []
        if not gpus:
            rows.append([Named(node["name"]), state, "-", Named(node.get("gpu_model") or "-"),
                         "", "", "", "", "no GPUs reported"])
        for position, gpu in enumerate(sorted(gpus, key=lambda g: g["index"])):
            job_id = node.get("allocations", {}).get(str(gpu["index"]))
            job = jobs_by_id.get(job_id) if job_id else None
            rows.append([
                Named(node["name"]) if position == 0 else "",
                state if position == 0 else "", str(gpu["index"]), Named(gpu["model"]),
                _percent_bar(gpu.get("utilization"), bar),
                f"{_gib(gpu.get('memory_used_bytes'))}/{_gib(gpu.get('memory_total_bytes'))}",
                plain(job_id) if job_id else Text("free", style="dim"),
                Named(job["user"]) if job else "", _gpu_notes(gpu)])
    return _titled(fitted_table(NODE_COLS, rows, width)[0], "nodes and GPUs")


RUNNING_COLS = [Col("JOBID"), Col("NAME", cut=6), Col("USER", cut=4),
                Col("ACCOUNT", cut=5, drop=1), Col("STATE"), Col("GPUS"),
                Col("NODE:GPUS", cut=5), Col("TIME", right=True), Col("LIMIT", right=True)]


def _running_table(running: list[JobJson], now: float, width: int | None) -> Any:
    rows: list[list[Cell]] = []
    for job in sorted(running, key=lambda j: j.get("started_at") or j["submitted_at"]):
        where = where_cell(dict(job))  # every node of a job across nodes
        started = job.get("started_at")
        rows.append([plain(job["id"]), Named(job.get("name") or "-"), Named(job["user"]),
                     Named(job["account"]), job["state"], str(job["gpus"]), where,
                     format_duration(now - started if started else None),
                     format_duration(job["time_limit_s"])])
    return _titled(fitted_table(RUNNING_COLS, rows, width)[0], f"running jobs ({len(running)})")


def queue_head(data: TopData) -> list[JobJson]:
    """Waiting jobs, next first: pending ones by priority, then held ones by age."""
    waiting = [j for j in data.jobs if j["state"] in WAITING]
    rank = {job_id: i for i, job_id in enumerate(data.priority_order)}
    return sorted(waiting, key=lambda j: (j["state"] != JobState.PENDING,
                                          rank.get(j["id"], len(rank)), j["submitted_at"]))


QUEUE_COLS = [Col("#", right=True), Col("JOBID"), Col("USER", cut=4),
              Col("ACCOUNT", cut=5, drop=1), Col("STATE"), Col("GPUS", cut=1),
              Col("WAITED", right=True), Col("REASON", cut=10)]


def _reason(job: JobJson) -> Cell:
    """Why it waits: the first code whole, then its words and the other reasons, which may be
    cut."""
    reasons = job.get("reasons") or ([{"code": job["reason"], "detail": ""}]
                                     if job.get("reason") else [])
    if not reasons:
        return ""
    words = [f"{plain(r['code'])}: {plain(r['detail'])}" if r.get("detail")
             else plain(r["code"]) for r in reasons]
    first = plain(reasons[0]["code"])
    return Named("; ".join(words)[len(first):], before=first)


def _queue_table(waiting: list[JobJson], now: float, rows: int, width: int | None) -> Any:
    cells: list[list[Cell]] = []
    for place, job in enumerate(waiting[:rows], start=1):
        gpu_type = job.get("gpu_type")
        gpus: Cell = Named(gpu_type, before=f"{job['gpus']}:") if gpu_type else str(job["gpus"])
        waited = now - float(job.get("queued_at") or job["submitted_at"])
        cells.append([str(place), plain(job["id"]), Named(job["user"]), Named(job["account"]),
                      job["state"], gpus, format_duration(waited), _reason(job)])
    return _titled(fitted_table(QUEUE_COLS, cells, width)[0], f"queue ({len(waiting)} waiting)")


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
           interval: float | None = None, queue_rows: int = 10,
           width: int | None = None) -> Any:
    """One frame: a pure function of what the API answered (or the error it gave) and `now`,
    its tables fitted to `width` cells (None: no limit)."""
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
    summary = Text(f"{up}/{len(data.nodes)} nodes up, {allocated}/{total} GPUs allocated, "
                   f"{len(running)} running, {len(waiting)} waiting")
    if idle:
        summary.append(f", {idle} allocated GPU(s) idle", style="bold red")
    parts += [summary, _nodes_table(data, jobs_by_id, now, width), Rule(style="dim"),
              _running_table(running, now, width), Rule(style="dim"),
              _queue_table(waiting, now, queue_rows, width)]
    if len(waiting) > queue_rows:
        parts.append(Text(f"… and {len(waiting) - queue_rows} more", style="dim"))
    parts += [Rule(style="dim"), _quota_panel(data.quota)]
    return Group(*parts)


# ---------------------------------------------------------------------------- the command


def _client() -> Client:
    from scheduler.cli.common import client

    return client(timeout=10.0)


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
                               queue_rows=queue_rows, width=console.width), refresh=True)
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
        width = out_width() or PIPE_WIDTH  # piped: no terminal to fit, rows kept whole
        Console(width=width).print(render(data, time.time(), queue_rows=rows, width=width))
        return
    try:
        run_live(lambda: fetch(client), interval, rows)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
