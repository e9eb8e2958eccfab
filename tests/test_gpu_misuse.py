"""A job's process on a GPU labq did not give it: seen by the agent's heartbeat, flagged, kept
off for new jobs, and (policy "stop") the job stopped with the reason.

Real agent, executor, runner and store; the GPUs are the SIMULATED backend's, which puts a
process on the GPUs its `CUDA_VISIBLE_DEVICES` named when it started — as a job that
re-exports `CUDA_VISIBLE_DEVICES=0,1,2,3` would be on real GPUs. Runs as root (jobs run as a
real user).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import pytest

from agents.agent import Agent
from agents.backends.simulated import SimulatedBackend
from agents.cgroups import Layout
from agents.executor import Executor
from scheduler.model import JobSpec, NodeReport
from scheduler.noderun import EXITED, FAILED, RUNNING, RunStatus
from scheduler.store import Store
from tests.builders import processes, start_job
from tests.e2e_stack import ensure_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs jobs as other users: needs root")


async def until(executor: Executor, store: Store, node: str, job_id: str, phases: set[str],
                timeout: float = 20) -> RunStatus:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        await executor.reconcile()
        status = (await store.run_statuses([node]))[node].get(job_id)
        if status is not None and status.phase in phases:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {phases}: {status}")


async def misbehaving_job(store: Store, tmp_path: Path, policy: str, marker: str
                          ) -> tuple[Agent, Executor, str, str]:
    """A 1-GPU job (GPU 1 of 4) that runs a process on all four GPUs."""
    ensure_user("alice")
    node = f"mis-{os.getpid()}-{policy}"
    workdir = Path(tempfile.mkdtemp(prefix="labq-misuse-"))
    os.chmod(workdir, 0o1777)
    epoch = await store.lease("coord", 60_000)
    backend = SimulatedBackend(node, 4)
    executor = Executor(store, node, tmp_path / "agent", Layout("none", None), grace_s=1.0,
                        simulated=True, gpu_misuse_policy=policy)
    agent = Agent(store, backend, node, 1.0, executor)
    await agent.beat_once(time.time())
    spec = JobSpec(user="alice", account="lab", gpus=1, workdir=str(workdir),
                   command=[f"CUDA_VISIBLE_DEVICES=0,1,2,3 sleep {marker}"])
    [job_id] = await store.submit([spec], token=f"t-{time.time_ns()}", now=time.time())
    assert await start_job(store, epoch, job_id, node, [1], 1.0, time.time()) == "OK"
    await until(executor, store, node, job_id, {RUNNING})
    return agent, executor, node, job_id


def gpus_of(report: NodeReport, pid: int) -> dict[int, str | None]:
    """GPU index -> the job the agent reported `pid` as on it (None: not labq's there)."""
    return {g.index: p.labq_job for g in report.gpus for p in g.processes if p.pid == pid}


async def test_a_job_on_gpus_it_was_not_given_is_flagged_and_stopped(
        store: Store, tmp_path: Path, caplog: Any) -> None:
    marker = f"{time.time_ns() % 100000}.25"
    agent, executor, node, job_id = await misbehaving_job(store, tmp_path, "stop", marker)
    deadline = time.monotonic() + 10
    while not processes(f"sleep {marker}") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    [pid] = processes(f"sleep {marker}")
    with caplog.at_level(logging.WARNING, logger="agents.executor"):
        report = agent.report()
    # On its own GPU it is the job's; on the others, a process labq did not start there (so
    # `labq nodes` shows it and no new job is placed on those GPUs).
    assert gpus_of(report, pid) == {0: None, 1: job_id, 2: None, 3: None}
    names = {g.index: p.name for g in report.gpus for p in g.processes if p.pid == pid}
    flagged = f"sleep [job {job_id}, not its GPU]"
    assert names == {0: flagged, 1: "sleep", 2: flagged, 3: flagged}
    node_view = report.gpus
    assert {g.index for g in node_view if any(not p.labq_job for p in g.processes)} == {0, 2, 3}
    reason = (f"GpuMisuse: process {pid} (sleep) of job {job_id} ran on GPU 0, which the job "
              f"was not given (its GPUs: 1)")
    assert f"node {node}: {reason}; stopping the job" in caplog.text
    status = await until(executor, store, node, job_id, {EXITED, FAILED})
    assert (status.phase, status.stopped, status.message) == (EXITED, True, reason)
    assert processes(f"sleep {marker}") == []


async def test_under_warn_the_job_is_flagged_and_keeps_running(
        store: Store, tmp_path: Path, caplog: Any) -> None:
    marker = f"{time.time_ns() % 100000}.75"
    agent, executor, node, job_id = await misbehaving_job(store, tmp_path, "warn", marker)
    deadline = time.monotonic() + 10
    while not processes(f"sleep {marker}") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    [pid] = processes(f"sleep {marker}")
    with caplog.at_level(logging.WARNING, logger="agents.executor"):
        report = agent.report()
        agent.report()  # (logged once)
    assert gpus_of(report, pid) == {0: None, 1: job_id, 2: None, 3: None}
    assert caplog.text.count("GpuMisuse") == 3  # GPUs 0, 2 and 3, once each
    assert "stopping" not in caplog.text
    for _ in range(5):
        await executor.reconcile()
    status = (await store.run_statuses([node]))[node][job_id]
    assert status.phase == RUNNING and processes(f"sleep {marker}") == [pid]
    state = next(iter(executor.local_runs().values()))
    assert state is not None
    executor.stop(f"{job_id}.0", state)
    status = await until(executor, store, node, job_id, {EXITED})
    assert status.stopped and status.message == ""


def test_a_bad_policy_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^gpu_misuse_policy = 'kill': use stop or warn$"):
        Executor(cast(Store, None), "n", tmp_path, Layout("none", None),
                 gpu_misuse_policy="kill")
