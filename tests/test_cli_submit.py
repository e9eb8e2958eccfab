"""`labq submit` and the job-changing commands, run in-process (click's CliRunner) against a
fake API on a Unix socket that records every request: what is refused sends nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from scheduler.cli import jobs
from scheduler.cli.main import main
from tests.fake_api import FakeApi


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    home = Path(tempfile.mkdtemp(prefix="lq-"))  # short: a socket path has 108 bytes at most
    monkeypatch.setenv("LABQ_HOME", str(home))
    monkeypatch.delenv("LABQ_SOCKET", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # the tests run as root: be a user
    fake = FakeApi(home / "labq.sock")
    yield fake
    fake.stop()
    shutil.rmtree(home, ignore_errors=True)


def labq(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def one_error(result: Result, code: int, *parts: str) -> str:
    """The result's only stderr line, checked: `labq: error: ...` with each of `parts`."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (result.exit_code, result.stderr, result.output)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("labq: error: "), lines
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def submitted(api: FakeApi) -> dict[str, Any]:
    bodies = api.posted()
    assert len(bodies) == 1, api.requests
    return dict(bodies[0])


# ---------------------------------------------------------------------------- unknown options


@pytest.mark.parametrize(("args", "parts"), [
    (["--mem", "32G", "--", "python", "train.py"], ["--mem", "does not limit memory"]),
    (["--job-name", "x", "--", "true"], ["--job-name", "use --name x"]),
    (["--job-name=x", "--", "true"], ["--job-name", "use --name x"]),
    (["--gres", "gpu:2", "--", "true"], ["--gres", "use --gpus 2"]),
    (["--gres=gpu:a100:2", "--", "true"], ["--gres", "use --gpus 2 --gpu-type a100"]),
    (["-c", "4", "--", "true"], ["-c", "does not reserve CPUs"]),
    (["--cpus-per-task=4", "--", "true"], ["--cpus-per-task", "does not reserve CPUs"]),
    (["--mail-type", "END", "--", "true"], ["--mail-type", "does not send mail"]),
    (["-N", "2", "--", "true"], ["-N", "one node"]),
    (["--chdir", "/tmp", "--", "true"], ["--chdir", "use --workdir /tmp"]),
    (["--gpu", "2", "--", "true"], ["--gpu", "did you mean --gpus"]),
    (["--frobnicate", "--", "true"], ["--frobnicate", "labq submit -h"]),
    (["--gpus"], ["--gpus", "requires an argument"]),
    (["--gpus", "two", "--", "true"], ["--gpus", "not a valid integer"]),
])
def test_an_unknown_or_bad_option_is_one_line_exit_2_and_nothing_is_sent(
    api: FakeApi, args: list[str], parts: list[str]
) -> None:
    one_error(labq("submit", *args), 2, *parts)
    assert api.requests == []


def test_the_commands_own_options_are_its_own(api: FakeApi) -> None:
    assert labq("submit", "python", "train.py", "--lr", "3", "--mem", "2").exit_code == 0
    assert labq("submit", "--gpus", "2", "--", "python", "train.py", "--mem", "3").exit_code == 0
    first, second = api.posted()
    assert first["command"] == ["python", "train.py", "--lr", "3", "--mem", "2"]
    assert second["command"] == ["python", "train.py", "--mem", "3"] and second["gpus"] == 2
    assert "script" not in first


def test_other_commands_usage_errors_are_one_line_too(api: FakeApi) -> None:
    one_error(labq("cancel"), 2, "give job ids, or filters")
    one_error(labq("wait"), 2, "Missing argument")
    one_error(labq("update", "17"), 2, "give what to change")
    one_error(labq("cancel", "--bogus", "17"), 2, "--bogus")
    one_error(labq("cancel", "--state", "SUCCEEDED"), 2, "ended jobs cannot be cancelled")
    assert api.requests == []


def test_a_labq_group_makes_every_usage_error_one_line() -> None:
    import click

    @click.group(cls=jobs.LabqGroup)
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
        one_error(runner.invoke(top, args), 2, part)
    assert isinstance(inner, jobs.LabqGroup)


