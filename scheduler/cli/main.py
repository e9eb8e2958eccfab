"""The `labq` command. A thin click layer over the coordinator API; heavy imports are lazy."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from scheduler.cli.common import (
    Col,
    Named,
    call,
    client,
    echo_wrapped,
    fail,
    fit_columns,
    fitted_table,
    job_anywhere,
    out_width,
    plain,
    print_budgets,
    print_json,
    print_lines,
    print_table,
    usage_fail,
)
from scheduler.cli.errors import LabqGroup
from scheduler.cli.jobs import JOB_COMMANDS
from scheduler.cli.logtail import LOG_TAIL_BYTES, TERMINAL, follow_file
from scheduler.cli.queue_view import (
    FORMAT_HELP,
    job_matches,
    parse_format,
    parse_ids,
    parse_states,
    queue_table,
    readable,
    show_text,
)
from scheduler.client import ClientError, list_jobs
from scheduler.timeparse import format_duration

if TYPE_CHECKING:
    from scheduler.cli.common import Cell

T = TypeVar("T")
GIB = 2**30


# Commands imported only when used (each `labq` call is a new process: `labq submit` starts
# faster without the daemons, the simulator, the dashboards or the admin tools).
LAZY = {"admin": "scheduler.cli.admin:admin", "config": "scheduler.cli.config_cmd:config",
        "sim": "scheduler.cli.sim:sim", "top": "scheduler.cli.top:top",
        "step": "scheduler.cli.step:step", "run": "scheduler.cli.run:run",
        "up": "scheduler.cli.daemons:up", "coordinator": "scheduler.cli.daemons:coordinator",
        "agent": "scheduler.cli.daemons:agent", "history": "scheduler.cli.history:history",
        "report": "scheduler.cli.report:report", "eff": "scheduler.cli.eff:eff"}


@click.group(cls=LabqGroup, context_settings={"help_option_names": ["-h", "--help"]},
             lazy=LAZY)
@click.version_option(package_name="labq")
def main() -> None:
    """labq: a fair-share GPU queue for a lab's shared cluster."""


for command in JOB_COMMANDS:
    main.add_command(command)


# ---------------------------------------------------------------------------- queue, show


def queue_query(show_all: bool, user: str | None, done: bool, expand: bool) -> str:
    return "&".join(p for p in ("all=1" if show_all else "", f"user={user}" if user else "",
                                "done=1" if done else "", "expand=1" if expand else "") if p)


def _parsed(parse: Callable[[str], T], text: str | None) -> T | None:
    """An option's value parsed, or None if not given; a bad one: one line, exit status 2."""
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        usage_fail(str(exc))


@main.command()
@click.option("--all", "-a", "show_all", is_flag=True, help="every user's jobs")
@click.option("--user", "-u", default=None, help="one user's jobs")
@click.option("--state", "-t", "states", default=None, metavar="STATES",
              help="only these states, comma-separated, any case: PENDING,RUNNING or Slurm's "
                   "PD,R,CF,CD,F,CA,TO,PR (PD: pending or held), or all")
@click.option("--jobs", "-j", "job_ids", default=None, metavar="IDS",
              help="only these jobs (any user's), comma-separated: 17,18 or an array task 17_5")
@click.option("--done", is_flag=True, help="include recently finished jobs")
@click.option("--array", "-r", "expand", is_flag=True,
              help="every task of an array on its own line (not its waiting tasks as one)")
@click.option("--start", "with_start", is_flag=True,
              help="a START column: when waiting jobs are expected to start")
