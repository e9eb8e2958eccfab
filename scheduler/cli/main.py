"""The `labq` command. A thin click layer over the coordinator API; heavy imports are lazy."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

import click

from scheduler.cli.admin import admin
from scheduler.cli.common import (
    call,
    client,
    fail,
    markup,
    plain,
    print_budgets,
    print_json,
)
from scheduler.cli.daemons import agent, coordinator, up
from scheduler.cli.jobs import JOB_COMMANDS
from scheduler.cli.queue_view import age, queue_table, when
from scheduler.cli.sim import sim
from scheduler.cli.top import top
from scheduler.client import ClientError
from scheduler.logtail import LOG_TAIL_BYTES, TERMINAL, follow_file
from scheduler.timeparse import format_duration

if TYPE_CHECKING:
    pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="labq")
def main() -> None:
    """labq: a fair-share GPU queue for a lab's shared cluster."""


main.add_command(admin)
main.add_command(sim)
main.add_command(top)
for command in (up, coordinator, agent, *JOB_COMMANDS):
    main.add_command(command)


# ---------------------------------------------------------------------------- queue, show


@main.command()
@click.option("--all", "-a", "show_all", is_flag=True, help="every user's jobs")
@click.option("--user", "-u", default=None, help="one user's jobs")
@click.option("--done", is_flag=True, help="include recently finished jobs")
@click.option("--start", "with_start", is_flag=True, help="estimated start of waiting jobs")
@click.option("--json", "as_json", is_flag=True)
def queue(show_all: bool, user: str | None, done: bool, with_start: bool, as_json: bool) -> None:
    """Queued and running jobs (yours, or --all), like squeue; `labq show` says why one waits."""
    query = "&".join(p for p in ("all=1" if show_all else "", f"user={user}" if user else "",
                                 "done=1" if done else "") if p)
    jobs = call("GET", f"/v1/jobs?{query}")
    if as_json:
        print_json(jobs)
        return
    from rich.console import Console

    console = Console()
    console.print(queue_table(jobs, time.time(), with_start, console.width))


PRIVATE = ("command", "workdir", "exit_code", "gpu_seconds", "billed")  # null: another's job


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def show(job_id: str, as_json: bool) -> None:
    """Everything about one job."""
    job = call("GET", f"/v1/jobs/{job_id}")
    if as_json:
        print_json(job)
        return
    now = time.time()
    for key in ("id", "name", "user", "account", "qos", "state", "reason", "gpus", "gpu_type",
                "node", "gpu_indices", "command", "workdir", "time_limit_s", "exit_code",
                "gpu_seconds", "billed", "restarts"):
        value = job.get(key)
        if key == "command" and value is not None:
            value = " ".join(value)
        if value is None and key in PRIVATE:
            value = "(private)" if job.get("private") else None
        click.echo(f"{key:>14}: {'-' if value in (None, '', []) else plain(value)}")
    for key in ("submitted_at", "started_at", "ended_at"):
        stamp = job.get(key)
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"
        click.echo(f"{key:>14}: {text}")
    click.echo(f"{'time':>14}: {age(job, now)}")
    if job.get("est_start") and job["state"] in ("PENDING", "HELD"):
        expected = when(job["est_start"])
        click.echo(f"{'expected start':>14}: {expected} (if running jobs use their whole limits)")
    for reason in job.get("reasons") or []:
        click.echo(f"{'waiting':>14}: {plain(reason['code'])}: {plain(reason['detail'])}")
    if job.get("idle"):
        click.echo(f"{'idle':>14}: {plain(job['idle']['text'])}")


@main.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
@click.option("--bytes", "tail_bytes", default=LOG_TAIL_BYTES, show_default=True,
              type=click.IntRange(min=0), help="print at most the last N bytes first (0: all)")
def logs(job_id: str, follow: bool, tail_bytes: int) -> None:
    """A job's output (its file, `--output`, default labq-<id>.out in its work directory)."""
    api = client()
    try:
        info = api.request("GET", f"/v1/jobs/{job_id}/logs")
    except ClientError as exc:
        fail(str(exc))
    path = str(info["path"])
    while follow and not os.path.exists(path) and not info["done"]:
        time.sleep(0.5)  # not started yet: its runner makes the file when it starts
        info = api.request("GET", f"/v1/jobs/{job_id}/logs")
    try:
        for chunk in follow_file(path, tail_bytes, follow,
                                 lambda: bool(api.request("GET", f"/v1/jobs/{job_id}")["state"]
                                              in TERMINAL)):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    except FileNotFoundError:
        where = f" (it ran on node {info['node']})" if info.get("node") else ""
        fail(f"no output file {path} on this machine yet{where}")
    except PermissionError:
        fail(f"cannot read {path}: a job's output is readable by its owner only")


# ---------------------------------------------------------------------------- nodes, quota


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f}"