def test_an_empty_command_is_refused(api: FakeApi) -> None:
    one_error(labq("submit"), 2, "empty command")
    one_error(labq("submit", "--"), 2, "empty command")
    assert api.requests == []


def test_an_api_error_is_exit_1_and_one_line(api: FakeApi) -> None:
    api.answer = lambda m, p, b: (400, {"error": "unknown --qos 'vip'"})
    one_error(labq("submit", "--qos", "vip", "--", "true"), 1, "unknown --qos 'vip'")


def test_too_large_an_environment_says_how_to_send_less(api: FakeApi) -> None:
    api.answer = lambda m, p, b: (400, {"error": "--env is 70,000 bytes in all: the limit is "
                                                 "65,536 (max_env_bytes)"})
    one_error(labq("submit", "--", "true"), 1, "max_env_bytes", "--export NONE")


# ---------------------------------------------------------------------------- the request


def test_every_option_reaches_the_request(api: FakeApi, tmp_path: Path) -> None:
    (tmp_path / "work" / "logs").mkdir()
    result = labq("submit", "-G", "2", "--gpu-type", "A100", "-t", "2h", "-A", "nlp", "-q",
                  "scavenger", "-J", "run", "-o", "logs/%j.out", "-e", "logs/%j.err", "-a",
                  "0-9%2", "-d", "afterok:12", "--requeue", "-H", "--parsable", "--", "true")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "17\n"
    body = submitted(api)
    assert body["command"] == ["true"]
    for key, value in {"gpus": 2, "gpu_type": "A100", "time": "2h", "account": "nlp",
                       "qos": "scavenger", "name": "run", "output": "logs/%j.out",
                       "error": "logs/%j.err", "array": "0-9%2", "dependency": "afterok:12",
                       "requeue": True, "hold": True, "workdir": str(tmp_path / "work"),
                       "submit_dir": str(tmp_path / "work")}.items():
        assert body[key] == value, key
    assert body["token"]


def test_a_bare_array_number_is_read_as_slurm_does_and_said(api: FakeApi) -> None:
    result = labq("submit", "--array", "10", "--", "true")
    assert result.exit_code == 0
    assert "--array 10 is one task, index 10" in result.stderr
    assert "--array 0-9" in result.stderr
    assert submitted(api)["array"] == "10"


# ---------------------------------------------------------------------------- environment


