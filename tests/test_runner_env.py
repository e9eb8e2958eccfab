"""What a job gets from its runner (agents.runner): its submitter's environment less what labq
sets or never passes, labq's own variables, a private TMPDIR that goes with the job, its batch
script as captured at submit, and stderr apart when asked.

The real runner, started by the agent's executor from a start record, runs the jobs as a real
unprivileged user (the tests run as root, as CI does); no store is needed for that.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import shlex
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from agents.cgroups import Layout
from agents.executor import Executor
from agents.jobdirs import remove_job_dir, remove_tree
from agents.runner import (
    DEFAULT_PATH,
    SPEC_FILE,
    RunSpec,
    RunState,
    job_environment,
)
from scheduler.model import Job, JobState
from scheduler.noderun import EXITED, FAILED, RUNNING, StartRecord
from scheduler.store import Store
from tests.builders import processes
from tests.e2e_stack import ensure_user

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs jobs as other users: needs root")
NODE = "n1"
_ids = itertools.count(int(time.time()) % 100000 * 100)


@pytest.fixture(scope="module")
def user() -> Any:
    return ensure_user("alice") if os.geteuid() == 0 else pwd.getpwuid(os.getuid())


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="labq-runner-work-"))
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def keep() -> Iterator[Path]:
    """A directory of root's, with a file, that no job may remove through a link."""
    path = Path(tempfile.mkdtemp(prefix="labq-keep-"))
    os.chmod(path, 0o755)
    (path / "precious").write_text("still here")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def executor(tmp_path: Path) -> Executor:
    # start() and the cleanup of runs never touch the store.
    return Executor(cast(Store, None), NODE, tmp_path / "agent", Layout("none", None),
                    grace_s=1.0, simulated=True)


def make_job(workdir: Path, command: list[str], **kw: Any) -> Job:
    fields: dict[str, Any] = {"time_limit_s": 600, "account": "lab", "user": "alice",
                              "gpus": 1}
    fields.update(kw)
    return Job(id=str(next(_ids)), state=JobState.RUNNING, command=command,
               submitted_at=time.time(), workdir=str(workdir), **fields)


def wait_state(rundir: Path, phases: set[str], timeout: float = 20) -> RunState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = RunState.read(rundir)
        if state is not None and state.phase in phases:
            return state
        time.sleep(0.05)
    raise AssertionError(f"{rundir} never reached {phases}: {RunState.read(rundir)}")


def run(tmp_path: Path, job: Job, gpus: list[int] | None = None,
        ex: Executor | None = None) -> tuple[RunState, RunSpec]:
    """Run one attempt of `job` to its end as the agent would; its final state and spec."""
    ex = ex or executor(tmp_path)
    record = StartRecord.for_job(job, gpus or [0])
    ex.start(record)
    rundir = ex.runs_dir / record.key
    return wait_state(rundir, {EXITED, FAILED}), RunSpec.load(rundir)


def out_of(job: Job) -> str:
    return (Path(job.workdir) / f"labq-{job.id}.out").read_text()


def env_lines(text: str) -> dict[str, str]:
    """`env -0` output as a dict (values may hold newlines)."""
    return dict(item.split("=", 1) for item in text.split("\0") if "=" in item)


# ---------------------------------------------------------------------- the environment

