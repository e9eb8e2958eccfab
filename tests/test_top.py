"""`labq top`'s pure renderer on data in the API's own shapes, its live loop while the
coordinator is down, and the command's error when there is no coordinator."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Any

from rich.console import Console

from scheduler.cli.top import TopData, queue_head, render, run_live
from scheduler.client import Client
from scheduler.model import GpuInfo, GpuProcess, Job, JobState, Node, NodeState
from scheduler.server.api import public

NOW = 1_800_000_000.0
GIB = 2**30


def text_of(renderable: Any, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return str(out)


def gpu(index: int, util: float | None, used_gib: int | None = 20, **kw: Any) -> GpuInfo:
    return GpuInfo(index=index, uuid=f"GPU-{index}", model="A100-80GB",
                   memory_total_bytes=80 * GIB,
                   memory_used_bytes=None if used_gib is None else used_gib * GIB,
                   utilization=util, power_watts=250.0, temperature_c=60.0, **kw)


def job(job_id: str, user: str, state: JobState, **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"account": "vision", "gpus": 1, "command": ["python", "t.py"],
                              "submitted_at": NOW - 600, "time_limit_s": 7200, **kw}
    return public(Job(id=job_id, user=user, state=state, **fields))


def cluster() -> TopData:
    nodes = [
        Node(name="gpu-b", state=NodeState.DOWN, gpus_total=1, gpu_model="A100-80GB",
             last_heartbeat=NOW - 300, gpus=[gpu(0, None, None, health="LOST")],
             allocations={}),
        Node(name="gpu-a", state=NodeState.UP, gpus_total=3, gpu_model="A100-80GB",
             last_heartbeat=NOW - 1, simulated=True,
             gpus=[gpu(0, 0.91), gpu(1, 0.0, processes=[GpuProcess(pid=77, used_memory_bytes=GIB,
                                                                    name="jupyter")]),
                   gpu(2, 0.0, 0)],
             allocations={0: "17", 1: "18"}),
    ]
    jobs = [
        job("17", "alice", JobState.RUNNING, node="gpu-a", gpu_indices=[0], name="train",
            started_at=NOW - 3723),
        job("18", "bob", JobState.RUNNING, node="gpu-a", gpu_indices=[1],
            started_at=NOW - 100),
        job("21", "carol", JobState.PENDING, gpus=2, reason="Resources", reasons=[
            {"code": "Resources", "detail": "needs 2 free GPUs on one node; the most free is 1"}
        ]),
        job("22", "dave", JobState.PENDING, gpus=1, submitted_at=NOW - 60, reason="Priority",
            reasons=[{"code": "Priority", "detail": "2nd in line"}]),
        job("23", "alice", JobState.HELD, gpus=4, reason="BudgetExhausted", reasons=[
            {"code": "BudgetExhausted", "detail": "user alice has 0.5 of 100 GPU-h left"}]),
    ]
    quota = {
        "user": "alice", "algorithm": "fair_tree", "billed_units": 3 * 36000.0,
        "gpu_seconds": 36000.0, "running_jobs": 1, "running_gpus": 1, "pending_jobs": 1,
        "shares": [
            {"account": "vision", "user": None, "raw_shares": 3, "norm_shares": 0.75,
             "raw_usage": 1e5, "effective_usage": 0.5, "level_fs": 1.5, "fairshare": 0.0,
             "rank": None},
            {"account": "vision", "user": "alice", "raw_shares": 1, "norm_shares": 0.5,
             "raw_usage": 108000, "effective_usage": 0.25, "level_fs": 2.0, "fairshare": 0.625,
             "rank": 2},
        ],
        "budgets": [{"scope": "user", "name": "alice", "period": "month",
                     "period_start": NOW - 86400, "period_end": NOW + 86400,
                     "limit_hours": 100.0, "spent_hours": 95.0, "committed_hours": 4.5,
                     "left_hours": 0.5, "used_ratio": 0.995, "warning": "80%"}],
        "half_life_s": 604800.0, "billing_weights": {"A100": 3.0},
    }
    node_dicts = [n.to_dict() for n in nodes]
    for node in node_dicts:  # /v1/nodes adds idle_s (below the threshold this long) and idle
        for g in node["gpus"]:
            allocated = str(g["index"]) in node["allocations"]
            g["idle_s"] = (900.0 if g["utilization"] == 0.0 else 0.0) if allocated else None
            g["idle"] = bool(g["idle_s"] and g["idle_s"] >= 600)
    return TopData(nodes=node_dicts, jobs=jobs, quota=quota,
                   priority_order=["22", "21"], fetched_at=NOW - 2)


def line_with(text: str, *needles: str) -> str:
    found = [line for line in text.splitlines() if all(n in line for n in needles)]
    assert found, f"no line with {needles} in:\n{text}"
    return found[0]


def test_frame_shows_nodes_gpus_jobs_queue_and_quota() -> None:
    out = text_of(render(cluster(), NOW, interval=2))
    assert "1/2 nodes up, 2/4 GPUs allocated, 2 running, 3 waiting, 1 allocated GPU(s) idle" \
        in out
    # GPUs: utilization, memory, who holds each, and what is odd about it
    assert "91%" in line_with(out, "gpu-a", "UP sim", "17", "alice")
    assert "20/80" in line_with(out, "gpu-a", "alice")
    idle = line_with(out, "18", "bob")
    assert "IDLE 15:00" in idle and "1 process(es) not from labq" in idle
    assert "free" in line_with(out, " 2 ", "0/80")
    assert "health LOST" in line_with(out, "gpu-b", "DOWN")
    # running jobs, oldest first, with run time and limit
    assert "1:02:03" in line_with(out, "17", "train", "alice", "RUNNING", "gpu-a:0")
    assert out.index("gpu-a:0") < out.index("gpu-a:1")
    # the queue head in priority order, then held jobs, each with its reasons
    first = line_with(out, "22", "dave", "PENDING")
    second = line_with(out, "21", "carol", "PENDING")
    held = line_with(out, "23", "alice", "HELD")
    assert first.split()[0] == "1" and second.split()[0] == "2" and held.split()[0] == "3"
    assert "Resources: needs 2 free GPUs on one node" in second
    assert "BudgetExhausted: user alice has 0.5 of 100 GPU-h left" in out
    assert "10:00" in second  # waited since submit
    # the caller's usage, fair share and budget
    assert "alice: 10.00 GPU-hours used, 30.00 billed" in out
    assert "account vision: fair share 0.625, effective usage 0.250" in out
    assert "budget user alice: 0.5 of 100.0 billed GPU-hours left (month to" in out
    assert "80% used" in out


def test_queue_head_is_cut_to_rows_and_says_how_many_more() -> None:
    out = text_of(render(cluster(), NOW, queue_rows=1))
    assert "22" in line_with(out, "dave") and "carol" not in out.split("queue")[1]
    assert "… and 2 more" in out


def test_queue_head_without_priorities_falls_back_to_submit_order() -> None:
    data = cluster()
    data.priority_order = []
    assert [j["id"] for j in queue_head(data)] == ["21", "22", "23"]


def test_frame_when_the_coordinator_is_down() -> None:
    out = text_of(render(None, NOW, error="labq is not running here", interval=2))
    assert "coordinator not reachable: labq is not running here (retrying every 2s)" in out
    stale = text_of(render(cluster(), NOW, error="lost the connection", interval=2))
    assert "showing what it said 2s ago" in stale and "gpu-a" in stale


def test_live_mode_keeps_retrying_while_the_coordinator_is_down(tmp_path: Any) -> None:
    client = Client(tmp_path / "labq.sock", timeout=1)  # nothing listens there: a real failure
    from scheduler.cli.top import fetch

    console = Console(file=io.StringIO(), width=160, force_terminal=True, color_system=None)
    run_live(lambda: fetch(client), 0.5, 10, console=console, max_frames=3)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert out.count("coordinator not reachable") >= 3  # each frame drawn, no exception
    assert "retrying every 0.5s" in out


def test_top_once_without_a_coordinator_says_so(tmp_path: Any) -> None:
    env = {**os.environ, "LABQ_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "top", "--once"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "labq: error: labq is not running here" in result.stderr
    assert "start it with `labq up`" in result.stderr
    bad = subprocess.run([sys.executable, "-m", "scheduler.cli", "top", "--interval", "0.1"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--interval" in bad.stderr


def test_a_job_across_nodes_shows_every_node_in_top() -> None:
    from scheduler.cli.top import _running_table

    job = {"id": "9", "name": "big", "user": "alice", "account": "lab", "state": "RUNNING",
           "gpus": 4, "node": "n1", "gpu_indices": [0, 1], "parts": [["n1", [0, 1]],
                                                                   ["n2", [2, 3]]],
           "submitted_at": 0.0, "started_at": 10.0, "time_limit_s": 3600}
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(_running_table([job], 100.0, 120))  # type: ignore[list-item]
    assert "n1:0,1+n2:2,3" in console.export_text()  # each node and its GPUs, the head first
