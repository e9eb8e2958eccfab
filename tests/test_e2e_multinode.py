"""End to end, a job across nodes: a real `labq up` with two simulated nodes of 2 GPUs each;
`labq submit --nodes 2 --gpus 2` holds both nodes' GPUs together, runs the command once (on
its head node) with the node list, and a node lost mid-job ends the whole job, leaving nothing
running on the other node."""

from __future__ import annotations

import os
import pwd
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack("2x2:A100-80GB", LABQ_NODE_TIMEOUT="5", LABQ_HEARTBEAT_INTERVAL="1").start()
    yield s
    s.stop()


def job_processes(job_id: str) -> list[int]:
    """Live processes of the job (its environment names it), on any node."""
    marker = f"LABQ_JOB_ID={job_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ and state != "Z":
            found.append(int(entry.name))
    return found


def allocated(stack: Stack) -> dict[str, int]:
    return {n["name"]: n["gpus_allocated"] for n in stack.labq_json("nodes")}


def idle(stack: Stack) -> None:
    stack.wait(lambda: set(allocated(stack).values()) == {0}, timeout=90,
               what="an idle cluster")


def test_two_nodes_hold_their_gpus_together_and_the_head_runs_the_command(
        stack: Stack) -> None:
    idle(stack)
    marker = stack.workdir / "go"
    probe = (f"echo NODES=$LABQ_NODES RANK=$LABQ_NODE_RANK HEAD=$LABQ_HEAD_NODE "
             f"NAMES=$LABQ_NODE_NAMES N=$LABQ_NUM_NODES CVD=$CUDA_VISIBLE_DEVICES; "
             f"while [ ! -e {marker} ]; do sleep 0.2; done")
    job_id = stack.submit("--as", "alice", "--nodes", "2", "--gpus", "2", "--", probe)
    job: dict[str, Any] = stack.wait_state(job_id, {"RUNNING"}, timeout=60)
    assert job["nodes"] == 2 and job["gpus"] == 4
    names = [part[0] for part in job["parts"]]
    assert sorted(names) == ["sim-0", "sim-1"] and job["node"] == names[0]
    assert all(sorted(gpus) == [0, 1] for _, gpus in job["parts"])
    assert allocated(stack) == {"sim-0": 2, "sim-1": 2}  # both nodes' GPUs, held together
    # the head runs the command; the other node holds its GPUs with a process of alice's
    procs = stack.wait(lambda: len(job_processes(job_id)) >= 2 and job_processes(job_id),
                       timeout=20, what="the job's processes on both nodes")
    owners = {os.stat(f"/proc/{pid}").st_uid for pid in procs}
    assert owners == {pwd.getpwnam("alice").pw_uid}
    shown = stack.labq("show", job_id).stdout
    assert "sim-0, GPU 0,1" in shown and "sim-1, GPU 0,1" in shown and "(head)" in shown
    assert "4 (2 on each of 2 nodes)" in shown
    marker.write_text("")
    os.chmod(marker, 0o644)
    done = stack.wait_state(job_id, {"SUCCEEDED", "FAILED"}, timeout=60)
    assert done["state"] == "SUCCEEDED", done
    log = stack.labq("logs", job_id, as_root=True).stdout
    hosts = log.split("NODES=", 1)[1].split()[0].split(",")
    assert len(hosts) == 2 and f"HEAD={hosts[0]}" in log
    assert f"RANK=0 HEAD={hosts[0]} NAMES={','.join(names)} N=2 CVD=0,1" in log
    assert log.count("NODES=") == 1  # the command ran once, on the head node
    # freed together, and nothing of the job is left on either node
    stack.wait(lambda: allocated(stack) == {"sim-0": 0, "sim-1": 0}, timeout=20,
               what="both nodes' GPUs freed")
    stack.wait(lambda: not job_processes(job_id), timeout=20, what="no process of the job")


def test_a_node_lost_mid_job_ends_the_whole_job_and_stops_the_other_node(
        stack: Stack) -> None:
    idle(stack)
    job_id = stack.submit("--as", "alice", "--nodes", "2", "--gpus", "2", "--",
                          "sleep", "301.5")
    job = stack.wait_state(job_id, {"RUNNING"}, timeout=60)
    head, other = (part[0] for part in job["parts"])
    stack.wait(lambda: len(job_processes(job_id)) >= 2, timeout=20, what="both parts running")
    frozen = stack.pids(f"agent --node {other}")
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)  # alive to the supervisor, silent to the coordinator
    try:
        lost = stack.wait_state(job_id, {"FAILED"}, timeout=40)
        assert lost["reason"] == "NodeLost"
        # the head node's agent stops the command: nothing runs there any more
        stack.wait(lambda: allocated(stack)[head] == 0, timeout=20, what="head's GPUs freed")
        stack.wait(lambda: not [p for p in job_processes(job_id)
                                if "301.5" in Path(f"/proc/{p}/cmdline").read_text()],
                   timeout=30, what="the command stopped on the head node")
        assert allocated(stack)[other] == 0  # the store freed the lost node's GPUs too
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    # back, the lost node's agent stops what it was holding for the job
    stack.wait(lambda: not job_processes(job_id), timeout=40,
               what="nothing of the job left on the node that came back")
    stack.wait(lambda: next(n for n in stack.labq_json("nodes")
                            if n["name"] == other)["state"] == "UP", timeout=30,
               what="node back UP")


