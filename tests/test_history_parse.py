"""What `labq history` and `labq report` read and write, as tables of cases: times in Slurm's
forms (local time), `--format` columns, sacct's `|`-separated lines, and the report's sums."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from scheduler.cli.eff import cpus_given, efficiency
from scheduler.cli.histfmt import clock, id_order, parsable, parse_format, size
from scheduler.cli.histtime import WhenError, month_start, parse_when
from scheduler.cli.report import summarize, utc_days


@pytest.fixture(autouse=True)
def berlin() -> Iterator[None]:
    """A zone off UTC, so local and UTC readings differ."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def _now() -> float:
    return datetime(2026, 9, 10, 15, 30, 20).timestamp()  # local, CEST (UTC+2)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-09-01", datetime(2026, 9, 1)),
    ("2026-09-01T10:00", datetime(2026, 9, 1, 10, 0)),
    ("2026-09-01T10:00:05", datetime(2026, 9, 1, 10, 0, 5)),
    ("2026-09-01 10:00", datetime(2026, 9, 1, 10, 0)),
    ("10:00", datetime(2026, 9, 10, 10, 0)),
    ("09/01", datetime(2026, 9, 1)),
    ("09/01/25", datetime(2025, 9, 1)),
    ("today", datetime(2026, 9, 10)), ("midnight", datetime(2026, 9, 10)),
    ("yesterday", datetime(2026, 9, 9)), ("noon", datetime(2026, 9, 10, 12)),
    ("now", datetime(2026, 9, 10, 15, 30, 20)),
    ("now-7days", datetime(2026, 9, 3, 15, 30, 20)),
    ("now-2hours", datetime(2026, 9, 10, 13, 30, 20)),
    ("NOW-30min", datetime(2026, 9, 10, 15, 0, 20)),
    ("now-1week", datetime(2026, 9, 3, 15, 30, 20)),
    ("now+90", datetime(2026, 9, 10, 15, 31, 50)),
])
def test_times_in_slurms_forms_are_local(text: str, expected: datetime) -> None:
    assert parse_when(text, _now()) == expected.timestamp()


@pytest.mark.parametrize(("text", "words"), [
    ("", "cannot read"), ("last week", "cannot read"), ("now-3fortnights", "unknown unit"),
    ("2026-02-30", "day is out of range"), ("25:00", "hour must be in"),
    ("now-", "cannot read"), ("1700000000", "cannot read"),
])
def test_a_time_that_cannot_be_read_says_which_forms_can(text: str, words: str) -> None:
    with pytest.raises(WhenError, match=words) as caught:
        parse_when(text, _now())
    assert "now-7days" in str(caught.value) and "\n" not in str(caught.value)


def test_local_time_is_not_utc() -> None:
    assert parse_when("2026-09-01", _now()) == datetime.fromisoformat(
        "2026-09-01T00:00:00+02:00").timestamp()


def test_the_month_starts_at_local_midnight_of_its_first_day() -> None:
    assert month_start(_now()) == datetime(2026, 9, 1).timestamp()


def test_format_columns_take_sacct_names_any_case_and_widths() -> None:
    columns = parse_format("jobid,JobName%5,STATE,cputime,maxrss")
    assert [(c.header, width) for c, width in columns] == [
        ("JobID", 0), ("JobName", 5), ("State", 0), ("TotalCPU", 0), ("MaxRSS", 0)]


def test_parsable_lines_are_sacct_p_and_escape_the_separator() -> None:
    columns = parse_format("JobID,JobName,Elapsed,MaxRSS,ExitCode")
    jobs = [{"id": "7", "name": "a|b", "started_at": 100.0, "ended_at": 90_100.0,
             "memory_peak_bytes": 1536, "exit_code": None, "private": True}]
    assert parsable(columns, jobs, True, True) == [
        "JobID|JobName|Elapsed|MaxRSS|ExitCode|", "7|a\\|b|1-01:00:00|2K|(private)|"]
    assert parsable(columns, jobs, False, False) == ["7|a\\|b|1-01:00:00|2K|(private)"]


@pytest.mark.parametrize(("value", "text"), [(59.6, "00:01:00"), (3600, "01:00:00"),
                                             (90061, "1-01:01:01"), (None, "")])
def test_durations_as_sacct_shows_them(value: float | None, text: str) -> None:
    assert clock(value) == text


def test_sizes_and_id_order() -> None:
    assert [size(v) for v in (512, 2048, 5 << 30, None)] == ["512", "2K", "5.0G", ""]
    ids = ["17_10", "9", "17", "17_2", "100"]
    assert sorted(ids, key=id_order) == ["9", "17", "17_2", "17_10", "100"]


def test_the_report_sums_users_into_accounts_and_a_total() -> None:
    rows = [{"account": "lab", "user": "a", "gpu_seconds": 3600.0, "billed": 7200.0},
            {"account": "lab", "user": "b", "gpu_seconds": 7200.0, "billed": 14400.0},
            {"account": "ml", "user": "a", "gpu_seconds": 1800.0, "billed": 1800.0}]
    summary = summarize(rows)
    assert [(a["account"], a["gpu_hours"], a["billed_hours"]) for a in summary["accounts"]] == [
        ("lab", 3.0, 6.0), ("ml", 0.5, 0.5)]
    assert [u["user"] for u in summary["accounts"][0]["users"]] == ["b", "a"]
    assert summary["total"]["gpu_hours"] == 3.5 and summary["total"]["billed_hours"] == 6.5


@pytest.mark.parametrize(("job", "nodes", "cpus"), [
    ({"cpus": 4, "nodes": 2, "gpus": 4}, None, 8),
    ({"cpus_per_gpu": 3, "nodes": 1, "gpus": 2}, None, 6),
    ({"node": "n1", "gpus": 2}, [{"name": "n1", "cpus": 64, "gpus_total": 8}], 16),
    ({"node": "n1", "gpus": 2}, [{"name": "n1", "gpus_total": 8}], None),
    ({"node": "n1", "gpus": 2}, None, None),
])
def test_the_cpus_a_job_had(job: dict[str, object], nodes: list[dict[str, object]] | None,
                            cpus: int | None) -> None:
    assert cpus_given(job, nodes)[0] == cpus


def test_cpu_efficiency_is_cpu_time_over_wall_time_and_cpus() -> None:
    job = {"id": "5", "user": "a", "account": "lab", "state": "SUCCEEDED", "started_at": 0.0,
           "ended_at": 1000.0, "cpus": 4, "cpu_seconds": 1000.0, "time_limit_s": 4000}
    figures = efficiency(job, None)
    assert figures["cpu_efficiency"] == 0.25 and figures["time_used"] == 0.25
    assert efficiency({**job, "cpu_seconds": None}, None)["cpu_efficiency"] is None
    assert efficiency({**job, "started_at": None}, None)["wall_seconds"] is None


def test_the_reports_plain_dates_are_utc_days_and_until_includes_its_day() -> None:
    start, end = utc_days("2026-09-01", "2026-09-30")
    assert start == datetime.fromisoformat("2026-09-01T00:00:00+00:00").timestamp()
    assert end == datetime.fromisoformat("2026-09-30T23:59:59+00:00").timestamp()
    start, _ = utc_days("2026-09-01T10:00", None)  # any other form: local, as history's
    assert start == datetime.fromisoformat("2026-09-01T10:00:00+02:00").timestamp()
