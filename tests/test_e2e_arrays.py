"""End to end, as real Unix users on a real `labq up`: arrays (one record, throttle, task ids
and variables, one queue line, cancel of an array or one task), dependencies and waiting
(afterok chains, a dependency that can never be met, --wait and `labq wait` exit codes), and
changing jobs (update of a pending job, a running job's limit, requeue, cancel by filter)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e_stack import Stack, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack("1x2:A100-80GB").start()
    yield s
    s.stop()


def as_alice(stack: Stack, *args: str, check: bool = True) -> Any:
    return stack.labq(*args, user="alice", check=check)


def show(stack: Stack, job_id: str) -> dict[str, Any]:
    return dict(stack.labq_json("show", job_id))


def wait_state(stack: Stack, job_id: str, states: set[str], timeout: float = 60) -> dict[str, Any]:
    return dict(wait_until(lambda: (j := show(stack, job_id))["state"] in states and j,
                           timeout, f"job {job_id} in {states}"))


def test_an_array_runs_its_tasks_throttled_with_their_index(stack: Stack) -> None:
    array_id = as_alice(stack, "submit", "--array", "0-5%1", "--time", "1m", "--",
                        'echo "task $LABQ_ARRAY_JOB_ID/$LABQ_ARRAY_TASK_ID"; sleep 1'
                        ).stdout.strip()
    assert array_id.isdigit()  # one id for the whole array
    line = wait_until(lambda: [j for j in stack.labq_json("queue", "--all")
                               if j["id"].startswith(f"{array_id}_[")], 30, "the array's line")
    assert line[0]["array_throttle"] == 1 and line[0]["user"] == "alice"
    queue = as_alice(stack, "queue").stdout
    assert f"{array_id}_[" in queue and "%1]" in queue  # the waiting part as one line
    first = wait_state(stack, f"{array_id}_0", {"SUCCEEDED"})
    assert first["array_job"] == array_id and first["array_task"] == 0
    running = [j for j in stack.labq_json("queue", "--all") if j.get("array_job") == array_id
               and j["state"] in ("STARTING", "RUNNING")]
    assert len(running) <= 1  # %1: one at a time, though 2 GPUs are free
    done = wait_state(stack, array_id, {"SUCCEEDED"}, timeout=90)
    assert done["array_states"] == {"SUCCEEDED": 6} and done["exit_code"] == 0
    log = stack.labq("logs", f"{array_id}_3", as_root=True).stdout
    assert f"task {array_id}/3" in log


def test_cancel_one_task_then_the_whole_array(stack: Stack) -> None:
    array_id = as_alice(stack, "submit", "--array", "0-9%1", "--", "sleep 30").stdout.strip()
    wait_state(stack, f"{array_id}_0", {"RUNNING"})
    as_alice(stack, "cancel", f"{array_id}_7")  # not a job yet: it never runs
    assert show(stack, f"{array_id}_7")["state"] == "CANCELLED"
    refused = stack.labq("cancel", array_id, user="bob", check=False)
    assert refused.returncode != 0 and "belongs to alice" in refused.stderr
    as_alice(stack, "cancel", array_id)
    summary = wait_state(stack, array_id, {"CANCELLED"})
    assert summary["array_states"] == {"CANCELLED": 10}
    assert not [j for j in stack.labq_json("queue", "--all") if j.get("array_job") == array_id]


def test_a_chain_runs_in_order_and_a_broken_one_says_why(stack: Stack) -> None:
    first = as_alice(stack, "submit", "--", "sleep 2; exit 3").stdout.strip()
    ok = as_alice(stack, "submit", "--dependency", f"afterok:{first}", "--", "true"
                  ).stdout.strip()
    notok = as_alice(stack, "submit", "-d", f"afternotok:{first}", "--", "true").stdout.strip()
    waiting = wait_state(stack, ok, {"PENDING"})
    assert waiting["dependency"] == f"afterok:{first}"
    wait_until(lambda: show(stack, ok)["reason"] == "Dependency", 20, "reason Dependency")
    assert wait_state(stack, notok, {"SUCCEEDED"})["exit_code"] == 0
    never = wait_until(lambda: (j := show(stack, ok))["reason"] == "DependencyNeverSatisfied"
                       and j, 30, "DependencyNeverSatisfied")
    assert f"job {first} ended FAILED (exit 3)" in never["reasons"][0]["detail"]
    shown = as_alice(stack, "show", ok).stdout
    assert "DependencyNeverSatisfied" in shown
    missing = as_alice(stack, "submit", "-d", "afterok:999999", "--", "true", check=False)
    assert missing.returncode == 1 and "no job 999999" in missing.stderr
    as_alice(stack, "cancel", ok)


def test_wait_exits_with_the_jobs_exit_code(stack: Stack) -> None:
    began = time.monotonic()
    result = as_alice(stack, "submit", "--wait", "--", "sleep 1; exit 4", check=False)
    assert result.returncode == 4 and time.monotonic() - began >= 1
    job_id = as_alice(stack, "submit", "--", "sleep 1").stdout.strip()
    assert as_alice(stack, "wait", job_id, check=False).returncode == 0
    assert show(stack, job_id)["state"] == "SUCCEEDED"


def test_a_pending_job_is_changed_and_a_running_one_only_shortened(stack: Stack) -> None:
    held = as_alice(stack, "submit", "--hold", "--time", "10m", "--", "true").stdout.strip()
    assert show(stack, held)["state"] == "HELD"
    as_alice(stack, "update", held, "--time", "5m", "--name", "renamed", "--gpus", "2")
    job = show(stack, held)
    assert (job["time_limit_s"], job["name"], job["gpus"]) == (300, "renamed", 2)
    too_big = as_alice(stack, "update", held, "--gpus", "9", check=False)
    assert too_big.returncode != 0 and "largest node" in too_big.stderr
    assert show(stack, held)["gpus"] == 2  # nothing written
    as_alice(stack, "release", held)
    wait_state(stack, held, {"SUCCEEDED"})

    running = as_alice(stack, "submit", "--time", "10m", "--", "sleep 60").stdout.strip()
    wait_state(stack, running, {"RUNNING"})
    longer = as_alice(stack, "update", running, "--time", "20m", check=False)
    assert longer.returncode != 0 and "only admins lengthen" in longer.stderr
    as_alice(stack, "update", running, "--time", "5m")
    assert show(stack, running)["time_limit_s"] == 300
    as_alice(stack, "requeue", running)
    requeued = wait_until(lambda: (j := show(stack, running))["restarts"] == 1 and j, 30,
                          "the requeue")
    assert requeued["state"] in ("PENDING", "STARTING", "RUNNING")
    as_alice(stack, "cancel", "--name", "nothing-matches")  # a filter that matches nothing
    assert show(stack, running)["state"] != "CANCELLED"
    as_alice(stack, "cancel", "--state", "RUNNING,PENDING,STARTING")
    wait_state(stack, running, {"CANCELLED"})


def test_a_jobs_environment_never_reaches_a_log(stack: Stack) -> None:
    """Issue 17: the exported environment is as private as the job, and never logged."""
    secret = "hf_" + "9f3c1d7e" * 4
    job_id = as_alice(stack, "submit", "--env", f"HF_TOKEN={secret}", "--",
                      'test "$HF_TOKEN" = "' + secret + '"').stdout.strip()
    assert wait_state(stack, job_id, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    logs = [p for p in (stack.home / "logs").rglob("*") if p.is_file()]
    assert logs  # the daemons' logs are there to read
    assert not [p for p in logs if secret in p.read_text(errors="replace")]
    assert show(stack, job_id)["env"] == []  # an ended job keeps none
