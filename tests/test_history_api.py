"""`labq history`, `labq report` and `labq eff` and their routes, on the real API (a real
Valkey, a real Unix socket) called by real Unix users: jobs that ended in the hot store and in
the history alike, what each user may see under private_data, and every bad input refused
with one line."""

from __future__ import annotations

import json
import pwd
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.model import JobSpec, JobState
from tests.security_server import ApiServer, can_switch_users, ensure_user

pytestmark = pytest.mark.skipif(not can_switch_users(),
                                reason="needs root, useradd and /usr/bin/python3")

ANN, BEN = "labq-hist-ann", "labq-hist-ben"
DAY = 86400.0
NOW = time.time()


async def _ran(srv: ApiServer, epoch: int, user: str, account: str, start: float, end: float,
               name: str, state: JobState = JobState.SUCCEEDED, gpus: int = 1) -> str:
    store = srv.store
    spec = JobSpec(user=user, account=account, command=["python", "secret.py"], gpus=gpus,
                   name=name, workdir="/srv/" + user)
    (job_id,) = await store.submit([spec], token=uuid.uuid4().hex, now=start - 5)
    job = await store.get_job(job_id)
    assert job is not None
    assert await store.start(epoch, job, "n1", list(range(gpus)), 3.0, start) == "OK"
    assert await store.mark_running(epoch, job_id, start) == "OK"
    job = await store.get_job(job_id)
    assert job is not None
    assert await store.finish(epoch, job, state, 0 if state == JobState.SUCCEEDED else 3, "",
                              end) == "OK"
    await store.r.hset(store.keys.job(job_id), mapping={
        "cpu_seconds": "1800", "memory_peak_bytes": str(5 << 30)})
    return job_id


@pytest.fixture(scope="module")
def server(valkey_url: str) -> Iterator[tuple[ApiServer, dict[str, str]]]:
    """The API with four ended jobs: ann's and ben's from 40 days ago (moved to the history),
    ann's from two days ago and ben's failed one from yesterday (in the hot store)."""
    ensure_user(ANN)
    ensure_user(BEN)
    srv = ApiServer(valkey_url).start()

    async def fill() -> dict[str, str]:
        epoch = await srv.store.lease("coord-1", 600_000)
        ids = {
            "ann_old": await _ran(srv, epoch, ANN, "vision", NOW - 40 * DAY - 3600,
                                  NOW - 40 * DAY, "old-bert", gpus=2),
            "ben_old": await _ran(srv, epoch, BEN, "nlp", NOW - 40 * DAY - 600,
                                  NOW - 40 * DAY + 60, "ben-old"),
        }
        await srv.store.expire_done(epoch, NOW, 30 * DAY, 100_000, 400 * DAY)
        ids["ann_new"] = await _ran(srv, epoch, ANN, "vision", NOW - 2 * DAY - 7200,
                                    NOW - 2 * DAY, "new-bert")
        ids["ben_new"] = await _ran(srv, epoch, BEN, "nlp", NOW - DAY - 60, NOW - DAY,
                                    "ben-new", JobState.FAILED)
        return ids

    ids = srv.run(fill())
    yield srv, ids
    srv.stop()


def api(srv: ApiServer, user: str, path: str) -> tuple[int, Any]:
    return srv.as_user(user, "GET", path)


def labq_as(srv: ApiServer, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    entry = pwd.getpwnam(user)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/", "USER": user, "LABQ_HOME": str(srv.dir),
           "LABQ_SOCKET": srv.socket, "TZ": "UTC"}
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], env=env, cwd="/",
                          user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
                          capture_output=True, text=True, timeout=60)


def one_error(result: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr, result.stdout)
    assert len(lines) == 1 and lines[0].startswith("labq: error: "), result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


def since(days: float) -> str:
    return f"since={NOW - days * DAY}&until={NOW}"


# ------------------------------------------------------------------------------ the routes


def test_a_user_sees_their_own_jobs_of_the_last_week_by_default(server: Any) -> None:
    srv, ids = server
    status, answer = api(srv, ANN, "/v1/history")
    assert status == 200 and answer["complete"]
    assert [j["id"] for j in answer["jobs"]] == [ids["ann_new"]]
    status, answer = api(srv, ANN, f"/v1/history?{since(50)}")
    assert [j["id"] for j in answer["jobs"]] == [ids["ann_new"], ids["ann_old"]]
    old = answer["jobs"][1]
    assert old["name"] == "old-bert" and old["gpus"] == 2 and old["workdir"] == f"/srv/{ANN}"
    assert old["cpu_seconds"] == 1800 and old["memory_peak_bytes"] == 5 << 30
    assert old["gpu_seconds"] == 7200 and old["billed"] == 21600 and not old["private"]
    assert "command" not in old