SUBMITTED = {
    "PATH": "/home/alice/venv/bin:/usr/local/bin:/usr/bin:/bin",
    "VIRTUAL_ENV": "/home/alice/venv", "MY_VAR": "x y\nz", "LD_LIBRARY_PATH": "/opt/cuda/lib64",
    "OMP_NUM_THREADS": "4", "RAY_DEDUP_LOGS": "0",
    # none of these may reach the job
    "LD_PRELOAD": "/tmp/evil.so", "LD_AUDIT": "/tmp/audit.so", "LD_DEBUG": "all",
    "GCONV_PATH": "/tmp/gconv", "LABQ_JOB_ID": "999", "LABQ_SOCKET": "/tmp/fake.sock",
    "LABQ_ANYTHING": "1", "CUDA_VISIBLE_DEVICES": "0,1,2,3", "CUDA_DEVICE_ORDER": "FASTEST_FIRST",
    "ROCR_VISIBLE_DEVICES": "0", "HIP_VISIBLE_DEVICES": "0", "RAY_ADDRESS": "10.0.0.1:6379",
    "RAY_TMPDIR": "/tmp/other", "RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN_PATH": "/tmp/t",
    "RAY_OVERRIDE_RESOURCES": '{"GPU": 8}', "TMPDIR": "/tmp/shared", "HOME": "/root",
    "USER": "root", "LOGNAME": "root", "SHELL": "/bin/zsh", "SLURM_JOB_ID": "5",
    "SLURM_PROCID": "0", "PWD": "/home/alice", "BAD\0NAME": "x", "GOOD": "bad\0value", "A=B": "c",
}


def test_the_exact_environment_a_job_gets() -> None:
    record = StartRecord(id="17_3", attempt=1, user="alice", command=["true"], workdir="/w",
                         env=SUBMITTED, gpu_indices=[1, 3], output="/w/o", time_limit_s=3600,
                         name="train", account="lab", submit_dir="/home/alice/proj",
                         array_job="17", array_task=3)
    spec = RunSpec(record, node="n1", simulated=True, api_socket="/run/labq/api.sock")
    account = pwd.struct_passwd(("alice", "x", 1001, 1001, "", "/home/alice", "/bin/bash"))
    env = job_environment(spec, account, "/tmp/labq-ray", "/tmp/labq-17_3.1-x/tmp", 1000.7)
    assert env == {
        "PATH": "/home/alice/venv/bin:/usr/local/bin:/usr/bin:/bin",  # the submitter's wins
        "LANG": "C.UTF-8", "VIRTUAL_ENV": "/home/alice/venv", "MY_VAR": "x y\nz",
        "LD_LIBRARY_PATH": "/opt/cuda/lib64", "OMP_NUM_THREADS": "4", "RAY_DEDUP_LOGS": "0",
        "HOME": "/home/alice", "USER": "alice", "LOGNAME": "alice", "SHELL": "/bin/bash",
        "TMPDIR": "/tmp/labq-17_3.1-x/tmp", "PWD": "/w",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1,3",
        "LABQ_JOB_ID": "17_3", "LABQ_NODE": "n1", "LABQ_USER": "alice", "LABQ_GPUS": "2",
        "LABQ_JOB_NAME": "train", "LABQ_ACCOUNT": "lab", "LABQ_SUBMIT_DIR": "/home/alice/proj",
        "LABQ_JOB_END_TIME": "4600", "LABQ_ARRAY_JOB_ID": "17", "LABQ_ARRAY_TASK_ID": "3",
        "LABQ_SOCKET": "/run/labq/api.sock",
        "RAY_TMPDIR": "/tmp/labq-ray", "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": "/tmp/labq-ray/token", "RAY_OVERRIDE_RESOURCES": '{"GPU": 2}',
    }


def test_without_a_submitted_path_or_the_new_fields_a_job_gets_the_defaults() -> None:
    spec = RunSpec(StartRecord(id="5", attempt=0, user="alice", command=["true"], workdir="/w",
                               env={"PATH": ""}, gpu_indices=[], output="/w/o",
                               time_limit_s=0), node="n1")
    account = pwd.struct_passwd(("alice", "x", 1001, 1001, "", "/home/alice", ""))
    env = job_environment(spec, account, "/r", "/t", 1000.0)
    assert env["PATH"] == DEFAULT_PATH and env["SHELL"] == "/bin/sh"
    assert env["LABQ_JOB_NAME"] == "labq" and env["LABQ_SUBMIT_DIR"] == "/w"
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["LABQ_GPUS"] == "0"
    assert not {"LABQ_JOB_END_TIME", "LABQ_ARRAY_JOB_ID", "LABQ_ARRAY_TASK_ID", "LABQ_SOCKET",
                "LABQ_SERVER", "RAY_OVERRIDE_RESOURCES"} & set(env)