def test_cancel_stops_every_node_and_frees_all_gpus_together(stack: Stack) -> None:
    idle(stack)
    job_id = stack.submit("--as", "alice", "--nodes", "2", "--gpus", "1", "--",
                          "sleep", "302.5")
    job = stack.wait_state(job_id, {"RUNNING"}, timeout=60)
    assert job["gpus"] == 2 and len(job["parts"]) == 2
    assert allocated(stack) == {"sim-0": 1, "sim-1": 1}
    # a one-GPU job fits beside it on either node: the two nodes' other GPUs are free
    beside = stack.submit("--as", "bob", "--", "true")
    assert stack.wait_state(beside, {"SUCCEEDED"}, timeout=60)["exit_code"] == 0
    stack.wait(lambda: len(job_processes(job_id)) >= 2, timeout=20, what="both parts running")
    stack.labq("cancel", job_id)
    ended = stack.wait_state(job_id, {"CANCELLED"}, timeout=60)
    assert ended["reason"] == "Cancelled"
    stack.wait(lambda: allocated(stack) == {"sim-0": 0, "sim-1": 0}, timeout=20,
               what="both nodes' GPUs freed")
    stack.wait(lambda: not job_processes(job_id), timeout=30, what="no process of the job")


RAY_PROGRAM = """
import os, time, ray
ray.init()
@ray.remote(num_gpus=1)
def where():
    time.sleep(3)
    return os.environ["LABQ_NODE"], ray.get_gpu_ids()
print("RAY", sorted(ray.get([where.remote() for _ in range(4)])), flush=True)
print("NODES", len([n for n in ray.nodes() if n["Alive"]]), flush=True)
"""


def test_a_ray_program_spreads_over_exactly_the_jobs_gpus_on_both_nodes(stack: Stack) -> None:
    idle(stack)
    script = stack.workdir / "spread.py"
    script.write_text(RAY_PROGRAM)
    os.chmod(script, 0o644)
    job_id = stack.submit("--as", "alice", "--nodes", "2", "--gpus", "2", "--time", "5m",
                          "--", sys.executable, str(script))
    done = stack.wait_state(job_id, {"SUCCEEDED", "FAILED"}, timeout=180)
    log = stack.labq("logs", job_id, as_root=True).stdout
    assert done["state"] == "SUCCEEDED", log[-3000:]
    # 4 one-GPU tasks at once on the job's 2 x 2 GPUs: two on each node, one GPU each
    line = next(x for x in log.splitlines() if x.startswith("RAY "))
    assert line.count("'sim-0'") == 2 and line.count("'sim-1'") == 2, line
    assert "NODES 2" in log
    stack.wait(lambda: allocated(stack) == {"sim-0": 0, "sim-1": 0}, timeout=20,
               what="both nodes' GPUs freed")
    stack.wait(lambda: not job_processes(job_id), timeout=40, what="no Ray of the job left")


def test_a_job_across_nodes_preempts_scavengers_on_both_nodes(stack: Stack) -> None:
    """Scavenger jobs fill both nodes; a normal job across the two takes their GPUs back on
    each node (they are requeued, not lost) and runs; the scavengers run again after it."""
    idle(stack)
    scavengers = [stack.submit("--qos", "scavenger", "--as", "sc", "--gpus", "2", "--",
                               "sleep", "300") for _ in range(2)]
    on = {stack.wait_state(job_id, {"RUNNING"})["node"] for job_id in scavengers}
    assert on == {"sim-0", "sim-1"}
    both = stack.submit("--as", "alice", "--nodes", "2", "--gpus", "2", "--", "sh", "-c",
                        "echo across $LABQ_NODE_NAMES")
    done = stack.wait_state(both, {"SUCCEEDED", "FAILED"}, timeout=90)
    assert done["state"] == "SUCCEEDED", done
    assert all(stack.job(job_id)["restarts"] == 1 for job_id in scavengers)
    for job_id in scavengers:  # back on the GPUs the job across nodes gave up
        stack.wait_state(job_id, {"RUNNING"}, timeout=60)
    stack.labq("cancel", *scavengers)


def test_labq_step_runs_a_command_on_every_node_of_the_job(stack: Stack) -> None:
    """A job that does not use Ray starts its processes on its other nodes with `labq step`
    (like srun inside an allocation): each runs in that node's part of the job."""
    idle(stack)
    job_id = stack.submit(
        "--as", "alice", "--nodes", "2", "--gpus", "1", "--time", "5m", "--", sys.executable,
        "-m", "scheduler.cli", "step", "--", "sh", "-c",
        'echo "rank $LABQ_NODE_RANK on $LABQ_NODE with GPU $CUDA_VISIBLE_DEVICES"')
    done = stack.wait_state(job_id, {"SUCCEEDED", "FAILED"}, timeout=120)
    log = stack.labq("logs", job_id, as_root=True).stdout
    assert done["state"] == "SUCCEEDED", log[-3000:]
    lines = sorted(x for x in log.splitlines() if x.startswith("rank "))
    parts = {node: gpus for node, gpus in done["parts"]} if done.get("parts") else {}
    assert len(lines) == 2 and lines[0].startswith("rank 0 on ") and \
        lines[1].startswith("rank 1 on "), log[-3000:]
    assert {line.split()[3] for line in lines} == {"sim-0", "sim-1"}, lines
    for line in lines:
        node, gpu = line.split()[3], line.split()[-1]
        assert not parts or [int(gpu)] == parts[node], (line, parts)