def test_the_environment_is_exported_filtered_and_env_goes_over_it(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/opt/venv/bin:/usr/bin:/bin")
    monkeypatch.setenv("WANDB_PROJECT", "lab")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv("LABQ_ANYTHING", "x")
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    assert labq("submit", "--env", "WANDB_PROJECT=other", "--env", "X=1", "--", "true"
                ).exit_code == 0
    env = submitted(api)["env"]
    assert env["PATH"] == "/opt/venv/bin:/usr/bin:/bin"
    assert env["WANDB_PROJECT"] == "other" and env["X"] == "1"
    for name in ("CUDA_VISIBLE_DEVICES", "LABQ_ANYTHING", "SLURM_JOB_ID", "HOME", "USER", "PWD"):
        assert name not in env


def test_export_none_and_names(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEP", "1")
    monkeypatch.setenv("DROP", "2")
    assert labq("submit", "--export", "NONE", "--env", "A=1", "--", "true").exit_code == 0
    assert labq("submit", "--export", "KEEP,B=2", "--", "true").exit_code == 0
    none, names = api.posted()
    assert none["env"] == {"A": "1"}
    assert names["env"] == {"KEEP": "1", "B": "2"}


def test_an_admins_environment_reaches_another_users_job_only_when_asked(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "secret")
    assert labq("submit", "--as", "bob", "--env", "A=1", "--", "true").exit_code == 0
    assert labq("submit", "--as", "bob", "--export", "ALL", "--", "true").exit_code == 0
    unasked, asked = api.posted()
    assert unasked["env"] == {"A": "1"}
    assert asked["env"]["ADMIN_TOKEN"] == "secret"


@pytest.mark.parametrize(("args", "parts"), [
    (["--env", "CUDA_VISIBLE_DEVICES=0"], ["--env CUDA_VISIBLE_DEVICES", "labq sets it"]),
    (["--env", "LABQ_X=0"], ["--env LABQ_X", "LABQ_*"]),
    (["--env", "NOEQUALS"], ["NAME=value"]),
    (["--export", "HOME"], ["--export 'HOME'"]),
    (["--export", "NONE,PATH"], ["NONE cannot be combined"]),
])
def test_a_reserved_or_bad_env_is_refused(api: FakeApi, args: list[str], parts: list[str]
                                          ) -> None:
    one_error(labq("submit", *args, "--", "true"), 2, *parts)
    assert api.requests == []


# ---------------------------------------------------------------------------- checks here


def test_root_without_as_is_refused_before_anything_is_sent(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    one_error(labq("submit", "--", "true"), 1, "never runs a job as root", "--as USER")
    one_error(labq("submit", "--as", "root", "--", "true"), 1, "never runs a job as root")
    assert api.requests == []
    assert labq("submit", "--as", "alice", "--", "true").exit_code == 0
    assert submitted(api)["as_user"] == "alice"


def test_the_work_directory_must_exist_and_be_writable(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_error(labq("submit", "-D", str(tmp_path / "nope"), "--", "true"), 1, "does not exist")
    (tmp_path / "file").write_text("")
    one_error(labq("submit", "-D", str(tmp_path / "file"), "--", "true"), 1, "not a directory")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as root, everything is
    one_error(labq("submit", "--", "true"), 1, "the current directory", "may not write")
    assert api.requests == []


def test_the_output_folders_must_exist_unless_named_by_the_job(
    api: FakeApi, tmp_path: Path
) -> None:
    one_error(labq("submit", "-o", "out/x.log", "--", "true"), 1, "--output out/x.log",
              "does not exist")
    one_error(labq("submit", "-e", "/nope/%j.err", "--", "true"), 1, "--error", "/nope")
    assert api.requests == []
    assert labq("submit", "-o", "out-%j/x.log", "--", "true").exit_code == 0
    assert submitted(api)["output"] == "out-%j/x.log"


# ---------------------------------------------------------------------------- batch scripts


SCRIPT = """#!/bin/bash
# train on two GPUs
#SBATCH --job-name=train --gpus=a100:2   # as on Slurm
#SBATCH --mem=32G
#LABQ --env A=1 --qos scavenger

python train.py "$@"
"""


def test_a_script_is_sent_as_its_text_with_its_arguments(api: FakeApi, tmp_path: Path) -> None:
    (tmp_path / "work" / "train.sh").write_text(SCRIPT)
    result = labq("submit", "train.sh", "--lr", "3")
    assert result.exit_code == 0, result.stderr
    body = submitted(api)
    assert body["script"] == SCRIPT and body["command"] == ["--lr", "3"]
    assert (body["name"], body["gpus"], body["gpu_type"], body["qos"]) == (
        "train", 2, "a100", "scavenger")
    assert body["env"]["A"] == "1"
    assert result.stderr.strip() == ("labq: warning: train.sh line 4: #SBATCH --mem=32G: labq "
                                     "does not limit memory yet; ignored")


def test_the_command_line_counts_over_the_directives(api: FakeApi, tmp_path: Path) -> None:
    (tmp_path / "work" / "train.sh").write_text(SCRIPT)
    assert labq("submit", "-J", "mine", "--env", "A=2", "--env", "B=3", "--", "./train.sh"
                ).exit_code == 0
    body = submitted(api)
    assert (body["name"], body["gpus"], body["qos"]) == ("mine", 2, "scavenger")
    assert body["env"]["A"] == "2" and body["env"]["B"] == "3"
    assert body["command"] == []


def test_a_script_without_a_name_is_named_by_its_file(api: FakeApi, tmp_path: Path) -> None:
    (tmp_path / "work" / "go.sh").write_text("#!/bin/sh\necho hi\n")
    assert labq("submit", str(tmp_path / "work" / "go.sh")).exit_code == 0
    assert submitted(api)["name"] == "go.sh"


def test_a_file_with_directives_but_no_interpreter_line_is_refused(
    api: FakeApi, tmp_path: Path
) -> None:
    (tmp_path / "work" / "job.sh").write_text("#SBATCH --gpus=2\npython train.py\n")
    one_error(labq("submit", "job.sh"), 1, "job.sh", "first line must start with #!")
    assert api.requests == []


def test_a_plain_file_that_is_no_script_is_a_command(api: FakeApi, tmp_path: Path) -> None:
    (tmp_path / "work" / "python").write_text("not a script\n")
    assert labq("submit", "python", "train.py").exit_code == 0
    body = submitted(api)
    assert body["command"] == ["python", "train.py"] and "script" not in body


@pytest.mark.parametrize(("text", "parts"), [
    ("#!/bin/sh\n" + "# padding\n" * 30_000, ["at most 262,144", "256 KiB"]),
    ("#!/bin/sh\r\necho hi\r\n", ["DOS line breaks"]),
])
def test_a_script_too_large_or_with_dos_lines_is_refused(
    api: FakeApi, tmp_path: Path, text: str, parts: list[str]
) -> None:
    (tmp_path / "work" / "big.sh").write_text(text)
    one_error(labq("submit", "big.sh"), 1, "big.sh", *parts)
    assert api.requests == []


@pytest.mark.parametrize(("directive", "code", "parts"), [
    ("#SBATCH --nodes=2", 2, ["line 2", "#SBATCH --nodes=2", "one node"]),
    ("#LABQ --mem 4G", 2, ["line 2", "#LABQ --mem 4G", "does not limit memory"]),
    ("#LABQ --gpus many", 2, ["job.sh: its directives", "--gpus"]),
    ("#SBATCH --uid=alice", 2, ["--uid", "--as USER"]),
])
def test_a_directive_labq_cannot_follow_is_refused(
    api: FakeApi, tmp_path: Path, directive: str, code: int, parts: list[str]
) -> None:
    (tmp_path / "work" / "job.sh").write_text(f"#!/bin/sh\n{directive}\ntrue\n")
    one_error(labq("submit", "job.sh"), code, *parts)
    assert api.requests == []


# ---------------------------------------------------------------------------- wait


def _states(api: FakeApi, jobs_by_id: dict[str, list[dict[str, Any]]]) -> None:
    """Answer GET /v1/jobs/ID with each of the given records in turn (the last one stays)."""
    def answer(method: str, path: str, body: Any) -> tuple[int, Any]:
        job_id = path.rsplit("/", 1)[1]
        if method == "GET" and job_id in jobs_by_id:
            seq = jobs_by_id[job_id]
            return 200, seq.pop(0) if len(seq) > 1 else seq[0]
        return FakeApi.default(method, path, body)
    api.answer = answer


def test_submit_wait_exits_with_the_jobs_exit_code(api: FakeApi,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs.time, "sleep", lambda s: None)
    _states(api, {"17": [{"state": "PENDING"}, {"state": "RUNNING"},
                         {"state": "FAILED", "exit_code": 3}]})
    result = labq("submit", "--wait", "--", "false")
    assert result.exit_code == 3
    assert result.stdout == "17\n"
    assert result.stderr == "labq: job 17 FAILED, exit code 3\n"


@pytest.mark.parametrize(("records", "code"), [
    ([{"state": "SUCCEEDED", "exit_code": 0}], 0),
    ([{"state": "SUCCEEDED", "exit_code": 0}, {"state": "FAILED", "exit_code": 2},
      {"state": "FAILED", "exit_code": 7}], 7),
    ([{"state": "CANCELLED", "exit_code": None}], 1),
    ([{"state": "TIMEOUT", "exit_code": -15}], 143),
    ([{"state": "FAILED", "exit_code": 0}], 1),
])
def test_wait_exits_with_the_highest_exit_code(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, records: list[dict[str, Any]], code: int
) -> None:
    monkeypatch.setattr(jobs.time, "sleep", lambda s: None)
    ids = [str(20 + i) for i in range(len(records))]
    _states(api, {job_id: [{"state": "RUNNING"}, record]
                  for job_id, record in zip(ids, records, strict=True)})
    result = labq("wait", *ids)
    assert result.exit_code == code, result.stderr
    assert result.stdout == ""
    assert (result.stderr == "") == (code == 0)


# ---------------------------------------------------------------------------- update, requeue


def test_update_sends_only_what_is_given(api: FakeApi) -> None:
    api.answer = lambda m, p, b: (200, {"id": "17", "changed": ["time_limit_s", "name"]})
    result = labq("update", "17", "--time", "3h", "--name", "b", "--no-requeue")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "job 17: changed time_limit_s, name\n"
    assert api.posted("/v1/jobs/17/update") == [{"time": "3h", "name": "b", "requeue": False}]


def test_requeue_each_job(api: FakeApi) -> None:
    def answer(method: str, path: str, body: Any) -> tuple[int, Any]:
        job_id = path.split("/")[3]
        if job_id == "9":
            return 404, {"error": "no job 9"}
        return 200, {"id": job_id, "result": "REQUEUED"}
    api.answer = answer
    result = labq("requeue", "17", "9", "18")
    assert result.exit_code == 1
    assert result.stdout == "job 17 requeued\njob 18 requeued\n"
    assert result.stderr == "labq: error: no job 9\n"


# ---------------------------------------------------------------------------- cancel filters


QUEUE = [
    {"id": "1", "user": "alice", "name": "sweep", "account": "nlp", "state": "RUNNING",
     "array_job": ""},
    {"id": "2", "user": "alice", "name": "other", "account": "nlp", "state": "PENDING",
     "array_job": ""},
    {"id": "3_0", "user": "alice", "name": "arr", "account": "nlp", "state": "RUNNING",
     "array_job": "3"},
    {"id": "3_[1-4%2]", "user": "alice", "name": "arr", "account": "nlp", "state": "PENDING",
     "array_job": "3", "array_tasks": "1-4", "array_throttle": 2},
    {"id": "4", "user": "bob", "name": "sweep", "account": "nlp", "state": "PENDING",
     "array_job": ""},
]


def _queue_api(api: FakeApi, admin: bool = False) -> None:
    def answer(method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "/v1/whoami":
            return 200, {"user": "alice", "uid": 1000, "admin": admin}
        if path.startswith("/v1/jobs?"):
            return 200, [j for j in QUEUE if "all=1" in path or j["user"] == "alice"]
        if method == "POST" and path.endswith("/cancel"):
            return 200, {"id": path.split("/")[3], "result": "CANCELLED"}
        return FakeApi.default(method, path, body)
    api.answer = answer


def cancelled(api: FakeApi) -> list[str]:
    return [p.split("/")[3] for m, p, _ in api.requests if p.endswith("/cancel")]


@pytest.mark.parametrize(("args", "ids"), [
    (["--name", "sweep"], ["1"]),  # bob's sweep is his
    (["--name", "arr"], ["3"]),  # the whole array, once, by its id
    (["--name", "arr", "--state", "PD"], ["3_1", "3_2", "3_3", "3_4"]),  # its waiting tasks
    (["--state", "RUNNING"], ["1", "3_0"]),
    (["-A", "nlp", "2"], ["2"]),  # with ids: those of them that match
    (["--name", "nothing"], []),
])
def test_cancel_by_filters(api: FakeApi, args: list[str], ids: list[str]) -> None:
    _queue_api(api)
    result = labq("cancel", *args)
    assert result.exit_code == 0, result.stderr
    assert cancelled(api) == ids
    assert ("/v1/jobs?user=alice" in [p for _, p, _ in api.requests])


def test_cancel_another_users_jobs_needs_an_admin(api: FakeApi) -> None:
    _queue_api(api)
    one_error(labq("cancel", "-u", "bob"), 1, "-u bob", "only your own jobs")
    assert cancelled(api) == []
    _queue_api(api, admin=True)
    assert labq("cancel", "-u", "bob", "--name", "sweep").exit_code == 0
    assert cancelled(api) == ["4"]
    assert "/v1/jobs?all=1" in [p for _, p, _ in api.requests]


def test_cancel_by_id_is_as_before(api: FakeApi) -> None:
    _queue_api(api)
    result = labq("cancel", "5", "6_2")
    assert result.exit_code == 0
    assert result.stdout == "job 5 cancelled\njob 6_2 cancelled\n"
    assert cancelled(api) == ["5", "6_2"]