def test_a_job_on_a_node_with_the_tcp_api_is_told_where_it_is() -> None:
    """A job on a node other than the coordinator's host runs labq over TCP (LABQ_SERVER)."""
    record = StartRecord(id="5", attempt=0, user="alice", command=["true"], workdir="/w",
                         env={"LABQ_SERVER": "evil:1"}, gpu_indices=[], output="/w/o",
                         time_limit_s=0)
    spec = RunSpec(record, node="n1", api_server="labq-head:8642")
    account = pwd.struct_passwd(("alice", "x", 1001, 1001, "", "/home/alice", ""))
    assert job_environment(spec, account, "/r", "/t", 1000.0)["LABQ_SERVER"] == "labq-head:8642"


def test_a_spec_written_before_these_fields_still_loads(tmp_path: Path) -> None:
    old = {"job_id": "7", "attempt": 0, "user": "alice", "command": ["true"], "workdir": "/",
           "env": {}, "gpu_indices": [0], "node": "n1", "output": "/o", "grace_s": 10.0,
           "cgroup": "", "runners_cgroup": "", "simulated": False, "api_socket": "",
           "append": False}
    (tmp_path / SPEC_FILE).write_text(json.dumps(old))
    spec = RunSpec.load(tmp_path)
    assert (spec.record.error, spec.record.script, spec.job_dir, spec.record.array_task,
            spec.record.time_limit_s) == ("", "", "", None, 0)
    (tmp_path / SPEC_FILE).write_text(json.dumps({**old, "from_a_newer_agent": 1}))
    assert RunSpec.load(tmp_path).record.id == "7"


def test_a_spec_is_its_start_record_and_what_the_node_knows(tmp_path: Path) -> None:
    """spec.json stays one flat object (the record's id as job_id): written and read back,
    the same spec; every field of the start record reaches the runner."""
    record = StartRecord(id="9", attempt=2, user="alice", command=["python", "x.py"],
                         workdir="/w", env={"A": "1"}, gpu_indices=[0, 2], output="/w/o",
                         time_limit_s=60, error="/w/e", script="#!/bin/sh\n", name="n",
                         account="lab", submit_dir="/s", array_job="8", array_task=1, rank=1,
                         hosts=["h0", "h1"], node_names=["a", "b"], ray_port=20001,
                         ray_token="t")
    spec = RunSpec(record, node="b", append=True, gpu_minors=[3, 5], deny_users=["bob"])
    (tmp_path / SPEC_FILE).write_text(spec.to_json())
    flat = json.loads((tmp_path / SPEC_FILE).read_text())
    assert flat["job_id"] == "9" and "id" not in flat and "record" not in flat
    assert RunSpec.load(tmp_path) == spec
    assert spec.key == record.key == "9.2"