@click.option("--format", "-o", "fmt", default=None, metavar="FIELDS", help=FORMAT_HELP)
@click.option("--noheader", is_flag=True, help="no header line (for scripts)")
@click.option("--json", "as_json", is_flag=True)
def queue(show_all: bool, user: str | None, states: str | None, job_ids: str | None,
          done: bool, expand: bool, with_start: bool, fmt: str | None, noheader: bool,
          as_json: bool) -> None:
    """Queued and running jobs (yours, or --all), like squeue; `labq show` says why one waits.

    Job ids: 17 a job, 17_5 task 5 of array 17, 17_[4-99%8] the tasks of array 17 still
    waiting, shown as one line (at most 8 at once); -r shows each on its own line."""
    wanted_states = _parsed(parse_states, states)
    wanted_ids = _parsed(parse_ids, job_ids)
    fields = _parsed(parse_format, fmt)
    done = done or bool(wanted_states and wanted_states & set(TERMINAL))
    try:
        jobs = list_jobs(client(), queue_query(show_all or wanted_ids is not None, user, done,
                                                expand))
    except ClientError as exc:
        fail(str(exc))
    jobs = [j for j in jobs if (wanted_states is None or j["state"] in wanted_states)
            and (wanted_ids is None or job_matches(j, wanted_ids))]
    if as_json:
        print_json(jobs)
        return
    width = out_width()
    print_lines(queue_table(jobs, time.time(), with_start, width, fields, not noheader), width)


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def show(job_id: str, as_json: bool) -> None:
    """Everything about one job: its files, times, deadline, costs and why it waits (a job
    that has left the store: what its history record keeps, for 400 days)."""
    job = job_anywhere(job_id)
    if as_json:
        print_json(job)
        return
    for line in show_text(job, time.time(), out_width()):
        click.echo(line)


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


# ---------------------------------------------------------------------------- nodes


def _gib_pair(used: float | None, total: float | None) -> str:
    """Used/total GiB: whole GiB, tenths on a GPU of under 10 GiB."""
    digits = 1 if total is not None and total < 10 * GIB else 0

    def one(value: float | None) -> str:
        return "-" if value is None else f"{value / GIB:.{digits}f}"

    return f"{one(used)}/{one(total)}"


