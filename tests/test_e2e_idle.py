"""End to end: idle GPUs on a real `labq up --simulate` stack. A sleeping job leaves its
(simulated) GPU idle, a busy loop does not; `labq nodes`, `labq show` and `/metrics` say so, and
under idle_gpu_policy = "stop" the sleeping job is stopped as IdleGpu and the admin's
notify_command runs."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_stack import E2E_USER, Stack
from tests.test_metrics import parse

pytestmark = pytest.mark.e2e

AFTER_S = 3
STOP_AFTER_S = 25


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="labq-e2e-idle-"))
    notified = home / "notified.txt"
    command = (f'printf "%s|%s|%s|%s\\n" "$LABQ_NOTIFY_EVENT" "$LABQ_NOTIFY_USER" '
               f'"$LABQ_NOTIFY_JOB" "$LABQ_NOTIFY_MESSAGE" >> {notified}')
    (home / "config.toml").write_text(
        f'idle_gpu_policy = "stop"\nidle_gpu_after_s = {AFTER_S}\n'
        f"idle_gpu_stop_after_s = {STOP_AFTER_S}\nnotify_command = {json.dumps(command)}\n")
    s = Stack("1x2:A100-80GB", home=home, LABQ_HEARTBEAT_INTERVAL="1").start()
    yield s
    s.stop()


def gpu_of(stack: Stack, job: dict[str, Any]) -> dict[str, Any]:
    [node] = [n for n in stack.labq_json("nodes") if n["name"] == job["node"]]
    index: int = job["gpu_indices"][0]
    return dict(node["gpus"][index])


def metrics(stack: Stack) -> str:
    return stack.scrape()


def test_sleeping_job_is_idle_busy_job_is_not_then_the_idle_one_is_stopped(
        stack: Stack) -> None:
    sleeper = stack.submit("--name", "sleeper", "--", "sleep", "600")
    busy = stack.submit("--name", "busy", "--", sys.executable, "-c", "while True: pass")
    sleeping_job = stack.wait_state(sleeper, {"RUNNING"})
    busy_job = stack.wait_state(busy, {"RUNNING"})

    # The sleeper's GPU shows idle in `labq nodes`, `labq show` and /metrics.
    stack.wait(lambda: gpu_of(stack, sleeping_job)["idle"], timeout=STOP_AFTER_S - 5,
               what="the sleeping job's GPU reported idle")
    busy_gpu = gpu_of(stack, busy_job)
    assert busy_gpu["idle"] is False and busy_gpu["idle_s"] == 0
    assert busy_gpu["utilization"] >= 0.05  # at or over the threshold: busy
    assert gpu_of(stack, sleeping_job)["utilization"] < 0.05
    assert "IDLE " in stack.labq("nodes").stdout
    shown = stack.labq("show", sleeper).stdout
    assert f"GPU {sleeping_job['gpu_indices'][0]} idle for" in shown
    assert f"policy: stop after {STOP_AFTER_S} s" in shown
    assert stack.job(busy)["idle"] is None
    got = parse(metrics(stack))
    node = {"node": "sim-0", "model": "A100-80GB"}
    assert got.value("labq_gpus_allocated_idle", **node) == 1
    owner = {**node, "account": sleeping_job["account"], "user": sleeping_job["user"]}
    busy_idle = got.value("labq_gpu_allocated_idle_seconds", gpu=str(busy_job["gpu_indices"][0]),
                          **owner)
    sleeper_idle = got.value("labq_gpu_allocated_idle_seconds",
                             gpu=str(sleeping_job["gpu_indices"][0]), **owner)
    assert busy_idle == 0 and sleeper_idle is not None and sleeper_idle >= AFTER_S

    # Under "stop", the sleeper ends CANCELLED with reason IdleGpu; the busy job runs on.
    ended = stack.wait_state(sleeper, {"CANCELLED", "FAILED", "SUCCEEDED"}, timeout=90)
    assert (ended["state"], ended["reason"]) == ("CANCELLED", "IdleGpu")
    assert stack.job(busy)["state"] == "RUNNING"
    lines = (stack.home / "notified.txt").read_text().splitlines()
    events = [line.split("|")[:3] for line in lines]
    assert events == [["gpu_idle", E2E_USER, sleeper],
                      ["gpu_idle_stopped", E2E_USER, sleeper]]
    assert "labq stopped job" in lines[1]
    account = sleeping_job["account"]
    assert parse(metrics(stack)).value("labq_evictions_total", account=account,
                                       reason="IdleGpu") == 1
    assert "cancelled" in stack.labq("cancel", busy).stdout