@as_root
def test_a_job_sees_its_submitters_environment_and_only_labqs_gpus_and_names(
        tmp_path: Path, workdir: Path, user: Any) -> None:
    submitted = {k: v for k, v in SUBMITTED.items() if "\0" not in k + v}
    job = make_job(workdir, ["env -0"], env=submitted, name="train", array_job="40",
                   array_task=0, submit_dir="/home/alice/proj", time_limit_s=120, gpus=2)
    began = time.time()
    state, spec = run(tmp_path, job, [1, 3])
    assert (state.phase, state.exit_code) == (EXITED, 0), state
    env = env_lines(out_of(job))
    kept = {k: v for k, v in submitted.items() if k in (
        "PATH", "VIRTUAL_ENV", "MY_VAR", "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "RAY_DEDUP_LOGS")}
    assert {k: env.get(k) for k in kept} == kept
    assert not [k for k in env if k.startswith("SLURM_") or k in (
        "LD_PRELOAD", "LD_AUDIT", "LD_DEBUG", "GCONV_PATH", "ROCR_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES", "RAY_ADDRESS", "LABQ_ANYTHING", "A=B")]
    assert (env["CUDA_VISIBLE_DEVICES"], env["CUDA_DEVICE_ORDER"]) == ("1,3", "PCI_BUS_ID")
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == (user.pw_dir, "alice", "alice")
    assert env["PWD"] == str(workdir)
    assert env["LABQ_JOB_ID"] == job.id and "LABQ_SOCKET" not in env
    assert (env["LABQ_JOB_NAME"], env["LABQ_ACCOUNT"], env["LABQ_SUBMIT_DIR"]) == (
        "train", "lab", "/home/alice/proj")
    assert (env["LABQ_ARRAY_JOB_ID"], env["LABQ_ARRAY_TASK_ID"]) == ("40", "0")
    assert state.started_at is not None
    assert int(began) + 120 <= int(env["LABQ_JOB_END_TIME"]) <= int(state.started_at) + 120
    assert env["RAY_TMPDIR"] == spec.ray_dir and env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_OVERRIDE_RESOURCES"] == '{"GPU": 2}'
    assert env["TMPDIR"] == os.path.join(spec.job_dir, "tmp")
    assert not os.path.lexists(spec.job_dir) and not os.path.lexists(spec.ray_dir)  # gone


# ---------------------------------------------------------------------- TMPDIR

@as_root
def test_tmpdir_is_the_jobs_own_and_goes_with_it_whatever_the_job_did(
        tmp_path: Path, workdir: Path, user: Any, keep: Path) -> None:
    k = shlex.quote(str(keep))
    script = f"""#!/bin/sh
echo "TMP=$TMPDIR"
stat -c 'tmp %U %a' "$TMPDIR"; stat -c 'dir %U %G %a' "${{TMPDIR%/*}}"
echo data > "$TMPDIR/file"
# Replace TMPDIR with a link to a directory the job may not touch: its parent refuses.
mv "$TMPDIR" "$TMPDIR.away" 2>/dev/null && echo MOVED
rm -rf "$TMPDIR" 2>/dev/null; ln -s {k} "$TMPDIR" 2>/dev/null
[ -L "$TMPDIR" ] && echo REPLACED
# Links to it inside, directories made unremovable for their own user, then TMPDIR itself.
ln -s {k} "$TMPDIR/dirlink"; ln -s {k}/precious "$TMPDIR/filelink"
mkdir -p "$TMPDIR/a/b/c" && touch "$TMPDIR/a/b/c/f" "$TMPDIR/a/f"
chmod 000 "$TMPDIR/a/b/c" "$TMPDIR/a/b" "$TMPDIR/a"
(setsid sh -c 'while :; do touch "$TMPDIR/late" 2>/dev/null; sleep 0.01; done' &)
sleep 0.2
chmod 000 "$TMPDIR"
echo done
"""
    job = make_job(workdir, [], script=script)
    state, spec = run(tmp_path, job)
    assert (state.phase, state.exit_code) == (EXITED, 0), state
    out = out_of(job).splitlines()
    tmp = os.path.join(spec.job_dir, "tmp")
    assert out[:3] == [f"TMP={tmp}", "tmp alice 700", f"dir root {_group(user)} 710"]
    assert "MOVED" not in out and "REPLACED" not in out and out[-1] == "done"
    assert os.path.dirname(spec.job_dir) == tempfile.gettempdir()
    assert os.path.basename(spec.job_dir).startswith(f"labq-{job.id}.0-")
    assert not os.path.lexists(spec.job_dir)
    assert (keep / "precious").read_text() == "still here"
    assert processes("sh -c while :; do touch \"$TMPDIR/late\" 2>/dev/null; sleep 0.01; done"
                     ) == []


def _group(user: Any) -> str:
    import grp

    return grp.getgrgid(user.pw_gid).gr_name


@as_root
def test_removing_a_job_dir_never_follows_links_nor_takes_what_is_not_the_runners(
        tmp_path: Path, keep: Path, user: Any) -> None:
    # Were a TMPDIR ever a link (the job directory prevents it), only the link would go.
    job_dir = tmp_path / "labq-1.0-abc"
    job_dir.mkdir()
    (job_dir / "tmp").symlink_to(keep)
    remove_job_dir(str(job_dir))
    assert not job_dir.exists() and (keep / "precious").exists()
    # A path that is a link, or a directory of someone else's, is left alone.
    link = tmp_path / "labq-2.0-abc"
    link.symlink_to(keep)
    remove_job_dir(str(link))
    assert link.is_symlink() and (keep / "precious").exists()
    theirs = tmp_path / "labq-3.0-abc"
    theirs.mkdir()
    os.chown(theirs, user.pw_uid, user.pw_gid)
    remove_job_dir(str(theirs))
    assert theirs.is_dir()
    remove_job_dir(str(tmp_path / "missing"))
    remove_job_dir("")


@as_root
def test_an_unprivileged_runner_removes_what_its_jobs_made_unremovable(user: Any) -> None:
    """(`labq up` as a user runs jobs as that user: no root to ignore permissions.)"""
    base = Path(tempfile.mkdtemp(prefix="labq-unpriv-"))
    os.chown(base, user.pw_uid, user.pw_gid)
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            outside = base / "outside"
            outside.mkdir()
            (outside / "f").write_text("x")
            os.chmod(outside, 0o500)
            tree = base / "tree"
            (tree / "a" / "b").mkdir(parents=True)
            (tree / "a" / "b" / "f").write_text("x")
            (tree / "link").symlink_to(outside)
            os.chmod(tree / "a" / "b", 0)
            os.chmod(tree / "a", 0)
            os.chmod(tree, 0)
            remove_tree(str(tree))
            ok = not tree.exists() and (outside / "f").exists()
            ok = ok and stat.S_IMODE(outside.stat().st_mode) == 0o500
            os._exit(0 if ok else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    shutil.rmtree(base, ignore_errors=True)
    assert os.waitstatus_to_exitcode(status) == 0


@as_root
def test_the_agent_removes_the_job_dir_of_a_runner_that_died(
        tmp_path: Path, workdir: Path, user: Any) -> None:
    ex = executor(tmp_path)
    job = make_job(workdir, ["sleep 293.5"])
    record = StartRecord.for_job(job, [0])
    ex.start(record)
    rundir = ex.runs_dir / record.key
    state = wait_state(rundir, {RUNNING})
    spec = RunSpec.load(rundir)
    assert os.path.isdir(os.path.join(spec.job_dir, "tmp")) and os.path.isdir(spec.ray_dir)
    os.kill(state.runner_pid, signal.SIGKILL)
    ex._children[record.key].wait(10)
    for pid in processes("sleep 293.5"):  # no cgroup here: the agent cannot find its orphans
        os.kill(pid, signal.SIGKILL)
    ex.runner_lost(record.key, state)
    assert not os.path.lexists(spec.job_dir) and not os.path.lexists(spec.ray_dir)
    # A runner that died before it ran the job (nothing RUNNING to be lost): forgetting the
    # run removes what it left.
    os.mkdir(spec.job_dir)
    os.mkdir(spec.ray_dir)
    os.chown(spec.ray_dir, user.pw_uid, user.pw_gid)
    ex.forget(record.key)
    assert not os.path.lexists(spec.job_dir) and not os.path.lexists(spec.ray_dir)
    assert not rundir.exists()


# ---------------------------------------------------------------------- batch scripts

@as_root
def test_a_shell_batch_script_runs_with_its_arguments_as_submitted(
        tmp_path: Path, workdir: Path, user: Any) -> None:
    source = workdir / "job.sh"
    source.write_text('#!/bin/sh\necho "args: $# [$1] [$2]"\necho "zero: $0"\n'
                      'stat -c "%U %a" "$0"\necho "edited: no"\n')
    job = make_job(workdir, ["a b", "--flag"], script=source.read_text())
    record = StartRecord.for_job(job, [0])
    source.write_text('#!/bin/sh\necho "edited: yes"\n')  # after submit: changes nothing
    ex = executor(tmp_path)
    ex.start(record)
    rundir = ex.runs_dir / record.key
    state = wait_state(rundir, {EXITED, FAILED})
    assert (state.phase, state.exit_code) == (EXITED, 0), state
    spec = RunSpec.load(rundir)
    script_path = os.path.join(spec.job_dir, "labq_script")
    assert out_of(job).splitlines() == ["args: 2 [a b] [--flag]", f"zero: {script_path}",
                                        "alice 700", "edited: no"]
    assert not os.path.lexists(spec.job_dir)


@as_root
def test_an_env_python_batch_script_runs_with_its_arguments(
        tmp_path: Path, workdir: Path, user: Any) -> None:
    script = ("#!/usr/bin/env python3\nimport os, sys\n"
              "print(sys.argv[1:], os.environ['LABQ_JOB_ID'], os.getuid())\n"
              "sys.exit(3)\n")
    job = make_job(workdir, ["x", "y z"], script=script,
                   env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
    state, _ = run(tmp_path, job)
    assert (state.phase, state.exit_code) == (EXITED, 3), state
    assert out_of(job) == f"['x', 'y z'] {job.id} {user.pw_uid}\n"


@as_root
def test_a_script_whose_interpreter_is_missing_fails_with_why(
        tmp_path: Path, workdir: Path, user: Any) -> None:
    job = make_job(workdir, [], script="#!/no/such/interpreter\n")
    state, spec = run(tmp_path, job)
    assert state.phase == FAILED and state.message == (
        "cannot run the batch script: its interpreter (#!/no/such/interpreter) was not found")
    assert not os.path.lexists(spec.job_dir)


# ---------------------------------------------------------------------- stderr apart

@as_root
def test_error_separates_stderr_like_output_and_a_requeue_appends(
        tmp_path: Path, workdir: Path, user: Any) -> None:
    ex = executor(tmp_path)
    job = make_job(workdir, ["echo out; echo err >&2"], error="err-%j.txt")
    state, spec = run(tmp_path, job, ex=ex)
    assert (state.phase, state.exit_code) == (EXITED, 0), state
    err = workdir / f"err-{job.id}.txt"
    assert spec.record.error == str(err)
    assert (out_of(job), err.read_text()) == ("out\n", "err\n")
    info = err.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (user.pw_uid, user.pw_gid, 0o600)
    job.restarts = 1  # the requeued attempt appends to both
    state, _ = run(tmp_path, job, ex=ex)
    assert state.phase == EXITED
    assert (out_of(job), err.read_text()) == ("out\nout\n", "err\nerr\n")


@as_root
def test_error_naming_the_output_file_is_one_file(
        tmp_path: Path, workdir: Path, user: Any) -> None:
    job = make_job(workdir, ["echo 1; echo 2 >&2; echo 3"])
    job.error = f"labq-{job.id}.out"
    state, _ = run(tmp_path, job)
    assert state.phase == EXITED and out_of(job) == "1\n2\n3\n"


@as_root
def test_an_error_file_where_the_user_may_not_write_fails_and_never_as_root(
        tmp_path: Path, workdir: Path, user: Any) -> None:
    private = Path(tempfile.mkdtemp(prefix="labq-root-only-"))  # 0700 root
    job = make_job(workdir, ["true"], error=str(private / "x.err"))
    state, spec = run(tmp_path, job)
    private.rmdir()  # (empty: no x.err was made, as root or otherwise)
    assert state.phase == FAILED and "cannot write error file" in state.message
    assert not os.path.lexists(spec.job_dir)
