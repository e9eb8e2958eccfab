"""The node agent's job side against a real store and real processes, as real Unix users.

A runner per job attempt (agents.runner) started by the agent's executor (agents.executor),
driven only by start and stop records in the store, as the coordinator writes them. Runs as
root (CI does): jobs run as the test users made here.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.cgroups import Layout, detect
from agents.executor import Executor, job_of_process
from agents.procinfo import descendants
from agents.runner import RunState
from scheduler.model import GpuInfo, JobSpec, JobState, NodeReport
from scheduler.noderun import EXITED, FAILED, RUNNING, RunStatus
from scheduler.store import Store
from tests.builders import processes, start_job
from tests.e2e_stack import ensure_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs jobs as other users: needs root")
NODE = "n1"


@pytest.fixture(scope="module")
def user() -> Any:
    return ensure_user("alice")


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="labq-agent-work-"))
    os.chmod(path, 0o1777)
    yield path


@pytest.fixture(params=["cgroup", "subreaper"])
def layout(request: pytest.FixtureRequest) -> Layout:
    """Both containments this machine offers: its cgroup v2 tree, and none (subreaper)."""
    if request.param == "subreaper":
        return Layout("none", None)
    found = detect(f"test-{os.getpid()}")
    if found.root is None:
        pytest.skip("no writable cgroup v2 tree on this machine")
    return found


async def start(store: Store, epoch: int, command: str, workdir: Path, gpus: list[int],
                user: str = "alice", **kw: Any) -> str:
    spec = JobSpec(user=user, account="lab", command=[command], gpus=len(gpus),
                   workdir=str(workdir), **kw)
    [job_id] = await store.submit([spec], token=f"t-{time.time_ns()}", now=time.time())
    assert await start_job(store, epoch, job_id, NODE, gpus, 1.0, time.time()) == "OK"
    return job_id


async def until(executor: Executor, store: Store, job_id: str, phases: set[str],
                timeout: float = 20) -> RunStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await executor.reconcile()
        status = (await store.run_statuses([NODE]))[NODE].get(job_id)
        if status is not None and status.phase in phases:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {phases}: {status}")


async def setup(store: Store, tmp_path: Path, layout: Layout, grace: float = 1.0
                ) -> tuple[int, Executor]:
    epoch = await store.lease("coord", 60_000)
    await store.heartbeat(NodeReport(NODE, [GpuInfo(i, f"g{i}", "A100", 1, 0, 0.0)
                                            for i in range(4)]), now=time.time())
    return epoch, Executor(store, NODE, tmp_path / "agent", layout, grace_s=grace,
                           simulated=True)


async def test_a_job_runs_as_its_user_with_only_its_gpus_and_leaves_nothing(
        store: Store, tmp_path: Path, layout: Layout, workdir: Path, user: Any) -> None:
    epoch, executor = await setup(store, tmp_path, layout)
    marker = f"{time.time_ns() % 100000}.5"
    job_id = await start(store, epoch, "id -u; id -g; id -G; echo $HOME $USER $LOGNAME; "
                         "echo CVD=$CUDA_VISIBLE_DEVICES; env; "
                         f"(setsid nohup sleep {marker} >/dev/null 2>&1 &); sleep 0.2",
                         workdir, [1, 3], env={"MY_VAR": "x"})
    status = await until(executor, store, job_id, {EXITED, FAILED})
    assert (status.phase, status.exit_code, status.stopped) == (EXITED, 0, False), status
    assert status.started_at is not None and status.ended_at >= status.started_at
    out = workdir / f"labq-{job_id}.out"
    info = out.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (user.pw_uid, user.pw_gid, 0o600)
    lines = out.read_text().splitlines()
    groups = " ".join(str(g) for g in os.getgrouplist("alice", user.pw_gid))
    assert lines[:4] == [str(user.pw_uid), str(user.pw_gid), groups,
                         f"{user.pw_dir} alice alice"]
    assert "CVD=1,3" in lines and "MY_VAR=x" in lines and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in lines
    env = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("CVD"))
    assert not [k for k in env if "REDIS" in k or "PASSWORD" in k or k == "LABQ_UP_ID"]
    assert processes(f"sleep {marker}") == []  # the double fork went with the job
    if layout.root is not None:
        assert executor.layout.root is not None and executor.layout.root.parent == layout.root
        assert not (executor.layout.root / f"job_{job_id}.0").exists()  # its cgroup is gone
        assert "cpu_usec" in status.usage or layout.kind == "v2-hybrid"


async def test_a_stop_is_sigterm_then_kill_after_the_grace(
        store: Store, tmp_path: Path, layout: Layout, workdir: Path, user: Any) -> None:
    epoch, executor = await setup(store, tmp_path, layout, grace=1.0)
    # It ignores SIGTERM (and so does its child, which inherits that): only the kill ends it.
    job_id = await start(store, epoch, "trap '' TERM; echo ready; sleep 295.5; echo never",
                         workdir, [0])
    await until(executor, store, job_id, {RUNNING})
    out = workdir / f"labq-{job_id}.out"
    deadline = time.monotonic() + 10
    while "ready" not in out.read_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # its trap is set
    assert await store.request_stop(epoch, job_id, JobState.CANCELLED, time.time()) == "OK"
    job = await store.get_job(job_id)
    assert job is not None and await store.send_stop(epoch, job) == "OK"
    began = time.monotonic()
    status = await until(executor, store, job_id, {EXITED})
    assert status.stopped and status.signal == signal.SIGKILL  # it ignored the TERM: killed
    assert 0.9 <= time.monotonic() - began < 15  # after the grace, not before
    assert "never" not in out.read_text()
    assert processes("sleep 295.5") == []


async def test_a_restarted_agent_adopts_its_runners_and_a_forgotten_run_is_killed(
        store: Store, tmp_path: Path, workdir: Path, user: Any) -> None:
    epoch, first = await setup(store, tmp_path, Layout("none", None))
    job_id = await start(store, epoch, "sleep 296.5", workdir, [2])
    running = await until(first, store, job_id, {RUNNING})
    deadline = time.monotonic() + 10
    while not processes("sleep 296.5") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # (RUNNING is the shell's exec; its sleep comes after)
    [sleeper] = processes("sleep 296.5")
    # A new agent (the old one killed): nothing in memory, only the runners' directories.
    second = Executor(store, NODE, tmp_path / "agent", Layout("none", None), grace_s=1.0)
    await second.reconcile()
    assert (await store.run_statuses([NODE]))[NODE][job_id] == running  # same run, adopted
    assert processes("sleep 296.5") == [sleeper]  # never started twice
    assert second.job_of_pid(sleeper) == job_id  # known by the process tree
    # The coordinator ends it (say, its node was declared lost): the agent kills what is left.
    job = await store.get_job(job_id)
    assert job is not None
    assert await store.finish(epoch, job, JobState.FAILED, None, "NodeLost", time.time()) == "OK"
    deadline = time.monotonic() + 15
    while processes("sleep 296.5") and time.monotonic() < deadline:
        await second.reconcile()
        await asyncio.sleep(0.1)
    assert processes("sleep 296.5") == []
    await second.reconcile()
    assert list((tmp_path / "agent" / "runs").iterdir()) == []  # forgotten once ended


@pytest.mark.parametrize(("user_name", "workdir_text", "message"), [
    ("no-such-user-xyz", None, "does not exist on node n1"),
    ("root", None, "never runs a job as root"),
    ("alice", "/nonexistent/dir", "cannot enter work directory /nonexistent/dir"),
])
async def test_a_job_that_cannot_start_fails_with_why(
        store: Store, tmp_path: Path, workdir: Path, user: Any, user_name: str,
        workdir_text: str | None, message: str) -> None:
    epoch, executor = await setup(store, tmp_path, Layout("none", None))
    job_id = await start(store, epoch, "true", Path(workdir_text or workdir), [0],
                         user=user_name)
    status = await until(executor, store, job_id, {FAILED, EXITED})
    assert status.phase == FAILED and message in status.message


async def test_output_where_the_user_may_not_write_fails_and_never_as_root(
        store: Store, tmp_path: Path, user: Any) -> None:
    private = Path(tempfile.mkdtemp(prefix="labq-root-only-"))  # 0700 root
    epoch, executor = await setup(store, tmp_path, Layout("none", None))
    job_id = await start(store, epoch, "true", Path("/"), [0], output=str(private / "x.out"))
    status = await until(executor, store, job_id, {FAILED, EXITED})
    assert status.phase == FAILED and "cannot write output file" in status.message
    assert not (private / "x.out").exists()


def test_processes_are_known_by_process_tree_never_by_environment() -> None:
    runner = os.getpid()
    child = os.fork()
    if child == 0:
        time.sleep(5)
        os._exit(0)
    try:
        assert job_of_process(child, {runner: "9"}) == "9"
        assert job_of_process(child, {}) is None
        assert child in descendants(runner)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_run_state_round_trips(tmp_path: Path) -> None:
    state = RunState(phase="RUNNING", runner_pid=12, started_at=1.0, usage={"cpu_usec": 5})
    state.write(tmp_path)
    assert RunState.read(tmp_path) == state
    assert json.loads((tmp_path / "state.json").read_text())["phase"] == "RUNNING"
    assert RunState.read(tmp_path / "missing") is None
    assert pwd.getpwuid(0).pw_name == "root"


async def test_a_runner_killed_under_its_job_takes_the_job_with_it(
        store: Store, tmp_path: Path, workdir: Path, user: Any) -> None:
    layout = detect(f"test-lost-{os.getpid()}")
    if layout.root is None:
        pytest.skip("no writable cgroup v2 tree on this machine")
    epoch, executor = await setup(store, tmp_path, layout)
    job_id = await start(store, epoch, "sleep 294.5", workdir, [1])
    await until(executor, store, job_id, {RUNNING})
    state = RunState.read(tmp_path / "agent" / "runs" / f"{job_id}.0")
    assert state is not None and processes("sleep 294.5")
    os.kill(state.runner_pid, signal.SIGKILL)  # the OOM killer, say
    status = await until(executor, store, job_id, {EXITED})
    assert status.lost and status.stopped and "runner died" in status.message
    assert processes("sleep 294.5") == []  # its cgroup went with it


def test_one_run_state_type_for_the_runner_and_the_report(tmp_path: Path) -> None:
    """The runner's state.json and the agent's report are one type: the report leaves out
    the runner's own fields; a state.json of an older runner (`stop`) still reads."""
    from scheduler.noderun import RunStatus

    assert RunState is RunStatus
    state = RunState(2, "EXITED", 1.0, 5.0, 143, 15, stopped=True, runner_pid=12,
                     runner_start=99)
    assert state.stop == "requested"
    report = json.loads(state.to_json())
    assert "runner_pid" not in report and "runner_start" not in report
    assert RunStatus.from_json(state.to_json()) == state.reported(2)
    assert state.reported(2).runner_pid == 0
    old = {"phase": "EXITED", "runner_pid": 7, "started_at": 1.0, "ended_at": 2.0,
           "exit_code": 137, "signal": 9, "stop": "lost", "message": "gone", "usage": {},
           "runner_start": 3}
    (tmp_path / "state.json").write_text(json.dumps(old))
    read = RunState.read(tmp_path)
    assert read is not None and (read.stopped, read.lost, read.stop) == (True, True, "lost")
    (tmp_path / "state.json").write_text(json.dumps({**old, "stop": "policy"}))
    read = RunState.read(tmp_path)
    assert read is not None and (read.stopped, read.lost) == (True, False)
