"""`labq history` (sacct): a semester's ended jobs. (`labq report` and `labq eff` are in
report.py and eff.py; `scheduler.cli.main` names all three.)"""

from __future__ import annotations

import time
from urllib.parse import quote, urlencode

import click

from scheduler.cli.common import call, out_width, plain, print_json, print_table, usage_fail
from scheduler.cli.errors import LabqCommand
from scheduler.cli.histfmt import (
    COLUMNS,
    DEFAULT_FORMAT,
    FormatError,
    id_order,
    parse_format,
    table,
)
from scheduler.cli.histfmt import parsable as parsable_lines
from scheduler.cli.histtime import WhenError, parse_when

DEFAULT_DAYS = 7  # no --since: the last 7 days (sacct's default is since midnight)
ENDED = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT")
# Slurm's state names and short forms, as sacct -s takes them, for labq's ended states.
STATE_NAMES = {"COMPLETED": "SUCCEEDED", "CD": "SUCCEEDED", "F": "FAILED", "CA": "CANCELLED",
               "TO": "TIMEOUT", "DEADLINE": "TIMEOUT", "DL": "TIMEOUT", "NF": "FAILED",
               "NODE_FAIL": "FAILED", "OOM": "FAILED", "OUT_OF_MEMORY": "FAILED"}


def states_of(text: str) -> list[str]:
    """`--state` as labq's ended states: names or Slurm's (COMPLETED, CD, F, CA, TO, ...)."""
    out = []
    for part in (p.strip().upper() for p in text.split(",")):
        if not part:
            continue
        state = STATE_NAMES.get(part, part)
        if state not in ENDED:
            usage_fail(f"--state {plain(part)}: the history holds ended jobs: "
                       f"{', '.join(ENDED)} (or Slurm's COMPLETED, CD, F, CA, TO)")
        out.append(state)
    return sorted(set(out))


def time_range(since: str | None, until: str | None, default_since: float) -> tuple[float,
                                                                                   float]:
    """`--since`/`--until` as Unix times (until: now unless given); a bad one is a usage
    error, as is a range that ends before it starts."""
    now = time.time()
    end = _when("--until", until, now) if until else now
    start = _when("--since", since, now) if since else default_since
    if start > end:
        usage_fail(f"--since ({time.strftime('%Y-%m-%d %H:%M', time.localtime(start))}) is "
                   f"after --until ({time.strftime('%Y-%m-%d %H:%M', time.localtime(end))})")
    return start, end


def _when(option: str, text: str, now: float) -> float:
    try:
        return parse_when(text, now)
    except WhenError as exc:
        usage_fail(f"{option}: {exc}")


@click.command(cls=LabqCommand)
@click.option("--since", "--starttime", "-S", "since", default=None,
              help="jobs that ended from then on: 2026-09-01, 2026-09-01T10:00, now-7days, "
                   "now-2hours, today, yesterday (default: the last 7 days)")
@click.option("--until", "--endtime", "-E", "until", default=None,
              help="jobs that ended up to then (default: now); same forms as --since")
@click.option("--user", "-u", default=None, help="this user's jobs (default: your own)")
@click.option("--all", "-a", "--allusers", "all_users", is_flag=True, help="everyone's jobs")
@click.option("--account", "-A", default=None, help="jobs charged to this account")
@click.option("--state", "-s", default=None,
              help="these ended states, comma-separated: SUCCEEDED (COMPLETED), FAILED, "
                   "CANCELLED, TIMEOUT")
@click.option("--name", default=None, help="jobs of these names, comma-separated")
@click.option("--jobs", "-j", default=None, help="these job ids, comma-separated (any time)")
@click.option("--format", "-o", "fmt", default=DEFAULT_FORMAT, show_default=True,
              help="columns as sacct names them (--helpformat lists them); NAME%N: N "
                   "characters wide")
@click.option("--parsable", "-p", is_flag=True, help="'|'-separated, each line ending in '|'")
@click.option("--parsable2", "-P", is_flag=True, help="'|'-separated, no '|' at the end")
@click.option("--noheader", "-n", is_flag=True, help="no header line")
@click.option("--json", "as_json", is_flag=True, help="the job records as JSON")
@click.option("--limit", default=10_000, show_default=True, type=click.IntRange(1, 100_000),
              help="at most this many jobs, the latest ended")
@click.option("--helpformat", "-e", is_flag=True, help="list the --format columns")
def history(since: str | None, until: str | None, user: str | None, all_users: bool,
            account: str | None, state: str | None, name: str | None, jobs: str | None,
            fmt: str, parsable: bool, parsable2: bool, noheader: bool, as_json: bool,
            limit: int, helpformat: bool) -> None:
    """Your ended jobs, from the store and the 400-day history alike (sacct): when they ran,
    how they ended, what they used. Times are local."""
    if helpformat:
        click.echo(" ".join(c.header for c in COLUMNS.values()))
        return
    try:
        columns = parse_format(fmt)
    except FormatError as exc:
        usage_fail(str(exc))
    if user and all_users:
        usage_fail("give --user USER or --all, not both")
    if jobs:
        found = [call("GET", f"/v1/history/{quote(job_id.strip(), safe='')}")
                 for job_id in jobs.split(",") if job_id.strip()]
        complete = True
    else:
        start, end = time_range(since, until, time.time() - DEFAULT_DAYS * 86400)
        query: dict[str, str] = {"since": repr(start), "until": repr(end), "limit": str(limit)}
        if user:
            query["user"] = user
        elif all_users:
            query["all"] = "1"
        if account:
            query["account"] = account
        if state:
            query["state"] = ",".join(states_of(state))
        if name:
            query["name"] = name
        answer = call("GET", f"/v1/history?{urlencode(query)}")
        found, complete = list(answer["jobs"]), bool(answer["complete"])
    found.sort(key=lambda job: id_order(job.get("id")))
    if not complete:
        click.echo(f"labq: showing the {len(found):,} latest ended jobs of the range; more "
                   "matched: narrow it (--since, --until, --user, --state) or raise --limit",
                   err=True)
    if as_json:
        print_json(found)
    elif parsable or parsable2:
        for line in parsable_lines(columns, found, not noheader, parsable and not parsable2):
            click.echo(line)
    else:
        cols, rows = table(columns, found)
        if rows or not noheader:
            print_table(cols, rows, out_width(), header=not noheader)