def test_everyones_jobs_show_their_public_fields_only(server: Any) -> None:
    srv, ids = server
    status, answer = api(srv, ANN, f"/v1/history?all=1&{since(50)}")
    assert status == 200
    by_id = {j["id"]: j for j in answer["jobs"]}
    assert set(by_id) == set(ids.values())
    for key in ("ben_old", "ben_new"):
        ben = by_id[ids[key]]
        assert ben["private"] and ben["user"] == BEN and ben["state"] in ("SUCCEEDED", "FAILED")
        assert ben["workdir"] is None and ben["cpu_seconds"] is None and ben["billed"] is None
        assert ben["exit_code"] is None
    assert by_id[ids["ann_old"]]["billed"] == 21600
    root = srv.call("GET", f"/v1/history?all=1&{since(50)}")[1]
    assert all(not j["private"] and j["billed"] for j in root["jobs"])


def test_filters_by_user_account_state_name_and_range(server: Any) -> None:
    srv, ids = server
    def found(query: str) -> list[str]:
        status, answer = api(srv, ANN, f"/v1/history?{since(50)}&{query}")
        assert status == 200, answer
        return sorted(j["id"] for j in answer["jobs"])
    assert found(f"user={BEN}") == sorted([ids["ben_old"], ids["ben_new"]])
    assert found("all=1&account=vision") == sorted([ids["ann_old"], ids["ann_new"]])
    assert found("all=1&state=FAILED") == [ids["ben_new"]]
    assert found("all=1&name=old-bert,ben-old") == sorted([ids["ann_old"], ids["ben_old"]])
    day = NOW - 40 * DAY
    status, answer = api(srv, ANN, f"/v1/history?all=1&since={day - 10}&until={day + 10}")
    assert [j["id"] for j in answer["jobs"]] == [ids["ann_old"]]


def test_one_job_is_shown_whether_in_the_store_or_the_history(server: Any) -> None:
    srv, ids = server
    status, old = api(srv, ANN, f"/v1/history/{ids['ann_old']}")
    assert status == 200 and old["history"] and old["state"] == "SUCCEEDED"
    assert old["command"] is None and old["node"] == "n1" and old["exit_code"] == 0
    status, new = api(srv, ANN, f"/v1/history/{ids['ann_new']}")
    assert status == 200 and not new["history"] and new["command"] == ["python", "secret.py"]
    status, ben = api(srv, ANN, f"/v1/history/{ids['ben_old']}")
    assert status == 200 and ben["private"] and ben["workdir"] is None
    status, answer = api(srv, ANN, "/v1/history/987654")
    assert status == 404 and "no job 987654" in answer["error"]


def test_the_report_is_a_users_own_under_private_data(server: Any) -> None:
    srv, _ = server
    status, answer = api(srv, ANN, f"/v1/report?{since(50)}")
    assert status == 200 and answer["only_own"]
    assert [(r["user"], r["gpu_seconds"], r["billed"]) for r in answer["rows"]] == [
        (ANN, 7200 + 7200, 3 * (7200 + 7200))]
    status, answer = api(srv, ANN, f"/v1/report?user={BEN}")
    assert status == 403 and "private" in answer["error"]
    status, answer = srv.call("GET", f"/v1/report?{since(50)}")
    assert {r["user"] for r in answer["rows"]} == {ANN, BEN} and not answer["only_own"]


@pytest.mark.parametrize(("query", "words"), [
    ("since=yesterday", "Unix time"), ("until=1e400", "Unix time"),
    (f"since={NOW}&until={NOW - 10}", "after ?until="), ("state=RUNNING", "ended jobs"),
    ("limit=abc", "whole number"),
])
def test_bad_queries_are_refused_in_one_line(server: Any, query: str, words: str) -> None:
    srv, _ = server
    status, answer = api(srv, ANN, f"/v1/history?{query}")
    assert status == 400 and words in answer["error"] and "\n" not in answer["error"]


# ------------------------------------------------------------------------------ the commands


def test_labq_history_prints_a_table_parsable_lines_and_json(server: Any) -> None:
    srv, ids = server
    result = labq_as(srv, ANN, "history", "--since", "now-50days")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["JobID", "JobName", "User", "Account", "State"]
    assert [line.split()[0] for line in lines[1:]] == [ids["ann_old"], ids["ann_new"]]
    result = labq_as(srv, ANN, "history", "-a", "-S", "now-50days", "-p", "--format",
                     "JobID,User,State,ExitCode,Elapsed,GPUHours,TotalCPU,MaxRSS,WorkDir")
    assert result.returncode == 0, result.stderr
    rows = [line.split("|") for line in result.stdout.splitlines()]
    assert rows[0] == ["JobID", "User", "State", "ExitCode", "Elapsed", "GPUHours", "TotalCPU",
                       "MaxRSS", "WorkDir", ""]
    mine = next(r for r in rows if r[0] == ids["ann_old"])
    assert mine == [ids["ann_old"], ANN, "SUCCEEDED", "0", "01:00:00", "2.00", "00:30:00",
                    "5.0G", f"/srv/{ANN}", ""]
    bens = next(r for r in rows if r[0] == ids["ben_new"])
    assert bens[2] == "FAILED" and bens[3] == "(private)" and bens[8] == "(private)"
    result = labq_as(srv, ANN, "history", "-S", "now-50days", "-P", "-n", "-o", "JobID,State",
                     "-s", "CD")
    assert result.stdout.splitlines() == [f"{ids['ann_old']}|SUCCEEDED",
                                          f"{ids['ann_new']}|SUCCEEDED"]
    result = labq_as(srv, ANN, "history", "--json", "-j", f"{ids['ann_old']},{ids['ann_new']}")
    assert [j["id"] for j in json.loads(result.stdout)] == [ids["ann_old"], ids["ann_new"]]


