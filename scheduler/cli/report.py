"""`labq report` (sreport): GPU-hours and billed GPU-hours per account and per user over a
range of days, from the usage the coordinator charged (the same seconds it adds to each job's
`gpu_seconds` and `billed`), as a table, CSV or JSON."""

from __future__ import annotations

import calendar
import csv
import re
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import click

from scheduler.cli.common import Col, call, out_width, print_json, print_table, usage_fail
from scheduler.cli.errors import LabqCommand
from scheduler.cli.histtime import month_start

if TYPE_CHECKING:
    from scheduler.cli.common import Cell


_DATE = re.compile(r"^\s*([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})\s*$")


def utc_days(since: str | None, until: str | None) -> tuple[float, float]:
    """The report's range: a plain date (2026-09-01) is that UTC day, as usage is kept by
    UTC day (--until's day included); any other form as `labq history` reads it."""
    from scheduler.cli.history import time_range

    def day_of(text: str | None) -> float | None:
        match = _DATE.match(text or "")
        if match is None:
            return None
        try:
            return float(calendar.timegm((*(int(g) for g in match.groups()), 0, 0, 0)))
        except (ValueError, OverflowError):
            return None

    start, end = time_range(since, until, month_start())
    first, last = day_of(since), day_of(until)
    start = start if first is None else first
    end = end if last is None else last + 86399
    if start > end:
        usage_fail("--since is after --until: give the earlier day first")
    return start, end


def _day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per account (its users inside, largest billed first) and in all, in seconds and hours."""
    accounts: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = accounts.setdefault(row["account"], {"account": row["account"],
                                                     "gpu_seconds": 0.0, "billed": 0.0,
                                                     "users": []})
        entry["gpu_seconds"] += row["gpu_seconds"]
        entry["billed"] += row["billed"]
        entry["users"].append({"user": row["user"], "gpu_seconds": row["gpu_seconds"],
                               "billed": row["billed"]})
    total = {"gpu_seconds": sum(r["gpu_seconds"] for r in rows),
             "billed": sum(r["billed"] for r in rows)}
    ordered = sorted(accounts.values(), key=lambda a: (-a["billed"], a["account"]))
    for entry in [*ordered, total, *(u for a in ordered for u in a["users"])]:
        entry["gpu_hours"] = entry["gpu_seconds"] / 3600
        entry["billed_hours"] = entry["billed"] / 3600
    for entry in ordered:
        entry["users"].sort(key=lambda u: (-u["billed"], u["user"]))
    return {"accounts": ordered, "total": total}


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


@click.command(cls=LabqCommand)
@click.option("--since", "--starttime", "-S", "since", default=None,
              help="from this day: 2026-09-01, now-30days, ... (default: the 1st of this month)")
@click.option("--until", "--endtime", "-E", "until", default=None,
              help="to this day, included (default: today)")
@click.option("--user", "-u", default=None, help="only this user's usage")
@click.option("--account", "-A", default=None, help="only this account's usage")
@click.option("--csv", "as_csv", is_flag=True, help="comma-separated: kind,account,user,...")
@click.option("--json", "as_json", is_flag=True, help="per account, its users inside, as JSON")
def report(since: str | None, until: str | None, user: str | None, account: str | None,
           as_csv: bool, as_json: bool) -> None:
    """GPU-hours and billed GPU-hours per account and user (sreport): what was charged on
    each UTC day of the range. Under private_data, yours only unless you are an admin."""
    start, end = utc_days(since, until)
    query = {"since": repr(start), "until": repr(end)}
    if user:
        query["user"] = user
    if account:
        query["account"] = account
    answer = call("GET", f"/v1/report?{urlencode(query)}")
    summary = summarize(list(answer["rows"]))
    first, last = _day(answer["first_day"]), _day(answer["last_day"])
    if as_json:
        print_json({"first_day": first, "last_day": last, "only_own": answer["only_own"],
                    **summary})
        return
    if as_csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["kind", "account", "user", "gpu_hours", "billed_gpu_hours", "first_day",
                      "last_day"])
        for entry in summary["accounts"]:
            out.writerow(["account", entry["account"], "", f"{entry['gpu_hours']:.4f}",
                          f"{entry['billed_hours']:.4f}", first, last])
            for u in entry["users"]:
                out.writerow(["user", entry["account"], u["user"], f"{u['gpu_hours']:.4f}",
                              f"{u['billed_hours']:.4f}", first, last])
        total = summary["total"]
        out.writerow(["total", "", "", f"{total['gpu_hours']:.4f}",
                      f"{total['billed_hours']:.4f}", first, last])
        return
    whole = summary["total"]["billed"]
    click.echo(f"Usage {first} to {last} (UTC days), in GPU-hours"
               + (" (yours only: private_data)" if answer["only_own"] else ""))
    rows: list[list[Cell]] = []
    for entry in summary["accounts"]:
        rows.append([entry["account"], "(all)", f"{entry['gpu_hours']:.2f}",
                     f"{entry['billed_hours']:.2f}", _share(entry["billed"], whole)])
        rows += [[entry["account"], u["user"], f"{u['gpu_hours']:.2f}",
                  f"{u['billed_hours']:.2f}", _share(u["billed"], whole)]
                 for u in entry["users"]]
    total = summary["total"]
    rows.append(["TOTAL", "", f"{total['gpu_hours']:.2f}", f"{total['billed_hours']:.2f}",
                 "100.0%" if whole else "-"])
    cols = [Col("Account", cut=6), Col("User", cut=6), Col("GPU-hours", right=True),
            Col("Billed", right=True), Col("Share", right=True)]
    print_table(cols, rows, out_width())
