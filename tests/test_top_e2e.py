"""`labq top` against a real `labq up` stack: nodes, GPUs held by jobs, a running job, a waiting
job with its reason, and the caller's quota and budget, as a user sees them."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from rich.console import Console

from scheduler.cli.top import fetch, run_live
from scheduler.client import Client
from tests.e2e_stack import E2E_USER, Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack("2x2:A100-80GB", LABQ_HEARTBEAT_INTERVAL="1").start()
    yield s
    s.stop()


def line_with(text: str, *needles: str) -> str:
    found = [line for line in text.splitlines() if all(n in line for n in needles)]
    assert found, f"no line with {needles} in:\n{text}"
    return found[0]


def test_top_once_shows_the_cluster_as_the_api_reports_it(stack: Stack) -> None:
    me = E2E_USER  # who the stack's labq commands run as
    stack.labq("admin", "budget", "set", "--user", me, "--limit", "100")
    running = [stack.submit("--gpus", "2", "--time", "10m", "--name", f"big{i}", "--",
                            "sleep", "300") for i in range(2)]
    for job_id in running:
        stack.wait_state(job_id, {"RUNNING"})
    waiting = stack.submit("--gpus", "1", "--name", "later", "--", "sleep", "1")
    stack.wait(lambda: stack.job(waiting)["reason"] == "Resources", what="reason Resources")
    stack.wait(lambda: all(n["gpus_allocated"] == 2 for n in stack.labq_json("nodes")),
               what="both nodes fully allocated")

    out = stack.labq("top", "--once").stdout

    assert "2/2 nodes up, 4/4 GPUs allocated, 2 running, 1 waiting" in out
    for node in ("sim-0", "sim-1"):
        assert "UP sim" in line_with(out, node)
    for job_id in running:
        job = stack.job(job_id)
        where = f"{job['node']}:{','.join(str(i) for i in job['gpu_indices'])}"
        assert me in line_with(out, job_id, "RUNNING", where)
        for index in job["gpu_indices"]:  # the GPU table names the job and its user
            gpu_row = [line for line in out.splitlines()
                       if f" {index} " in line and f" {job_id} " in line and me in line]
            assert gpu_row, f"GPU {index} of job {job_id} not shown as held:\n{out}"
    queued = line_with(out, waiting, "PENDING")
    assert "Resources:" in queued and me in queued
    assert f"{me}: " in out and "GPU-hours used" in out
    assert f"budget user {me}: " in out and "of 100.0 billed GPU-hours left" in out

    # live mode draws the same data, frame after frame
    client = Client(stack.home / "labq.sock", timeout=10)
    console = Console(file=io.StringIO(), width=220, force_terminal=True, color_system=None)
    run_live(lambda: fetch(client), 0.5, 10, console=console, max_frames=2)
    client.close()
    live = console.file.getvalue()  # type: ignore[attr-defined]
    assert live.count("4/4 GPUs allocated") >= 2 and "coordinator not reachable" not in live
    for job_id in [*running, waiting]:
        stack.labq("cancel", job_id)
