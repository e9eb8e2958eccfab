"""End to end on a real `labq up --simulate 1x4`, as real Unix users: jobs run and end, `labq
history` shows them with its filters, `labq report` sums to exactly what the jobs were
charged, `labq eff` prints what they used; then retention moves them out of the hot store (as
the leader would, forced here) and all of it still holds, from the history."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.store import Store, read_secret
from tests.e2e_stack import Stack

pytestmark = pytest.mark.e2e

ENDED = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}
BUSY = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"  # about a second of CPU


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack("1x4").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def jobs(stack: Stack) -> dict[str, dict[str, Any]]:
    """alice's busy 2-GPU job and her failing one, bob's short one: run and ended."""
    ids = {
        "busy": stack.submit("--as", "alice", "--gpus", "2", "--name", "hist-busy", "--",
                             "sh", "-c", BUSY),
        "fails": stack.submit("--as", "alice", "--name", "hist-fails", "--", "sh", "-c",
                              "sleep 1; exit 3"),
        "bob": stack.submit("--as", "bob", "--name", "hist-bob", "--", "sleep", "2"),
    }
    return {key: stack.wait_state(job_id, ENDED, timeout=120) for key, job_id in ids.items()}


def history_as(stack: Stack, user: str, *args: str) -> list[dict[str, Any]]:
    result = stack.labq("history", "--since", "now-1days", "--json", *args, user=user)
    return list(json.loads(result.stdout))


def check_report(stack: Stack, jobs: dict[str, dict[str, Any]]) -> None:
    """The report, as an admin, per user and in all: exactly the jobs' charges."""
    report = stack.labq_json("report", "--since", "now-1days")
    users = {u["user"]: u for a in report["accounts"] for u in a["users"]}
    for user in ("alice", "bob"):
        mine = [j for j in jobs.values() if j["user"] == user]
        assert users[user]["gpu_seconds"] == pytest.approx(sum(j["gpu_seconds"] for j in mine),
                                                           rel=1e-9, abs=1e-6)
        assert users[user]["billed"] == pytest.approx(sum(j["billed"] for j in mine),
                                                      rel=1e-9, abs=1e-6)
    assert report["total"]["gpu_seconds"] == pytest.approx(
        sum(j["gpu_seconds"] for j in jobs.values()), rel=1e-9, abs=1e-6)
    assert report["total"]["gpu_seconds"] > 0
    csv = stack.labq("report", "--since", "now-1days", "--csv").stdout.splitlines()
    assert csv[0].startswith("kind,account,user,gpu_hours,billed_gpu_hours")
    assert any(line.startswith("total,,,") for line in csv)


def check_history(stack: Stack, jobs: dict[str, dict[str, Any]]) -> None:
    mine = history_as(stack, "alice")
    assert [j["id"] for j in mine] == sorted([jobs["busy"]["id"], jobs["fails"]["id"]],
                                             key=int)
    by_id = {j["id"]: j for j in mine}
    fails = by_id[jobs["fails"]["id"]]
    assert fails["state"] == "FAILED" and fails["exit_code"] == 3
    assert by_id[jobs["busy"]["id"]]["gpus"] == 2
    assert [j["id"] for j in history_as(stack, "alice", "--state", "F")] == [fails["id"]]
    assert [j["id"] for j in history_as(stack, "alice", "--name", "hist-busy")] == [
        jobs["busy"]["id"]]
    everyone = {j["id"]: j for j in history_as(stack, "alice", "--all")}
    assert set(everyone) == {j["id"] for j in jobs.values()}
    bobs = everyone[jobs["bob"]["id"]]
    assert bobs["private"] and bobs["workdir"] is None and bobs["state"] == "SUCCEEDED"
    assert history_as(stack, "alice", "--user", "bob", "--account", "nowhere") == []
    lines = stack.labq("history", "--since", "now-1days", "-P", "-o", "JobID,User,State",
                       user="alice").stdout.splitlines()
    assert lines[0] == "JobID|User|State"
    assert f"{fails['id']}|alice|FAILED" in lines


def check_eff(stack: Stack, job: dict[str, Any], from_history: bool) -> None:
    text = stack.labq("eff", job["id"], user="alice").stdout
    assert f"Job ID: {job['id']}" in text and ("(from the history)" in text) == from_history
    assert "Wall time: " in text and "GPU time: " in text
    if job.get("cpu_seconds") is not None:  # the coordinator keeps what the node measured
        assert "CPU time: " in text and "measured on" in text
    else:
        assert "not measured on this node" in text
    figures = json.loads(stack.labq("eff", job["id"], "--json", user="alice").stdout)
    assert figures["gpu_seconds"] == pytest.approx(job["gpu_seconds"])
    assert figures["wall_seconds"] == pytest.approx(job["ended_at"] - job["started_at"])


def force_retention(stack: Stack) -> int:
    """Move every ended job to the history now, with the leader's epoch (as its cycle would
    once they were old enough)."""
    async def run() -> int:
        store = Store.from_url(f"unix://{stack.home / 'valkey' / 'valkey.sock'}", "labq:",
                               "labq-coordinator",
                               read_secret(stack.home / "secrets" / "coordinator.pass"))
        try:
            epoch = int(await store.r.get(store.keys.epoch))
            moved = 0
            while step := await store.expire_done(epoch, time.time(), 0, 0, 400 * 86400):
                moved += step
            return moved
        finally:
            await store.close()
    return asyncio.run(run())


def test_history_report_and_eff_before_and_after_retention(
        stack: Stack, jobs: dict[str, dict[str, Any]]) -> None:
    check_history(stack, jobs)
    check_report(stack, jobs)
    check_eff(stack, jobs["busy"], from_history=False)

    assert force_retention(stack) == 3  # every one left the hot store
    check_history(stack, jobs)
    check_report(stack, jobs)
    check_eff(stack, jobs["busy"], from_history=True)
    shown = stack.labq("show", jobs["busy"]["id"])
    assert "from the history" in shown.stdout and jobs["busy"]["workdir"] in shown.stdout
    as_json = json.loads(stack.labq("show", "--json", jobs["busy"]["id"]).stdout)
    assert as_json["history"] is True and as_json["command"] is None
    assert as_json["gpu_seconds"] == jobs["busy"]["gpu_seconds"]
    gone = stack.labq("show", "999999", check=False)
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1, gone.stderr
    kept = stack.labq_json("history", "-j", jobs["busy"]["id"])[0]
    for field in ("user", "account", "state", "gpus", "node", "started_at", "ended_at",
                  "billed", "gpu_seconds", "cpu_seconds", "memory_peak_bytes", "workdir",
                  "name", "time_limit_s"):
        assert kept[field] == jobs["busy"][field], field
