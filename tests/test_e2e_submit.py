"""End to end: `labq submit` as users type it, on a real `labq up --simulate 2x4`: what is
refused at submit (nothing queued), the environment a job inherits, batch scripts and their
directives, `--wait` / `labq wait`, `labq update`, `labq requeue` and `labq cancel` by filters.

The tests named `test_new_server_*` need the API's batch scripts, arrays given as Slurm's
specs, held submits, update and requeue (issue 17's server side).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_stack import LABQ, Stack, ensure_user

pytestmark = pytest.mark.e2e

ENDED = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack("2x4").start()
    yield s
    s.stop()


def labq_as(stack: Stack, user: str, *args: str, env: dict[str, str] | None = None,
            cwd: Path | str | None = None) -> subprocess.CompletedProcess[str]:
    """`labq ARGS` as Unix `user`, from `cwd` (default: the stack's work directory), with `env`
    over the stack's environment: what that user's shell would have."""
    entry = ensure_user(user)
    full = {**stack.env, "HOME": entry.pw_dir, "USER": entry.pw_name, **(env or {})}
    return subprocess.run([*LABQ, *args], env=full, capture_output=True, text=True, timeout=120,
                          user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
                          cwd=cwd or stack.workdir)


def submit_as(stack: Stack, user: str, *args: str, **kw: Any) -> str:
    result = labq_as(stack, user, "submit", *args, **kw)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout.strip()


def named(stack: Stack, name: str) -> list[dict[str, Any]]:
    return [j for j in stack.labq_json("queue", "--all", "--done") if j["name"] == name]


def output(stack: Stack, job_id: str) -> str:
    return (stack.workdir / f"labq-{job_id}.out").read_text()


def one_line(result: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("labq: error: "), result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


# ---------------------------------------------------------------------------- refused at submit


def test_an_unknown_option_is_refused_and_nothing_is_queued(stack: Stack) -> None:
    result = labq_as(stack, "alice", "submit", "--name", "refused-ex", "--exclusive", "--",
                     "python", "train.py")
    one_line(result, 2, "--exclusive", "its GPUs only")
    # an option labq has, asking what no node holds: refused by the server, naming the resource
    result = labq_as(stack, "alice", "submit", "--name", "refused-mem", "--mem", "100T", "--",
                     "python", "train.py")
    one_line(result, 1, "not enough memory", "100T", "the largest node has")
    result = labq_as(stack, "alice", "submit", "--name", "refused-jn", "--job-name", "x", "--",
                     "true")
    one_line(result, 2, "--job-name", "use --name")
    assert [named(stack, n) for n in ("refused-ex", "refused-mem", "refused-jn")] == [[]] * 3


def test_root_without_as_is_refused_at_submit(stack: Stack) -> None:
    result = stack.labq("submit", "--name", "by-root", "--", "true", as_root=True, check=False)
    one_line(result, 1, "never runs a job as root", "--as USER")
    assert named(stack, "by-root") == []


def test_a_work_directory_the_user_may_not_write_is_refused_at_submit(stack: Stack) -> None:
    closed = Path(tempfile.mkdtemp(prefix="labq-closed-"))
    os.chmod(closed, 0o755)  # root's: alice may enter, not write
    result = labq_as(stack, "alice", "submit", "--name", "closed-d", "-D", str(closed), "--",
                     "true")
    one_line(result, 1, f"--workdir {closed}", "may not write")
    result = labq_as(stack, "alice", "submit", "--name", "closed-cwd", "--", "true", cwd=closed)
    one_line(result, 1, "the current directory", "may not write")
    result = labq_as(stack, "alice", "submit", "--name", "no-out", "-o", "missing/x.log", "--",
                     "true")
    one_line(result, 1, "--output missing/x.log", "does not exist")
    assert not named(stack, "closed-d") and not named(stack, "closed-cwd")
    assert not named(stack, "no-out")


def test_a_reserved_env_name_is_refused(stack: Stack) -> None:
    result = labq_as(stack, "alice", "submit", "--name", "cvd", "--env",
                     "CUDA_VISIBLE_DEVICES=0", "--", "true")
    one_line(result, 2, "--env CUDA_VISIBLE_DEVICES", "leave it out")
    assert named(stack, "cvd") == []


# ---------------------------------------------------------------------------- environment


def test_an_activated_venv_reaches_the_job_and_labqs_own_names_do_not(stack: Stack) -> None:
    venv = stack.workdir / "venv-e2e"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    fake = venv / "bin" / "python"
    fake.write_text('#!/bin/sh\necho "FAKE-PYTHON $*"\n')
    for path in (venv, venv / "bin", fake):
        os.chmod(path, 0o755)
    shell = {"PATH": f"{venv}/bin:/usr/bin:/bin", "VIRTUAL_ENV": str(venv),
             "WANDB_PROJECT": "lab", "CUDA_VISIBLE_DEVICES": "7", "LABQ_GPUS": "9",
             "TMPDIR": "/nonexistent", "LD_PRELOAD": "/nonexistent.so"}
    job_id = submit_as(stack, "alice", "--", "python hello; echo CVD=$CUDA_VISIBLE_DEVICES "
                       "GPUS=$LABQ_GPUS VENV=$VIRTUAL_ENV W=$WANDB_PROJECT HOME=$HOME "
                       "PRELOAD=${LD_PRELOAD-none} TMP=$TMPDIR", env=shell)
    job = stack.wait_state(job_id, ENDED)
    log = output(stack, job_id)
    assert job["state"] == "SUCCEEDED", log
    assert "FAKE-PYTHON hello" in log
    assert f"CVD={job['gpu_indices'][0]} GPUS=1 VENV={venv} W=lab" in log
    assert f"HOME={ensure_user('alice').pw_dir} PRELOAD=none" in log
    assert "TMP=/nonexistent" not in log


def test_export_none_sends_nothing_of_the_shell_and_names_send_those(stack: Stack) -> None:
    shell = {"MARKER": "from-shell", "OTHER": "other"}
    probe = "echo MARKER=${MARKER-unset} OTHER=${OTHER-unset} SET=${SET-unset} PATH=$PATH"
    none = submit_as(stack, "alice", "--export", "NONE", "--env", "SET=1", "--", probe,
                     env=shell)
    names = submit_as(stack, "alice", "--export", "MARKER,SET=2", "--", probe, env=shell)
    everything = submit_as(stack, "alice", "--", probe, env=shell)
    for job_id in (none, names, everything):
        assert stack.wait_state(job_id, ENDED)["state"] == "SUCCEEDED"
    assert "MARKER=unset OTHER=unset SET=1 PATH=/usr/local/bin:/usr/bin:/bin" in output(
        stack, none)
    assert "MARKER=from-shell OTHER=unset SET=2" in output(stack, names)
    assert "MARKER=from-shell OTHER=other SET=unset" in output(stack, everything)


# ---------------------------------------------------------------------------- wait, cancel


def test_submit_wait_and_labq_wait_exit_with_the_jobs_exit_code(stack: Stack) -> None:
    result = labq_as(stack, "alice", "submit", "--wait", "--", "sh", "-c", "exit 3")
    assert result.returncode == 3, result.stderr
    job_id = result.stdout.strip()
    assert job_id.isdigit()
    assert stack.job(job_id)["state"] == "FAILED"
    ok = submit_as(stack, "alice", "--", "true")
    done = labq_as(stack, "alice", "wait", ok, job_id)
    assert done.returncode == 3 and done.stdout == ""
    assert labq_as(stack, "alice", "wait", ok).returncode == 0


def test_cancel_by_name_cancels_only_the_users_matching_jobs(stack: Stack) -> None:
    mine = [submit_as(stack, "alice", "--name", "filt", "--time", "5m", "--", "sleep 300")
            for _ in range(2)]
    other = submit_as(stack, "alice", "--name", "keep", "--time", "5m", "--", "sleep 300")
    bobs = submit_as(stack, "bob", "--name", "filt", "--time", "5m", "--", "sleep 300")
    result = labq_as(stack, "alice", "cancel", "--name", "filt")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(
        " ".join(f"job {j} cancelled" for j in mine).split())
    for job_id in mine:
        assert stack.job(job_id)["state"] == "CANCELLED"
    assert stack.job(other)["state"] not in ENDED
    assert stack.job(bobs)["state"] not in ENDED
    refused = labq_as(stack, "alice", "cancel", "-u", "bob")
    one_line(refused, 1, "-u bob", "only your own jobs")
    stack.labq("cancel", other, bobs)  # the test user is an admin


# ---------------------------------------------------------------------------- new server


SCRIPT = """#!/bin/sh
# two GPUs, as a Slurm user writes it
#SBATCH --gpus=2
#SBATCH --mem=4G
#LABQ --time 2m --name scripted
echo GPUS=$LABQ_GPUS CVD=$CUDA_VISIBLE_DEVICES ARGS="$*"
echo VERSION=1
"""


def test_new_server_a_batch_script_runs_with_its_directives_as_it_was_submitted(
    stack: Stack
) -> None:
    script = stack.workdir / "e2e-job.sh"
    script.write_text(SCRIPT)
    os.chmod(script, 0o644)  # not executable: its text is what runs
    result = labq_as(stack, "alice", "submit", "--hold", "e2e-job.sh", "a", "b")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # every directive is one labq reads
    job_id = result.stdout.strip()
    job = stack.job(job_id)
    assert (job["state"], job["name"], job["gpus"], job["time_limit_s"], job["mem"]) == (
        "HELD", "scripted", 2, 120, 4096)
    script.write_text(SCRIPT.replace("VERSION=1", "VERSION=2"))  # edited after submit
    assert labq_as(stack, "alice", "release", job_id).returncode == 0
    job = stack.wait_state(job_id, ENDED)
    log = output(stack, job_id)
    assert job["state"] == "SUCCEEDED", log
    cvd = ",".join(str(i) for i in job["gpu_indices"])
    assert f"GPUS=2 CVD={cvd} ARGS=a b" in log and len(job["gpu_indices"]) == 2
    assert "VERSION=1" in log and "VERSION=2" not in log


def test_new_server_an_array_waits_as_one_and_exits_with_its_highest_code(stack: Stack) -> None:
    result = labq_as(stack, "alice", "submit", "--array", "0-2", "--wait", "--", "true")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 1  # one id for the whole array
    result = labq_as(stack, "alice", "submit", "--array", "0-1%1", "--wait", "--", "sh", "-c",
                     "exit 4")
    assert result.returncode == 4, result.stderr


def test_new_server_update_and_requeue(stack: Stack) -> None:
    held = submit_as(stack, "alice", "--hold", "--name", "before", "--time", "2m", "--", "true")
    result = labq_as(stack, "alice", "update", held, "--time", "5m", "--name", "after")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"job {held}: changed ")
    job = stack.job(held)
    assert (job["name"], job["time_limit_s"]) == ("after", 300)
    running = submit_as(stack, "alice", "--time", "5m", "--", "sleep 300")
    stack.wait_state(running, {"RUNNING"})
    result = labq_as(stack, "alice", "requeue", running)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"job {running} ")
    stack.wait(lambda: stack.job(running)["state"] in {"PENDING", "STARTING", "RUNNING"}
               and stack.job(running)["restarts"] >= 1, what="the job to be requeued")
    stack.labq("cancel", held, running)


def test_new_server_cancel_by_name_cancels_a_whole_array(stack: Stack) -> None:
    array = submit_as(stack, "alice", "--array", "0-9%2", "--name", "arrf", "--time", "5m",
                      "--", "sleep 300")
    stack.wait(lambda: any(j["state"] == "RUNNING" for j in named(stack, "arrf")),
               what="a task of the array to start")
    result = labq_as(stack, "alice", "cancel", "--name", "arrf")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0].startswith(f"job {array} ")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.job(array)["state"] not in ENDED:
        time.sleep(0.5)
    assert stack.job(array)["state"] == "CANCELLED"
