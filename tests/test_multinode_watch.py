"""How the coordinator reads a job across nodes: the head node's run is the job's, RUNNING
once every node runs its part; a part that fails or ends under it ends the whole job."""

from __future__ import annotations

import pwd
from dataclasses import replace as dataclass_replace
from typing import Any

from agents.runner import HOLD_ARGV, RunSpec, job_environment, part_argv
from scheduler.coordinator.reactions import (
    EndOrRequeue,
    Finish,
    MarkRunning,
    combined_status,
    react,
)
from scheduler.model import Job, JobState
from scheduler.noderun import EXITED, FAILED, RUNNING, STARTING, RunStatus, StartRecord

T0 = 1_000_000.0


def job(started: float | None = None) -> Job:
    return Job(id="7", user="alice", account="lab",
               state=JobState.RUNNING if started else JobState.STARTING, gpus=4,
               command=["true"], submitted_at=T0 - 60, time_limit_s=3600, node="a",
               gpu_indices=[0, 1], nodes=2,
               parts=[["a", [0, 1]], ["b", [2, 3]]], started_at=started, starting_at=T0 - 5)


def running(at: float) -> RunStatus:
    return RunStatus(0, RUNNING, started_at=at)


def test_running_only_once_every_node_runs_its_part() -> None:
    head_only = combined_status(job(), {"a": running(T0), "b": RunStatus(0, STARTING)})
    assert head_only is not None and head_only.phase == STARTING
    assert react(job(), head_only, T0 + 1) == []
    both = combined_status(job(), {"a": running(T0), "b": running(T0 + 1)})
    assert react(job(), both, T0 + 2) == [MarkRunning(T0)]


def test_the_head_nodes_end_is_the_jobs() -> None:
    ended = RunStatus(0, EXITED, started_at=T0, ended_at=T0 + 50, exit_code=3)
    status = combined_status(job(T0), {"a": ended, "b": running(T0)})
    assert react(job(T0), status, T0 + 60) == [
        Finish(JobState.FAILED, 3, "NonZeroExitCode 3", T0 + 50)]


def test_a_part_that_ends_or_fails_under_the_job_ends_it() -> None:
    lost = RunStatus(0, EXITED, started_at=T0, ended_at=T0 + 20, exit_code=137)
    status = combined_status(job(T0), {"a": running(T0), "b": lost})
    assert react(job(T0), status, T0 + 30) == [EndOrRequeue("RunnerLost", T0 + 20)]
    failed = RunStatus(0, FAILED, message="no such user on b")
    (action,) = react(job(), combined_status(job(), {"a": running(T0), "b": failed}), T0 + 1)
    assert isinstance(action, Finish) and "no such user on b" in action.reason


def test_an_earlier_attempts_report_is_not_this_ones() -> None:
    old = RunStatus(1, RUNNING, started_at=T0)  # (job.restarts is 0)
    status = combined_status(job(), {"a": running(T0), "b": old})
    assert status is not None and status.phase == STARTING


def test_each_node_runs_its_part_with_the_node_list() -> None:
    base = RunSpec(StartRecord(id="7", attempt=0, user="alice", command=["true"], workdir="/w",
                               env={}, gpu_indices=[0, 1], output="/w/o", time_limit_s=0,
                               node_names=["a", "b"], hosts=["host-a", "host-b"], rank=1),
                   node="b")

    def replace(spec: RunSpec, **changes: Any) -> RunSpec:
        return dataclass_replace(spec, record=dataclass_replace(spec.record, **changes))

    account = pwd.struct_passwd(("alice", "x", 1001, 1001, "", "/home/alice", "/bin/bash"))
    env = job_environment(base, account, "/r", "/t", 1000.0)
    assert (env["LABQ_NODES"], env["LABQ_NODE_NAMES"], env["LABQ_NUM_NODES"],
            env["LABQ_NODE_RANK"], env["LABQ_HEAD_NODE"]) == (
        "host-a,host-b", "a,b", "2", "1", "host-a")
    # without a Ray port: the head runs the command, the others hold their GPUs
    assert part_argv(replace(base, rank=0), ["python", "x.py"]) == ["python", "x.py"]
    assert part_argv(base, ["python", "x.py"]) == list(HOLD_ARGV)
    # with one: the head starts the job's Ray first, the others join it
    ray = replace(base, ray_port=23456)
    assert part_argv(replace(ray, rank=0), ["python", "x.py"])[-8:] == [
        "head", "host-a", "23456", "2", "2", "--", "python", "x.py"]
    rest = part_argv(ray, ["python", "x.py"])
    # the other node's step server (`labq step`) on host-b, LABQ_STEP_PORT + its rank, and
    # beside it the node's Ray worker
    assert rest[1:6] == ["-m", "agents.steps", "serve", "host-b", "23458"]
    assert rest[6] == "--" and rest[-4:] == ["worker", "host-a:23456", "host-b", "2"]
    assert job_environment(ray, account, "/r", "/t", 1000.0)["LABQ_STEP_PORT"] == "23457"
    # a job of one node: its command, no node list
    single = RunSpec(StartRecord(id="8", attempt=0, user="alice", command=["true"],
                                 workdir="/w", env={}, gpu_indices=[0], output="/w/o",
                                 time_limit_s=0), node="a")
    assert part_argv(single, ["true"]) == ["true"]
    assert "LABQ_NODES" not in job_environment(single, account, "/r", "/t", 1000.0)