@pytest.mark.parametrize(("args", "words"), [
    (("--since", "last tuesday"), "--since: cannot read the time"),
    (("--until", "now-3fortnights"), "unknown unit"),
    (("--since", "2026-13-01"), "month must be in 1..12"),
    (("--since", "now", "--until", "now-1days"), "is after --until"),
    (("--format", "JobID,Bogus"), "no column 'Bogus'"),
    (("--format", "JobID%x"), "width after %"),
    (("--state", "RUNNING"), "holds ended jobs"),
    (("--user", ANN, "--all"), "not both"),
])
def test_bad_history_options_are_one_line_and_exit_2(server: Any, args: tuple[str, ...],
                                                     words: str) -> None:
    srv, _ = server
    one_error(labq_as(srv, ANN, "history", *args), 2, words)


def test_labq_report_as_a_table_csv_and_json(server: Any) -> None:
    srv, _ = server
    result = labq_as(srv, ANN, "report", "--since", "now-50days", "--csv")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "kind,account,user,gpu_hours,billed_gpu_hours,first_day,last_day"
    assert lines[1].startswith("account,vision,,4.0000,12.0000,")
    assert lines[2].startswith(f"user,vision,{ANN},4.0000,12.0000,")
    assert lines[3].startswith("total,,,4.0000,12.0000,")
    result = labq_as(srv, ANN, "report", "--since", "now-50days")
    assert "yours only" in result.stdout and "TOTAL" in result.stdout
    report = json.loads(labq_as(srv, ANN, "report", "-S", "now-50days", "--json").stdout)
    assert report["total"]["gpu_hours"] == 4.0 and report["only_own"]
    one_error(labq_as(srv, ANN, "report", "--user", BEN), 1, "private")
    one_error(labq_as(srv, ANN, "report", "--since", "soon"), 2, "--since")


def test_labq_eff_of_a_job_in_the_history_and_in_the_store(server: Any) -> None:
    srv, ids = server
    result = labq_as(srv, ANN, "eff", ids["ann_old"])
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert f"Job ID: {ids['ann_old']} (from the history)" in text
    assert "Wall time: 01:00:00, 100% of its limit 01:00:00" in text
    assert "GPU time: 2.00 GPU-hours (billed 6.00)" in text
    assert "CPU time: 00:30:00 (measured on n1)" in text
    assert "Peak memory: 5.0GB" in text
    figures = json.loads(labq_as(srv, ANN, "eff", ids["ann_new"], "--json").stdout)
    assert figures["cpu_seconds"] == 1800 and figures["wall_seconds"] == 7200
    result = labq_as(srv, ANN, "eff", ids["ben_new"])
    assert "CPU time: hidden (private_data)" in result.stdout
    one_error(labq_as(srv, ANN, "eff", "987654"), 1, "no job 987654")


def test_show_falls_back_to_the_history_for_a_job_that_left_the_store(server: Any) -> None:
    """`job_anywhere` (what `labq show` calls) and `show_text` on the record it gets."""
    srv, ids = server
    code = ("import json, sys; from scheduler.cli.common import job_anywhere; "
            "from scheduler.cli.queue_view import show_text; "
            "job = job_anywhere(sys.argv[1]); print(json.dumps(job)); "
            "print('\\n'.join(show_text(job, 0, None)))")
    entry = pwd.getpwnam(ANN)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/", "LABQ_HOME": str(srv.dir),
           "LABQ_SOCKET": srv.socket, "TZ": "UTC"}
    def run(job_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, job_id], env=env, cwd="/",
                              user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
                              capture_output=True, text=True, timeout=60)
    result = run(ids["ann_old"])
    assert result.returncode == 0, result.stderr
    first, *text = result.stdout.splitlines()
    assert json.loads(first)["history"] is True
    shown = dict(line.strip().split(": ", 1) for line in text if ": " in line)
    assert shown["name"] == "old-bert" and shown["state"] == "SUCCEEDED"
    assert "command" not in shown and shown["exit code"] == "0"
    assert shown["history"].startswith("from the history: its command")
    assert shown["GPU time"] == "2.00 GPU-hours"
    result = run(ids["ann_new"])
    assert json.loads(result.stdout.splitlines()[0])["command"] == ["python", "secret.py"]
    result = run("987654")
    assert result.returncode == 1 and result.stderr.strip().startswith("labq: error: no job")