def _summed(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _node_state(node: dict[str, Any]) -> str:
    """UP or DOWN, or DRAINING / DRAINED for a node an admin drained (`Node.shown_state`)."""
    return str(node.get("shown_state") or node["state"]) + (" sim" if node.get("simulated")
                                                            else "")


def _beat(node: dict[str, Any], now: float) -> str:
    return f"{readable(now - float(node.get('last_heartbeat') or 0))} ago"


NODE_COLS = [Col("NODE", cut=6), Col("STATE"), Col("GPUS"), Col("MODEL", cut=5),
             Col("UTIL", right=True), Col("MEM GiB", right=True), Col("JOBS", right=True),
             Col("IDLE", right=True), Col("HEARTBEAT", right=True)]


def node_rows(data: list[dict[str, Any]], now: float) -> list[list[Cell]]:
    """`labq nodes`: one row per node; GPUs allocated, their mean utilization, memory summed,
    the jobs on it, how many allocated GPUs are idle, and its last heartbeat."""
    rows: list[list[Cell]] = []
    for node in data:
        gpus = node.get("gpus") or []
        util = [g["utilization"] for g in gpus if g.get("utilization") is not None]
        memory = _gib_pair(_summed([g.get("memory_used_bytes") for g in gpus]),
                           _summed([g.get("memory_total_bytes") for g in gpus]))
        rows.append([
            Named(node["name"]), _node_state(node),
            f"{node['gpus_allocated']}/{node['gpus_total']} used",
            Named(node.get("gpu_model") or "-"),
            f"{sum(util) / len(util) * 100:.0f}%" if util else "-", memory,
            str(len(set(node.get("allocations", {}).values()))),
            str(sum(1 for g in gpus if g.get("idle"))), _beat(node, now)])
    return rows


GPU_COLS = [Col("NODE", cut=6), Col("STATE"), Col("GPU", right=True), Col("MODEL", cut=5),
            Col("JOB", cut=3), Col("UTIL", right=True), Col("MEM GiB", right=True),
            Col("PWR/TEMP", right=True, drop=1), Col("HEALTH"), Col("IDLE", right=True),
            Col("HEARTBEAT", right=True, drop=2)]


def _power_temp(gpu: dict[str, Any]) -> str:
    power, temp = gpu.get("power_watts"), gpu.get("temperature_c")
    if power is None and temp is None:
        return "-"
    return (f"{'-' if power is None else f'{power:.0f}'}W "
            f"{'-' if temp is None else f'{temp:.0f}'}C")


def gpu_rows(data: list[dict[str, Any]], now: float) -> list[list[Cell]]:
    """`labq nodes --gpus`: one row per GPU; JOB is the job holding it, `+N not labq` where
    processes labq did not start run on it."""
    rows: list[list[Cell]] = []
    for node in data:
        for gpu in sorted(node.get("gpus") or [], key=lambda g: g["index"]):
            job = node.get("allocations", {}).get(str(gpu["index"]), "-")
            foreign = [p for p in gpu.get("processes", []) if not p.get("labq_job")]
            util = gpu.get("utilization")
            rows.append([
                Named(node["name"]), _node_state(node), str(gpu["index"]), Named(gpu["model"]),
                Named(f" +{len(foreign)} not labq" if foreign else "", before=job),
                "-" if util is None else f"{util * 100:.0f}%",
                _gib_pair(gpu.get("memory_used_bytes"), gpu.get("memory_total_bytes")),
                _power_temp(gpu), plain(gpu.get("health", "OK")),
                format_duration(gpu.get("idle_s")) if gpu.get("idle") else "-",
                _beat(node, now)])
    return rows


def drain_note(node: dict[str, Any], now: float) -> str | None:
    """`note: gpu1 DRAINED by alice 2h ago: disk swap (...)`, for a drained node."""
    if not node.get("drained_by"):
        return None
    since = f" {readable(now - float(node['drained_at']))} ago" if node.get("drained_at") else ""
    down = " (its agent is silent: DOWN)" if node.get("state") == "DOWN" else ""
    return (f"note: {plain(node['name'])} {node.get('shown_state', 'DRAINED')}{down} by "
            f"{plain(node['drained_by'])}{since}: {plain(node.get('drain_reason') or '-')} "
            f"(no new job starts there; `labq admin node resume {plain(node['name'])}`)")


def node_notes(data: list[dict[str, Any]], per_gpu: bool, now: float | None = None
               ) -> list[str]:
    """What the one-line-per-node table cannot say: who drained a node and why, processes labq
    did not start, and (without `per_gpu`, whose columns say it) unhealthy GPUs and
    allocated GPUs that are idle."""
    notes = []
    for node in data:
        name = plain(node["name"])
        drained = drain_note(node, time.time() if now is None else now)
        if drained:
            notes.append(drained)
        for gpu in [] if per_gpu else sorted(node.get("gpus") or [], key=lambda g: g["index"]):
            job = node.get("allocations", {}).get(str(gpu["index"]))
            if gpu.get("health", "OK") != "OK":
                notes.append(f"note: {name} GPU {gpu['index']}: health {plain(gpu['health'])}")
            if gpu.get("idle") and job:
                notes.append(f"note: {name} GPU {gpu['index']}: IDLE {readable(gpu['idle_s'])}"
                             f" (job {plain(job)})")
        for proc in node.get("foreign_processes", []):
            notes.append(f"note: {name} GPU {proc['gpu']}: pid {proc['pid']} "
                         f"({plain(proc['name'] or 'name private')}) was not started by labq")
    return notes


@main.command()
@click.option("--gpus", "per_gpu", is_flag=True, help="one line per GPU")
@click.option("--json", "as_json", is_flag=True)
def nodes(per_gpu: bool, as_json: bool) -> None:
    """Nodes (one line each) or their GPUs (--gpus), like sinfo."""
    data = sorted(call("GET", "/v1/nodes"), key=lambda n: n["name"])
    if as_json:
        print_json(data)
        return
    width, now = out_width(), time.time()
    if per_gpu:
        print_table(GPU_COLS, gpu_rows(data, now), width)
    else:
        print_table(NODE_COLS, node_rows(data, now), width)
    for note in node_notes(data, per_gpu, now):
        echo_wrapped(note, width, indent=6)


# ---------------------------------------------------------------------------- quota


QUOTA_COLS = [Col("ACCOUNT", cut=5), Col("USER", cut=4), Col("RAW SHR", right=True),
              Col("NORM SHR", right=True), Col("RAW USAGE", right=True),
              Col("EFF USAGE", right=True), Col("LEVEL FS", right=True, drop=1),
              Col("FAIRSHARE", right=True), Col("RANK", right=True)]


def quota_rows(shares: list[dict[str, Any]]) -> list[list[Cell]]:
    """sshare -l's columns: shares raw and normalized, usage raw (billed GPU-seconds, decayed)
    and effective, the level fair share, the fair-share factor and rank of each user."""
    rows: list[list[Cell]] = []
    for row in shares:
        level = "inf" if row["level_fs"] is None else f"{row['level_fs']:.3f}"
        rows.append([Named(row["account"]), Named(row["user"] or ""), f"{row['raw_shares']:g}",
                     f"{row['norm_shares']:.3f}", f"{row['raw_usage']:.0f}",
                     f"{row['effective_usage']:.3f}", level,
                     f"{row['fairshare']:.3f}" if row["user"] else "",
                     str(row["rank"] or "")])
    return rows


def quota_title(data: dict[str, Any], ranking: str) -> str:
    """The line over the table: which algorithm ranks, and what the rows are when that is
    another's table (fair_now's past part, Fair Tree's on decayed usage)."""
    table = data.get("table_algorithm") or data["algorithm"]
    days = f"half-life {data['half_life_s'] / 86400:g} days"
    if table == ranking:
        return f"fair share ranked by {ranking} on past usage ({days})"
    return f"fair share ranked by {ranking}; rows: {table} on past usage ({days})"


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
    width = out_width()
    echo_wrapped(f"user {plain(data['user'])}: {data['gpu_seconds'] / 3600:.2f} GPU-hours, "
                 f"{data['billed_units'] / 3600:.2f} billed GPU-hours in all", width)
    click.echo(f"running: {data['running_jobs']} job(s) on {data['running_gpus']} GPU(s); "
               f"pending: {data['pending_jobs']}")
    echo_wrapped(quota_title(data, str(data["algorithm"])), width, 2)
    print_table(QUOTA_COLS, quota_rows(data["shares"]), width)
    for row in data.get("fair_now", []):
        echo_wrapped(f"now in {plain(row['account'])}: {plain(row['text'])}", width, 2)
    print_budgets(data.get("budgets", []))


# ---------------------------------------------------------------------------- priority

FACTORS = ("fairshare", "age", "size", "qos")
PRIORITY_COLS = [Col("JOBID"), Col("USER", cut=4), Col("ACCOUNT", cut=5),
                 Col("PRIORITY", right=True),
                 *(Col(name.upper(), right=True) for name in FACTORS)]


def priority_rows(data: list[dict[str, Any]], factors: bool) -> list[list[Cell]]:
    """sprio's columns: each factor weighted, and with `factors` its value 0..1 after it."""
    rows: list[list[Cell]] = []
    for row in data:
        if row["priority"] is None:  # another user's job under private_data: its place only
            cells = ["-"] * 5
        else:
            cells = [f"{row['priority']:.0f}",
                     *(f"{row['weighted'][k]:.0f}" + (f" ({row['factors'][k]:.2f})"
                                                      if factors else "") for k in FACTORS)]
        rows.append([plain(row["id"]), Named(row["user"]), Named(row["account"]), *cells])
    return rows


def priority_table(data: list[dict[str, Any]], width: int | None) -> tuple[Any, bool]:
    """The table, with each factor's value 0..1 where the terminal is wide enough (and
    whether it has them)."""
    rows = priority_rows(data, factors=True)
    keep, widths = fit_columns(PRIORITY_COLS, rows, width)
    factors = width is None or sum(widths) + len(widths) - 1 <= width
    if not factors:
        rows = priority_rows(data, factors=False)
    return fitted_table(PRIORITY_COLS, rows, width)[0], factors


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
    width = out_width()
    table, factors = priority_table(data, width)
    print_lines(table, width)
    echo_wrapped("each factor: weighted (factor 0..1); priority = the sum of the weighted "
                 "factors" if factors else "each factor weighted; priority = their sum (a "
                 "wider terminal or --json shows each factor 0..1)", width)
    said = set()
    for row in data:
        text = row.get("fair_now")
        if text and (row["user"], row["account"]) not in said:
            said.add((row["user"], row["account"]))
            echo_wrapped(f"{plain(row['user'])} in {plain(row['account'])}: {plain(text)}",
                         width, 2)


@main.command()
def whoami() -> None:
    """Who the coordinator thinks you are."""
    data = call("GET", "/v1/whoami")
    click.echo(f"{plain(data['user'])} (uid {data['uid']}){' admin' if data['admin'] else ''}")


if __name__ == "__main__":
    main()