@main.command()
@click.option("--json", "as_json", is_flag=True)
def nodes(as_json: bool) -> None:
    """Nodes and their GPUs, like sinfo."""
    data = call("GET", "/v1/nodes")
    if as_json:
        print_json(data)
        return
    from rich.console import Console
    from rich.table import Table

    now = time.time()
    table = Table(box=None, header_style="bold")
    for col in ("NODE", "STATE", "GPU", "MODEL", "JOB", "UTIL", "IDLE", "MEM GiB", "POWER W",
                "TEMP C", "HEALTH", "HEARTBEAT"):
        table.add_column(col)
    for node in data:
        beat = f"{now - node['last_heartbeat']:.0f}s ago"
        sim = " (simulated)" if node.get("simulated") else ""
        for gpu in node["gpus"]:
            util = "-" if gpu["utilization"] is None else f"{gpu['utilization'] * 100:.0f}%"
            job = node["allocations"].get(str(gpu["index"]), "-")
            foreign = [p for p in gpu["processes"] if not p.get("labq_job")]
            if foreign:
                job += f" +{len(foreign)} not labq"
            memory = f"{_gib(gpu['memory_used_bytes'])}/{_gib(gpu['memory_total_bytes'])}"
            idle = f"IDLE {format_duration(gpu['idle_s'])}" if gpu.get("idle") else "-"
            table.add_row(markup(node["name"]), node["state"] + sim, str(gpu["index"]),
                          markup(gpu["model"]), markup(job), util, idle, memory,
                          "-" if gpu["power_watts"] is None else f"{gpu['power_watts']:.0f}",
                          "-" if gpu["temperature_c"] is None else f"{gpu['temperature_c']:.0f}",
                          gpu["health"], beat)
    Console().print(table)
    for node in data:
        for proc in node.get("foreign_processes", []):
            click.echo(f"note: {plain(node['name'])} GPU {proc['gpu']}: pid {proc['pid']} "
                       f"({plain(proc['name'] or 'name private')}) was not started by labq")


@main.command()
@click.option("--user", "-u", default=None, help="another user's usage")
@click.option("--account", "-A", default=None, help="only this account's rows")
@click.option("--all", "-a", "show_all", is_flag=True, help="every account's row too")
@click.option("--json", "as_json", is_flag=True)
def quota(user: str | None, account: str | None, show_all: bool, as_json: bool) -> None:
    """Your usage and fair share, like sshare -l."""
    query = "&".join(p for p in (f"user={user}" if user else "",
                                 f"account={account}" if account else "",
                                 "all=1" if show_all else "") if p)
    data = call("GET", f"/v1/quota?{query}")
    if as_json:
        print_json(data)
        return
    click.echo(f"user {plain(data['user'])}: {data['gpu_seconds'] / 3600:.2f} GPU-hours, "
               f"{data['billed_units'] / 3600:.2f} billed GPU-hours in all")
    click.echo(f"running: {data['running_jobs']} job(s) on {data['running_gpus']} GPU(s); "
               f"pending: {data['pending_jobs']}")
    from rich.console import Console
    from rich.table import Table

    half_life = data["half_life_s"] / 86400
    table = Table(box=None, header_style="bold",
                  title=f"fair share ({data['algorithm']}, usage half-life {half_life:g} days)")
    for col in ("ACCOUNT", "USER", "RAW SHARES", "NORM SHARES", "RAW USAGE", "EFFECTV USAGE",
                "LEVEL FS", "FAIRSHARE", "RANK"):
        table.add_column(col)
    for row in data["shares"]:
        level = "inf" if row["level_fs"] is None else f"{row['level_fs']:.3f}"
        table.add_row(markup(row["account"]), markup(row["user"] or ""), f"{row['raw_shares']:g}",
                      f"{row['norm_shares']:.3f}", f"{row['raw_usage']:.0f}",
                      f"{row['effective_usage']:.3f}", level,
                      f"{row['fairshare']:.3f}" if row["user"] else "",
                      str(row["rank"] or ""))
    Console().print(table)
    for row in data.get("fair_now", []):
        click.echo(f"now in {plain(row['account'])}: {plain(row['text'])}")
    print_budgets(data.get("budgets", []))


@main.command()
@click.argument("job_id", required=False)
@click.option("--all", "-a", "show_all", is_flag=True, help="every user's pending jobs")
@click.option("--json", "as_json", is_flag=True)
def priority(job_id: str | None, show_all: bool, as_json: bool) -> None:
    """Why pending jobs are in the order they are, like sprio: each factor and weight."""
    query = f"job={job_id}" if job_id else ("all=1" if show_all else "")
    data = call("GET", f"/v1/priority?{query}")
    if as_json:
        print_json(data)
        return
    if not data:
        click.echo("no pending jobs")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("JOBID", "USER", "ACCOUNT", "PRIORITY", "FAIRSHARE", "AGE", "SIZE", "QOS"):
        table.add_column(col, justify="right" if col not in ("USER", "ACCOUNT") else "left")
    for row in data:
        if row["priority"] is None:  # another user's job under private_data: its place only
            cells = ["-"] * 5
        else:
            cells = [f"{row['priority']:.0f}", *(f"{row['weighted'][k]:.0f} "
                                                  f"({row['factors'][k]:.2f})"
                                                  for k in ("fairshare", "age", "size", "qos"))]
        table.add_row(markup(row["id"]), markup(row["user"]), markup(row["account"]), *cells)
    Console().print(table)
    click.echo("each factor: weighted (factor 0..1); priority = the sum of the weighted factors")
    said = set()
    for row in data:
        text = row.get("fair_now")
        if text and (row["user"], row["account"]) not in said:
            said.add((row["user"], row["account"]))
            click.echo(f"{plain(row['user'])} in {plain(row['account'])}: {plain(text)}")


@main.command()
def whoami() -> None:
    """Who the coordinator thinks you are."""
    data = call("GET", "/v1/whoami")
    click.echo(f"{plain(data['user'])} (uid {data['uid']}){' admin' if data['admin'] else ''}")


if __name__ == "__main__":
    main()
