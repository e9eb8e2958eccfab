"""`labq submit`, `labq wait` and the commands that change jobs, against the real API: the
coordinator's `Api` on a Unix socket over the real Valkey (`tests.security_server.ApiServer`,
a fresh key prefix for each test). The CLI runs in this process (click's CliRunner) as this
process's user, root (an admin: `--as USER` for what it submits), or as a real Unix user in
a process of its own where who types matters. What a submit sends is read back from what
the server stored; what is refused leaves the store as it was."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scheduler.cli import submit as submit_cli
from scheduler.cli.errors import LabqGroup
from scheduler.cli.main import main
from scheduler.model import Job, JobState
from scheduler.store.arrays import ArrayRecord
from tests.builders import start_job
from tests.e2e_stack import ensure_user
from tests.security_server import ApiServer

USER = "alice"  # the real Unix user who types labq where who types matters
OTHER = "bob"
LEADER = "cli-test"  # the lease these tests take to move jobs on, as the leader would
NODE, NODE_GPUS = "n1", 4  # ApiServer's one node


@dataclass(frozen=True)
class Ran:
    """A labq command's exit status and output."""

    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def users() -> None:
    for name in (USER, OTHER):
        ensure_user(name)


@pytest.fixture
def server(valkey_url: str, users: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[ApiServer]:
    """The real API on its own key prefix (an empty queue; job ids from 1), the CLI pointed
    at it, and a work directory to submit from."""
    srv = ApiServer(valkey_url).start()
    monkeypatch.setenv("LABQ_HOME", str(srv.dir))
    monkeypatch.setenv("LABQ_SOCKET", srv.socket)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield srv
    srv.stop()


@pytest.fixture
def mine(users: None) -> Iterator[Path]:
    """A directory of USER's to submit from (the test's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="lq-work-"))
    entry = pwd.getpwnam(USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def labq(*args: str) -> Ran:
    """`labq ARGS` in this process, as root."""
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def labq_as(server: ApiServer, user: str, *args: str, cwd: Path | str, **env: str) -> Ran:
    """`labq ARGS` in a process of its own as the Unix user `user`, from `cwd`, with only
    `env` over a plain environment."""
    entry = pwd.getpwnam(user)
    environment = {"PATH": "/usr/bin:/bin", "HOME": entry.pw_dir, "USER": user,
                   "LABQ_HOME": str(server.dir), "LABQ_SOCKET": server.socket, **env}
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", *args], env=environment,
                            cwd=cwd, user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
                            capture_output=True, text=True, timeout=60)
    return Ran(result.returncode, result.stdout, result.stderr)


def one_error(ran: Ran, code: int, *parts: str) -> str:
    """The command's only stderr line, checked: `labq: error: ...` with each of `parts`."""
    lines = ran.stderr.strip().splitlines()
    assert ran.code == code, (ran.code, ran.stderr, ran.stdout)
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith("labq: error: "), lines
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------- the store


def stored(server: ApiServer) -> dict[str, Any]:
    """Everything a submit or a cancel could write: jobs, queues, accounts and arrays."""
    arrays = server.run(server.store.arrays())
    return {**server.state(), "arrays": {a.id: (a.remaining, a.cancelled, a.state, a.hold)
                                         for a in arrays}}


def job_of(server: ApiServer, job_id: str) -> Job:
    job = server.run(server.store.get_job(job_id))
    assert job is not None, f"no job {job_id} stored"
    return job


def array_of(server: ApiServer, array_id: str) -> ArrayRecord:
    array = server.run(server.store.array(array_id))
    assert array is not None, f"no array {array_id} stored"
    return array


def submitted(server: ApiServer) -> list[Job]:
    """The jobs queued (waiting, held or running), in order of id."""
    jobs = [job_of(server, job_id) for job_id in server.state()["jobs"]]
    return sorted(jobs, key=lambda j: int(j.id))


def only_job(server: ApiServer) -> Job:
    jobs = submitted(server)
    assert len(jobs) == 1, [j.id for j in jobs]
    return jobs[0]


def queued(server: ApiServer, user: str = USER, **request: Any) -> str:
    """A job (or array) submitted for `user` through the API, by root: its id."""
    status, answer = server.call("POST", "/v1/jobs", {
        "command": ["sleep", "60"], "workdir": "/tmp", "as_user": user, **request})
    assert status == 200, answer
    (job_id,) = answer["ids"]
    return str(job_id)


def run_job(server: ApiServer, job_id: str) -> None:
    """Start `job_id` on a free GPU and mark it RUNNING, as the leader and its node would."""
    async def run() -> None:
        store = server.store
        epoch = await store.lease(LEADER, 60_000)
        busy = {int(i) for i in await store.r.hkeys(store.keys.node_alloc(NODE))}
        index = min(set(range(NODE_GPUS)) - busy)
        assert await start_job(store, epoch, job_id, NODE, [index], 1.0, time.time()) == "OK"
        assert await store.mark_running(epoch, job_id, time.time()) == "OK"
    server.run(run())


def end_job(server: ApiServer, job_id: str, state: JobState, exit_code: int | None) -> None:
    """End a running job as its node reported it."""
    async def end() -> None:
        store = server.store
        epoch = await store.lease(LEADER, 60_000)
        job = await store.get_job(job_id)
        assert job is not None
        assert await store.finish(epoch, job, state, exit_code, state.value, time.time()) == "OK"
    server.run(end())


def on_each_pause(monkeypatch: pytest.MonkeyPatch, *steps: Callable[[], None]) -> None:
    """Each time `labq wait` pauses between two reads of its jobs, the cluster moves on by
    the next of `steps` (so every state the steps pass through is read once)."""
    left = list(steps)

    def pause(_seconds: float) -> None:
        if not left:
            raise AssertionError("labq kept waiting after every job had ended")
        left.pop(0)()
    monkeypatch.setattr(submit_cli.time, "sleep", pause)


# ---------------------------------------------------------------------------- unknown options


@pytest.mark.parametrize(("args", "parts"), [
    (["--mem-per-cpu", "4G", "--", "python", "train.py"], ["--mem-per-cpu", "memory per CPU"]),
    (["--mem", "lots", "--", "true"], ["--mem 'lots'", "give a size such as 16G"]),
    (["--notify", "begin,lunch", "--", "true"], ["unknown event 'lunch'", "begin, end, fail"]),
    (["--mail-type", "END,NAP", "--", "true"], ["--mail-type", "unknown type 'NAP'"]),
    (["--job-name", "x", "--", "true"], ["--job-name", "use --name x"]),
    (["--job-name=x", "--", "true"], ["--job-name", "use --name x"]),
    (["--gres", "gpu:2", "--", "true"], ["--gres", "use --gpus 2"]),
    (["--gres=gpu:a100:2", "--", "true"], ["--gres", "use --gpus 2 --gpu-type a100"]),
    (["--cpus-per-task=4", "--", "true"], ["--cpus-per-task", "use --cpus 4"]),
    (["-N", "two", "--", "true"], ["-N", "not a valid integer"]),
    (["--chdir", "/tmp", "--", "true"], ["--chdir", "use --workdir /tmp"]),
    (["--gpu", "2", "--", "true"], ["--gpu", "did you mean --gpus"]),
    (["--frobnicate", "--", "true"], ["--frobnicate", "labq submit -h"]),
    (["--gpus"], ["--gpus", "requires an argument"]),
    (["--gpus", "two", "--", "true"], ["--gpus", "not a valid integer"]),
])
def test_an_unknown_or_bad_option_is_one_line_exit_2_and_nothing_is_queued(
    server: ApiServer, args: list[str], parts: list[str]
) -> None:
    before = stored(server)
    one_error(labq("submit", "--as", USER, *args), 2, *parts)
    assert stored(server) == before


def test_the_commands_own_options_are_its_own(server: ApiServer) -> None:
    assert labq("submit", "--as", USER, "python", "train.py", "--lr", "3", "--mem", "2"
                ).code == 0
    assert labq("submit", "--as", USER, "--gpus", "2", "--", "python", "train.py", "--mem", "3"
                ).code == 0
    first, second = submitted(server)
    assert first.command == ["python", "train.py", "--lr", "3", "--mem", "2"]
    assert first.gpus == 1 and first.script == ""
    assert second.command == ["python", "train.py", "--mem", "3"] and second.gpus == 2


def test_other_commands_usage_errors_are_one_line_too(server: ApiServer) -> None:
    queued(server)
    before = stored(server)
    one_error(labq("cancel"), 2, "give job ids, or filters")
    one_error(labq("wait"), 2, "Missing argument")
    one_error(labq("update", "1"), 2, "give what to change")
    one_error(labq("cancel", "--bogus", "1"), 2, "--bogus")
    one_error(labq("cancel", "--state", "SUCCEEDED"), 2, "ended jobs cannot be cancelled")
    assert stored(server) == before


def test_a_labq_group_makes_every_usage_error_one_line() -> None:
    import click

    @click.group(cls=LabqGroup)
    def top() -> None:
        pass

    @top.command()
    @click.option("--count", type=int)
    def one(count: int) -> None:
        pass

    @top.group()
    def inner() -> None:
        pass

    @inner.command()
    @click.argument("name")
    def two(name: str) -> None:
        pass

    runner = CliRunner()
    for args, part in ((["one", "--count", "x"], "'x' is not a valid integer"),
                       (["one", "--nope"], "No such option '--nope'"),
                       (["nothing"], "No such command 'nothing'"),
                       (["inner", "two"], "Missing argument 'NAME'"),
                       (["--nope"], "No such option")):
        result = runner.invoke(top, args)
        one_error(Ran(result.exit_code, result.stdout, result.stderr), 2, part)
    assert isinstance(inner, LabqGroup)


def test_an_empty_command_is_refused(server: ApiServer) -> None:
    before = stored(server)
    one_error(labq("submit", "--as", USER), 2, "empty command")
    one_error(labq("submit", "--as", USER, "--"), 2, "empty command")
    assert stored(server) == before


def test_an_api_error_is_exit_1_and_one_line(server: ApiServer) -> None:
    before = stored(server)
    one_error(labq("submit", "--as", USER, "--qos", "vip", "--", "true"), 1,
              "unknown --qos 'vip'", "normal, scavenger")
    assert stored(server) == before


def test_too_large_an_environment_says_how_to_send_less(server: ApiServer, mine: Path) -> None:
    before = stored(server)
    ran = labq_as(server, USER, "submit", "--", "true", cwd=mine, BIG="x" * 70_000)
    one_error(ran, 1, "max_env_bytes", "--export NONE")
    assert stored(server) == before


# ---------------------------------------------------------------------------- the request


def test_every_option_reaches_the_stored_job(server: ApiServer, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "logs").mkdir()
    first = queued(server)
    ran = labq("submit", "--as", USER, "-G", "2", "--gpu-type", "A100", "-t", "2h", "-A", "nlp",
               "-q", "scavenger", "-J", "run", "-o", "logs/%j.out", "-e", "logs/%j.err", "-a",
               "0-9%2", "-d", f"afterok:{first}", "--requeue", "-H", "--parsable", "--", "true")
    assert ran.code == 0, ran.stderr
    array_id = ran.stdout.strip()
    assert ran.stdout == f"{array_id}\n" and array_id != first
    array = array_of(server, array_id)
    assert (array.spec, array.throttle, array.indices) == ("0-9%2", 2, list(range(10)))
    assert array.hold == "user"
    template = array.template
    for key, value in {"command": ["true"], "gpus": 2, "gpu_type": "A100", "time_limit_s": 7200,
                       "account": "nlp", "qos": "scavenger", "name": "run",
                       "output": "logs/%j.out", "error": "logs/%j.err",
                       "dependency": f"afterok:{first}", "requeue": True, "workdir": str(work),
                       "submit_dir": str(work), "user": USER, "submitter": "root"}.items():
        assert getattr(template, key) == value, key
    # The CLI's own token makes a retried request idempotent: the server keeps it for a while,
    # scoped to who sent it and for whom.
    tokens = server.run(server.store.r.keys(server.store.keys.submit_token(f"root/{USER}/*")))
    assert len(tokens) == 1 and re.fullmatch(r"[0-9a-f]{32}", tokens[0].rsplit("/", 1)[1])


def test_a_bare_array_number_is_read_as_slurm_does_and_said(server: ApiServer) -> None:
    ran = labq("submit", "--as", USER, "--array", "10", "--", "true")
    assert ran.code == 0, ran.stderr
    assert "--array 10 is one task, index 10" in ran.stderr
    assert "--array 0-9" in ran.stderr
    array = array_of(server, ran.stdout.strip())
    assert (array.spec, array.indices) == ("10", [10])


# ---------------------------------------------------------------------------- environment


def test_the_environment_is_exported_filtered_and_env_goes_over_it(
    server: ApiServer, mine: Path
) -> None:
    ran = labq_as(server, USER, "submit", "--env", "WANDB_PROJECT=other", "--env", "X=1", "--",
                  "true", cwd=mine, PATH="/opt/venv/bin:/usr/bin:/bin", WANDB_PROJECT="lab",
                  CUDA_VISIBLE_DEVICES="3", LABQ_ANYTHING="x", SLURM_JOB_ID="5", PWD=str(mine))
    assert ran.code == 0, ran.stderr
    job = only_job(server)
    assert job.user == USER
    env = job.env
    assert env["PATH"] == "/opt/venv/bin:/usr/bin:/bin"
    assert env["WANDB_PROJECT"] == "other" and env["X"] == "1"
    for name in ("CUDA_VISIBLE_DEVICES", "LABQ_ANYTHING", "LABQ_HOME", "LABQ_SOCKET",
                 "SLURM_JOB_ID", "HOME", "USER", "PWD"):
        assert name not in env


def test_export_none_and_names(server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEP", "1")
    monkeypatch.setenv("DROP", "2")
    assert labq("submit", "--as", USER, "--export", "NONE", "--env", "A=1", "--", "true"
                ).code == 0
    assert labq("submit", "--as", USER, "--export", "KEEP,B=2", "--", "true").code == 0
    none, names = submitted(server)
    assert none.env == {"A": "1"}
    assert names.env == {"KEEP": "1", "B": "2"}


def test_an_admins_environment_reaches_another_users_job_only_when_asked(
    server: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "secret")
    assert labq("submit", "--as", OTHER, "--env", "A=1", "--", "true").code == 0
    assert labq("submit", "--as", OTHER, "--export", "ALL", "--", "true").code == 0
    unasked, asked = submitted(server)
    assert unasked.user == asked.user == OTHER
    assert unasked.env == {"A": "1"}
    assert asked.env["ADMIN_TOKEN"] == "secret"


@pytest.mark.parametrize(("args", "parts"), [
    (["--env", "CUDA_VISIBLE_DEVICES=0"], ["--env CUDA_VISIBLE_DEVICES", "labq sets it"]),
    (["--env", "LABQ_X=0"], ["--env LABQ_X", "LABQ_*"]),
    (["--env", "NOEQUALS"], ["NAME=value"]),
    (["--export", "HOME"], ["--export 'HOME'"]),
    (["--export", "NONE,PATH"], ["NONE cannot be combined"]),
])
def test_a_reserved_or_bad_env_is_refused(server: ApiServer, args: list[str], parts: list[str]
                                          ) -> None:
    before = stored(server)
    one_error(labq("submit", "--as", USER, *args, "--", "true"), 2, *parts)
    assert stored(server) == before


# ---------------------------------------------------------------------------- checks here


def test_root_without_as_is_refused_before_anything_is_queued(server: ApiServer) -> None:
    assert os.geteuid() == 0, "these tests run as root (as in CI): labq's own check is tested"
    before = stored(server)
    one_error(labq("submit", "--", "true"), 1, "never runs a job as root", "--as USER")
    one_error(labq("submit", "--as", "root", "--", "true"), 1, "never runs a job as root")
    assert stored(server) == before
    assert labq("submit", "--as", USER, "--", "true").code == 0
    job = only_job(server)
    assert (job.user, job.submitter) == (USER, "root")


def test_the_work_directory_must_exist_and_be_writable(server: ApiServer, mine: Path) -> None:
    before = stored(server)
    one_error(labq_as(server, USER, "submit", "-D", str(mine / "nope"), "--", "true", cwd=mine),
              1, "does not exist")
    (mine / "file").write_text("")
    one_error(labq_as(server, USER, "submit", "-D", str(mine / "file"), "--", "true", cwd=mine),
              1, "not a directory")
    # `/` is root's: USER may be there but not write there, and the job would run as USER.
    one_error(labq_as(server, USER, "submit", "--", "true", cwd="/"), 1,
              "the current directory", "may not write")
    assert stored(server) == before


def test_the_output_folders_must_exist_unless_named_by_the_job(server: ApiServer) -> None:
    before = stored(server)
    one_error(labq("submit", "--as", USER, "-o", "out/x.log", "--", "true"), 1,
              "--output out/x.log", "does not exist")
    one_error(labq("submit", "--as", USER, "-e", "/nope/%j.err", "--", "true"), 1, "--error",
              "/nope")
    assert stored(server) == before
    assert labq("submit", "--as", USER, "-o", "out-%j/x.log", "--", "true").code == 0
    assert only_job(server).output == "out-%j/x.log"


# ---------------------------------------------------------------------------- batch scripts


SCRIPT = """#!/bin/bash
# train on two GPUs
#SBATCH --job-name=train --gpus=a100:2   # as on Slurm
#SBATCH --mem=32G
#LABQ --env A=1 --qos scavenger

python train.py "$@"
"""


def test_a_script_is_stored_as_its_text_with_its_arguments(server: ApiServer, tmp_path: Path
                                                           ) -> None:
    (tmp_path / "work" / "train.sh").write_text(SCRIPT)
    ran = labq("submit", "--as", USER, "train.sh", "--lr", "3")
    assert ran.code == 0, ran.stderr
    job = only_job(server)
    assert job.script == SCRIPT and job.command == ["--lr", "3"]
    assert (job.name, job.gpus, job.gpu_type, job.qos) == ("train", 2, "a100", "scavenger")
    assert job.env == {"A": "1"}
    assert job.mem == 32 * 1024 and job.cpus == 0 and not ran.stderr.strip()


def test_the_command_line_counts_over_the_directives(server: ApiServer, tmp_path: Path) -> None:
    (tmp_path / "work" / "train.sh").write_text(SCRIPT)
    assert labq("submit", "--as", USER, "-J", "mine", "--env", "A=2", "--env", "B=3", "--",
                "./train.sh").code == 0
    job = only_job(server)
    assert (job.name, job.gpus, job.qos) == ("mine", 2, "scavenger")
    assert job.env == {"A": "2", "B": "3"}
    assert job.command == [] and job.script == SCRIPT


def test_a_script_without_a_name_is_named_by_its_file(server: ApiServer, tmp_path: Path) -> None:
    (tmp_path / "work" / "go.sh").write_text("#!/bin/sh\necho hi\n")
    assert labq("submit", "--as", USER, str(tmp_path / "work" / "go.sh")).code == 0
    assert only_job(server).name == "go.sh"


def test_a_file_with_directives_but_no_interpreter_line_is_refused(
    server: ApiServer, tmp_path: Path
) -> None:
    (tmp_path / "work" / "job.sh").write_text("#SBATCH --gpus=2\npython train.py\n")
    before = stored(server)
    one_error(labq("submit", "--as", USER, "job.sh"), 1, "job.sh",
              "first line must start with #!")
    assert stored(server) == before


def test_a_plain_file_that_is_no_script_is_a_command(server: ApiServer, tmp_path: Path) -> None:
    (tmp_path / "work" / "python").write_text("not a script\n")
    assert labq("submit", "--as", USER, "python", "train.py").code == 0
    job = only_job(server)
    assert job.command == ["python", "train.py"] and job.script == ""


@pytest.mark.parametrize(("text", "parts"), [
    ("#!/bin/sh\n" + "# padding\n" * 30_000, ["at most 262,144", "256 KiB"]),
    ("#!/bin/sh\r\necho hi\r\n", ["DOS line breaks"]),
])
def test_a_script_too_large_or_with_dos_lines_is_refused(
    server: ApiServer, tmp_path: Path, text: str, parts: list[str]
) -> None:
    (tmp_path / "work" / "big.sh").write_text(text)
    before = stored(server)
    one_error(labq("submit", "--as", USER, "big.sh"), 1, "big.sh", *parts)
    assert stored(server) == before


@pytest.mark.parametrize(("directive", "code", "parts"), [
    ("#SBATCH --nodes=0", 2, ["line 2", "#SBATCH --nodes=0", "node count"]),
    ("#SBATCH --nodes=2", 1, ["--nodes 2 --gpus 1", "1 node(s) with 1 GPUs"]),
    ("#LABQ --mem-per-cpu 4G", 2, ["line 2", "#LABQ --mem-per-cpu 4G", "memory per CPU"]),
    ("#LABQ --notify lunch", 2, ["unknown event 'lunch'"]),
    ("#LABQ --gpus many", 2, ["job.sh: its directives", "--gpus"]),
    ("#SBATCH --uid=alice", 2, ["--uid", "--as USER"]),
])
def test_a_directive_labq_cannot_follow_is_refused(
    server: ApiServer, tmp_path: Path, directive: str, code: int, parts: list[str]
) -> None:
    (tmp_path / "work" / "job.sh").write_text(f"#!/bin/sh\n{directive}\ntrue\n")
    before = stored(server)
    one_error(labq("submit", "--as", USER, "job.sh"), code, *parts)
    assert stored(server) == before


# ---------------------------------------------------------------------------- wait


def test_submit_wait_exits_with_the_jobs_exit_code(server: ApiServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Read PENDING, then RUNNING, then FAILED with exit code 3.
    on_each_pause(monkeypatch, lambda: run_job(server, only_job(server).id),
                  lambda: end_job(server, only_job(server).id, JobState.FAILED, 3))
    ran = labq("submit", "--as", USER, "--wait", "--", "false")
    assert ran.code == 3, ran.stderr
    assert ran.stdout == "1\n"
    assert ran.stderr == "labq: job 1 FAILED, exit code 3\n"
    assert job_of(server, "1").state == JobState.FAILED


@pytest.mark.parametrize(("ends", "code"), [
    ([(JobState.SUCCEEDED, 0)], 0),
    ([(JobState.SUCCEEDED, 0), (JobState.FAILED, 2), (JobState.FAILED, 7)], 7),
    ([(JobState.CANCELLED, None)], 1),
    ([(JobState.TIMEOUT, -15)], 143),
    ([(JobState.FAILED, 0)], 1),
])
def test_wait_exits_with_the_highest_exit_code(
    server: ApiServer, monkeypatch: pytest.MonkeyPatch,
    ends: list[tuple[JobState, int | None]], code: int,
) -> None:
    ids = [queued(server) for _ in ends]
    for job_id in ids:
        run_job(server, job_id)

    def end_all() -> None:
        for job_id, (state, exit_code) in zip(ids, ends, strict=True):
            end_job(server, job_id, state, exit_code)

    on_each_pause(monkeypatch, end_all)  # read RUNNING, then ended
    ran = labq("wait", *ids)
    assert ran.code == code, ran.stderr
    assert ran.stdout == ""
    said = [f"labq: job {job_id} {state}" + ("" if exit_code is None
                                              else f", exit code {exit_code}")
            for job_id, (state, exit_code) in zip(ids, ends, strict=True)
            if (state, exit_code) != (JobState.SUCCEEDED, 0)]
    assert ran.stderr.splitlines() == said


# ---------------------------------------------------------------------------- update, requeue


def test_update_changes_only_what_is_given(server: ApiServer, mine: Path) -> None:
    job_id = queued(server, name="a", time="1h", gpus=2, qos="scavenger", requeue=True)
    before = job_of(server, job_id)
    ran = labq_as(server, USER, "update", job_id, "--time", "3h", "--name", "b", "--no-requeue",
                  cwd=mine)
    assert ran.code == 0, ran.stderr
    assert ran.stdout == f"job {job_id}: changed name, requeue, time_limit_s\n"
    after = job_of(server, job_id)
    assert (after.time_limit_s, after.name, after.requeue) == (3 * 3600, "b", False)
    for key in ("gpus", "gpu_type", "qos", "account", "dependency", "command", "env", "state"):
        assert getattr(after, key) == getattr(before, key), key


def test_requeue_each_job(server: ApiServer, mine: Path) -> None:
    first, second = queued(server), queued(server)
    run_job(server, first)
    run_job(server, second)
    ran = labq_as(server, USER, "requeue", first, "99999", second, cwd=mine)
    assert ran.code == 1
    # A running job is stopped first; its node then hands it back to the queue.
    assert ran.stdout == f"job {first} stopping\njob {second} stopping\n"
    assert ran.stderr == "labq: error: no job 99999: see `labq queue --all` for job ids\n"
    for job_id in (first, second):
        job = job_of(server, job_id)
        assert (job.state, job.stop_request, job.reason) == (
            JobState.PREEMPTED, "PREEMPTED", "Requeued")


# ---------------------------------------------------------------------------- cancel filters


@pytest.fixture
def queue(server: ApiServer) -> dict[str, str]:
    """USER's running `sweep`, pending `other` and array `arr` (task 0 running, 1-4 not made
    into tasks yet, 2 at a time), and OTHER's pending `sweep`; all charged to nlp. Their ids
    by those names (`bobs` for OTHER's)."""
    ids = {"sweep": queued(server, name="sweep", account="nlp"),
           "other": queued(server, name="other", account="nlp"),
           "arr": queued(server, name="arr", account="nlp", array="0-4%2"),
           "bobs": queued(server, OTHER, name="sweep", account="nlp")}

    async def first_task() -> None:  # as the leader makes an array's tasks in turn
        store = server.store
        array = await store.array(ids["arr"])
        assert array is not None
        assert await store.spawn_tasks(await store.lease(LEADER, 60_000), array, 1) == "OK"

    server.run(first_task())
    run_job(server, ids["sweep"])
    run_job(server, f"{ids['arr']}_0")
    return ids


def reached(server: ApiServer, ids: dict[str, str]) -> list[str]:
    """What cancels reached: jobs ended CANCELLED or asked to stop for it, and array indices
    cancelled before they became tasks."""
    array = array_of(server, ids["arr"])
    marks = {f"{array.id}_{index}" for index in array.cancelled}
    candidates = [ids["sweep"], ids["other"], ids["bobs"],
                  *(f"{array.id}_{index}" for index in array.indices)]
    for job in server.run(server.store.get_jobs(candidates)):
        if job.state == JobState.CANCELLED or job.stop_request == "CANCELLED":
            marks.add(job.id)
    return sorted(marks)


ARR_TASKS = ["{arr}_1", "{arr}_2", "{arr}_3", "{arr}_4"]


@pytest.mark.parametrize(("args", "said", "cancelled"), [
    (["--name", "sweep"], ["{sweep} is stopping"], ["{sweep}"]),  # bob's sweep is his
    # The whole array, once, by its id.
    (["--name", "arr"], ["{arr} is stopping"], ["{arr}_0", *ARR_TASKS]),
    # Its waiting tasks, each by its id.
    (["--name", "arr", "--state", "PD"], [f"{t} cancelled" for t in ARR_TASKS], ARR_TASKS),
    (["--state", "RUNNING"], ["{sweep} is stopping", "{arr}_0 is stopping"],
     ["{sweep}", "{arr}_0"]),
    (["-A", "nlp", "{other}"], ["{other} cancelled"], ["{other}"]),  # with ids: those that match
    (["--name", "nothing"], [], []),
])
def test_cancel_by_filters(server: ApiServer, queue: dict[str, str], mine: Path,
                           args: list[str], said: list[str], cancelled: list[str]) -> None:
    # --no-wait: no node agent here stops running jobs, so the CLI does not wait for them.
    ran = labq_as(server, USER, "cancel", "--no-wait", *(a.format(**queue) for a in args),
                  cwd=mine)
    assert ran.code == 0, ran.stderr
    assert ran.stdout == "".join(f"job {line.format(**queue)}\n" for line in said)
    assert ran.stderr == ("" if said else "labq: no job matches; nothing cancelled\n")
    assert reached(server, queue) == sorted(c.format(**queue) for c in cancelled)


def test_cancel_another_users_jobs_needs_an_admin(server: ApiServer, queue: dict[str, str],
                                                  mine: Path) -> None:
    before = stored(server)
    one_error(labq_as(server, USER, "cancel", "-u", OTHER, cwd=mine), 1, f"-u {OTHER}",
              "only your own jobs", f"{USER} is not an admin")
    assert stored(server) == before
    ran = labq("cancel", "-u", OTHER, "--name", "sweep")  # root: an admin
    assert ran.code == 0, ran.stderr
    assert ran.stdout == f"job {queue['bobs']} cancelled\n"
    assert reached(server, queue) == [queue["bobs"]]


def test_cancel_by_id_is_as_before(server: ApiServer, queue: dict[str, str], mine: Path) -> None:
    task = f"{queue['arr']}_2"  # not made a task yet
    ran = labq_as(server, USER, "cancel", queue["other"], task, cwd=mine)
    assert ran.code == 0, ran.stderr
    assert ran.stdout == f"job {queue['other']} cancelled\njob {task} cancelled\n"
    assert reached(server, queue) == sorted([queue["other"], task])


# ---------------------------------------------------------------------------- CPUs, memory, notify


def test_cpus_memory_and_notify_are_stored_as_asked(server: ApiServer) -> None:
    ran = labq("submit", "--as", USER, "--cpus", "2", "--mem", "1.5G", "--notify", "end,begin",
               "--", "true")
    assert ran.code == 0, ran.stderr
    job = only_job(server)
    assert (job.cpus, job.cpus_per_gpu, job.mem, job.mem_per_gpu) == (2, 0, 1536, 0)
    assert job.notify == "begin,end"


def test_slurm_mail_types_are_read_as_notify_events_with_a_note_for_the_rest(
        server: ApiServer) -> None:
    ran = labq("submit", "--as", USER, "--mail-type", "BEGIN,TIME_LIMIT,TIME_LIMIT_80",
               "--mail-user", "a@b.c", "--cpus-per-gpu", "3", "--mem-per-gpu", "2048", "--",
               "true")
    assert ran.code == 0, ran.stderr
    notes = ran.stderr.strip().splitlines()
    assert len(notes) == 2 and "--mail-user is ignored" in notes[0]
    assert "--mail-type TIME_LIMIT_80: labq has no such event; ignored" in notes[1]
    job = only_job(server)
    assert job.notify == "begin,timeout"
    assert (job.cpus, job.cpus_per_gpu, job.mem, job.mem_per_gpu) == (0, 3, 0, 2048)


def test_a_request_asking_both_of_a_pair_is_refused(server: ApiServer) -> None:
    ran = labq("submit", "--as", USER, "--cpus", "2", "--cpus-per-gpu", "2", "--", "true")
    assert ran.code == 1 and "give --cpus or --cpus-per-gpu, not both" in ran.stderr
    ran = labq("submit", "--as", USER, "--mem", "1G", "--mem-per-gpu", "1G", "--", "true")
    assert ran.code == 1 and "give --mem or --mem-per-gpu, not both" in ran.stderr
