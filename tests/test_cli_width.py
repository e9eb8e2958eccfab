"""Every `labq` table at 80 and 120 columns with 60-character names: no line wider than the
terminal, names cut with an ellipsis, ids, numbers and times whole; and the options of
`labq queue` (-t, -j, -o, --noheader), `labq show`'s lines and `labq quota`'s title."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from scheduler.cli.common import fitted_table
from scheduler.cli.main import (
    GPU_COLS,
    NODE_COLS,
    QUOTA_COLS,
    gpu_rows,
    main,
    node_notes,
    node_rows,
    priority_table,
    queue_query,
    quota_rows,
    quota_title,
)
from scheduler.cli.queue_view import (
    in_tasks,
    job_matches,
    parse_format,
    parse_ids,
    parse_states,
    queue_table,
    ranges,
    readable,
    show_text,
    when_short,
)
from scheduler.cli.top import render
from tests.e2e_stack import Stack
from tests.security_server import ApiServer, ensure_user
from tests.test_top import cluster

NOW = 1_800_000_000.0
GIB = 2**30
WIDTHS = [80, 120]
LONG = "a-sixty-character-name-" + "x" * 37  # 60 characters
assert len(LONG) == 60


def lines_of(renderable: Any, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    out = str(console.file.getvalue())  # type: ignore[attr-defined]
    return [line.rstrip() for line in out.splitlines()]


def fits(lines: list[str], width: int) -> None:
    assert lines and max(len(line) for line in lines) <= width, "\n".join(lines)


def row_with(lines: list[str], start: str) -> str:
    found = [line for line in lines if line.startswith(start)]
    assert found, (start, lines)
    return found[0]


# ---------------------------------------------------------------------------- queue


def job(job_id: str = "1234567", state: str = "PENDING", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": job_id, "name": LONG, "user": LONG, "account": LONG, "state": state, "gpus": 8,
        "gpu_type": "H100-" + LONG, "node": None, "gpu_indices": [], "qos": "normal",
        "submitted_at": NOW - 3 * 86400 - 5, "started_at": None, "ended_at": None,
        "est_start": NOW + 2 * 86400 + 3600, "reason": "GpuTypeUnavailable", "reasons": [],
        "time_limit_s": 7200, "dependency": "", "array_job": "", "array_task": None,
        "queued_at": None}
    return {**base, **fields}


def jobs() -> list[dict[str, Any]]:
    return [
        job(),
        job("17_[4-99%8]", array_job="17", array_tasks="4-99", array_throttle=8,
            reason="Priority"),
        job("17_3", "RUNNING", array_job="17", array_task=3, node="node-" + LONG,
            gpu_indices=list(range(8)), started_at=NOW - 3723, reason="Started"),
        job("9", "FAILED", started_at=NOW - 70, ended_at=NOW - 10, reason="NonZeroExitCode 3"),
    ]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("with_start", [False, True], ids=["plain", "start"])
def test_queue_fits_with_ids_counts_times_and_reasons_whole(width: int,
                                                            with_start: bool) -> None:
    lines = lines_of(queue_table(jobs(), NOW, with_start, width), width)
    fits(lines, width)
    assert len(lines) == 5  # a header and one line per job: nothing wrapped
    pending = row_with(lines, "1234567 ")
    assert "8:H" in pending and "3-00:00:05" in pending and pending.endswith("GpuTypeUnavailable")
    assert "…" in pending and LONG not in pending
    assert row_with(lines, "17_[4-99%8] ").endswith("Priority")
    running = row_with(lines, "17_3 ")
    assert " 1:02:03 " in running and running.split()[-1] == "Started"
    assert row_with(lines, "9 ").split()[-1] == "NonZeroExitCode"
    if with_start:
        assert when_short(NOW + 2 * 86400 + 3600, NOW) in pending
        assert when_short(NOW - 3723, NOW) in running  # a started job: when it started
    if width == 120 or not with_start:
        assert "…:0-7" in running  # the node's name cut, never its GPUs


def test_queue_at_120_columns_keeps_the_account() -> None:
    lines = lines_of(queue_table(jobs(), NOW, True, 120), 120)
    assert lines[0].split() == ["JOBID", "NAME", "USER", "ACCOUNT", "STATE", "GPUS",
                                "NODE:GPUS", "TIME", "START", "REASON"]


def test_queue_at_80_columns_leaves_out_account_then_node_when_it_must() -> None:
    assert lines_of(queue_table(jobs(), NOW, False, 80), 80)[0].split() == [
        "JOBID", "NAME", "USER", "STATE", "GPUS", "NODE:GPUS", "TIME", "REASON"]
    assert lines_of(queue_table(jobs(), NOW, True, 80), 80)[0].split() == [
        "JOBID", "NAME", "USER", "STATE", "GPUS", "TIME", "START", "REASON"]
    short = job(name="train", user="alice", account="vision", gpu_type=None, id="12",
                reason="Priority")
    assert "ACCOUNT" in lines_of(queue_table([short], NOW, True, 80), 80)[0]


@pytest.mark.parametrize("width", WIDTHS)
def test_queue_format_shows_the_fields_asked_for(width: int) -> None:
    fields = parse_format("id,st,user,gpus,limit,submit,dependency,qos,reason")
    records = [job(dependency="afterok:12:13"), jobs()[2]]
    lines = lines_of(queue_table(records, NOW, False, width, fields, header=False), width)
    fits(lines, width)
    assert len(lines) == 2 and lines[0].split()[:2] == ["1234567", "PD"]
    assert "2:00:00" in lines[0] and "afterok:12:13" in lines[0] and "normal" in lines[0]
    assert lines[1].split()[:2] == ["17_3", "R"]


def test_format_names_and_squeue_letters() -> None:
    assert parse_format("ID, User,STATE") == ["id", "user", "state"]
    assert parse_format("%.18i %9u %T %b %r %j %M %N %S") == [
        "id", "user", "state", "gpus", "reason", "name", "time", "node", "start"]
    for bad in ("id,colour", "%i %z", ","):
        with pytest.raises(ValueError, match="unknown field"):
            parse_format(bad)


def test_states_full_short_and_any_case() -> None:
    assert parse_states("pending,Running") == {"PENDING", "RUNNING"}
    assert parse_states("PD,R") == {"PENDING", "HELD", "RUNNING"}
    assert parse_states("ca,f,to,cd") == {"CANCELLED", "FAILED", "TIMEOUT", "SUCCEEDED"}
    with pytest.raises(ValueError, match="--state XX: not a state"):
        parse_states("R,XX")


def test_job_ids_and_array_tasks() -> None:
    assert parse_ids("17, 17_5") == {"17", "17_5"}
    with pytest.raises(ValueError, match="--jobs"):
        parse_ids("17,abc")
    line = job("17_[4-99%8]", array_job="17", array_tasks="4-99")
    task = job("17_3", array_job="17", array_task=3)
    assert job_matches(line, {"17"}) and job_matches(task, {"17"})
    assert job_matches(line, {"17_50"}) and not job_matches(line, {"17_3"})
    assert job_matches(task, {"17_3"}) and not job_matches(task, {"18", "17_4"})
    assert not job_matches(job("170"), {"17"})
    assert in_tasks(7, "1,3,5-7") and in_tasks(6, "0-20:2") and not in_tasks(7, "0-20:2")


def test_queue_asks_for_array_tasks_one_a_line_with_r() -> None:
    assert queue_query(True, None, False, True) == "all=1&expand=1"
    assert queue_query(False, "bob", True, False) == "user=bob&done=1"


def test_small_formats() -> None:
    assert ranges([0, 1]) == "0,1" and ranges([3, 0, 1, 2, 6]) == "0-3,6"
    assert readable(3600) == "1h 00m" and readable(45) == "45s"
    assert readable(2 * 86400 + 3 * 3600 + 240) == "2d 03h 04m" and readable(723) == "12m 03s"


@pytest.mark.parametrize("args", [["-o", "id,colour"], ["-t", "XX"], ["-j", "x"],
                                  ["--format", "%i %z"]])
def test_bad_queue_options_are_one_line_and_exit_2(args: list[str], tmp_path: Any) -> None:
    result = CliRunner().invoke(main, ["queue", *args], env={"LABQ_HOME": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("labq: error: ") and result.stderr.count("\n") == 1


# ---------------------------------------------------------------------------- show


def test_show_reads_as_words_with_files_deadline_and_array() -> None:
    record = job("17_3", "RUNNING", array_job="17", array_task=3, node="sim-0",
                 gpu_indices=[0, 1], started_at=NOW - 600, command=["python", "t.py"],
                 workdir="/home/u/proj", output="out-%A_%a.log", error="err-%j.log",
                 submit_dir="/home/u", dependency="afterok:12", script=True,
                 time_limit_s=3600, exit_code=None, gpu_seconds=1200.0, billed=3600.123456,
                 restarts=0, private=False, name="sweep", user="u", account="a")
    text = "\n".join(show_text(record, NOW, 80))
    fits(text.splitlines(), 80)
    for expected in ("id: 17_3 (task 3 of array 17)", "time limit: 1h 00m",
                     "output: /home/u/proj/out-17_3.log (from out-%A_%a.log)",
                     "error: /home/u/proj/err-17_3.log (from err-%j.log)",
                     "dependency: afterok:12", "batch script: captured at submit",
                     "submit dir: /home/u", "GPU time: 0.33 GPU-hours",
                     "billed: 1.00 GPU-hours", "ran: 10m 00s", "node: sim-0, GPU 0,1"):
        assert expected in text, (expected, text)
    deadline = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(NOW + 3000))
    assert f"deadline: {deadline} (in 50m 00s)" in text
    assert "3600" not in text and "1200" not in text  # no raw seconds


def test_show_of_another_users_job_says_private() -> None:
    record = job(command=None, workdir=None, output=None, error=None, submit_dir=None,
                 script=None, exit_code=None, gpu_seconds=None, billed=None, private=True,
                 reasons=[{"code": "Priority", "detail": "3rd in line " * 10}])
    lines = show_text(record, NOW, 80)
    fits(lines, 80)
    text = "\n".join(lines)
    for key in ("command", "output", "error", "workdir", "GPU time", "billed"):
        assert f"{key}: (private)" in text
    assert "expected start:" in text and "waiting: Priority: 3rd in line" in text
    assert "deadline" not in text


# ---------------------------------------------------------------------------- nodes


def nodes() -> list[dict[str, Any]]:
    data = cluster().nodes
    data[0]["name"] = "n-" + LONG
    for node in data:
        node["gpu_model"] = "m-" + LONG
        for gpu in node["gpus"]:
            gpu["model"] = "m-" + LONG
    return data


@pytest.mark.parametrize("width", WIDTHS)
def test_nodes_one_line_per_node(width: int) -> None:
    lines = lines_of(fitted_table(NODE_COLS, node_rows(nodes(), NOW), width)[0], width)
    fits(lines, width)
    assert lines[0].split() == ["NODE", "STATE", "GPUS", "MODEL", "UTIL", "MEM", "GiB", "JOBS",
                                "IDLE", "HEARTBEAT"]
    assert len(lines) == 3
    up = row_with(lines, "gpu-a ")
    for cell in ("UP sim", "2/3 used", "30%", "40/240", "1s ago"):
        assert cell in up, (cell, up)
    assert up.split()[-4:-2] == ["2", "1"]  # two jobs, one idle GPU
    down = row_with(lines, "n-a-sixty")
    assert "…" in down and "0/1 used" in down and "-/80" in down


@pytest.mark.parametrize("width", WIDTHS)
def test_nodes_gpus_one_line_per_gpu(width: int) -> None:
    lines = lines_of(fitted_table(GPU_COLS, gpu_rows(nodes(), NOW), width)[0], width)
    fits(lines, width)
    assert len(lines) == 5
    idle = [line for line in lines if " 18 " in line][0]
    assert "+1" in idle and "15:00" in idle and "20/80" in idle and " 0%" in idle
    assert "250W 60C" in row_with(lines, "gpu-a")
    assert "LOST" in row_with(lines, "n-a-si")


def test_node_notes_say_what_the_node_lines_cannot() -> None:
    notes = node_notes(nodes(), per_gpu=False)
    assert "note: gpu-a GPU 1: IDLE 15m 00s (job 18)" in notes
    assert f"note: n-{LONG} GPU 0: health LOST" in notes
    assert "note: gpu-a GPU 1: pid 77 (jupyter) was not started by labq" in notes
    assert node_notes(nodes(), per_gpu=True) == [
        "note: gpu-a GPU 1: pid 77 (jupyter) was not started by labq"]


# ---------------------------------------------------------------------------- quota, priority


SHARES: list[dict[str, Any]] = [
    {"account": LONG, "user": None, "raw_shares": 3, "norm_shares": 0.75,
     "raw_usage": 12345678.0, "effective_usage": 0.5, "level_fs": None, "fairshare": 0.0,
     "rank": None},
    {"account": LONG, "user": "u-" + LONG, "raw_shares": 1, "norm_shares": 0.5,
     "raw_usage": 108000.4, "effective_usage": 0.25, "level_fs": 2.0, "fairshare": 0.625,
     "rank": 12},
]


@pytest.mark.parametrize("width", WIDTHS)
def test_quota_table_fits(width: int) -> None:
    lines = lines_of(fitted_table(QUOTA_COLS, quota_rows(SHARES), width)[0], width)
    fits(lines, width)
    assert lines[0].split()[-2:] == ["FAIRSHARE", "RANK"]
    assert lines[1].split()[-4:] == ["0.750", "12345678", "0.500", "inf"]
    assert lines[2].split()[-7:] == ["1", "0.500", "108000", "0.250", "2.000", "0.625", "12"]


def test_quota_title_names_the_algorithm_that_ranks() -> None:
    now = {"algorithm": "fair_now", "table_algorithm": "fair_tree", "half_life_s": 7 * 86400}
    assert quota_title(now, "fair_now") == (
        "fair share ranked by fair_now; rows: fair_tree on past usage (half-life 7 days)")
    tree = {"algorithm": "fair_tree", "table_algorithm": "fair_tree", "half_life_s": 86400}
    assert quota_title(tree, "fair_tree") == "fair share ranked by fair_tree on past usage " \
                                             "(half-life 1 days)"


def priorities(weight: float = 1000.0) -> list[dict[str, Any]]:
    factors = {"fairshare": 0.5, "age": 1.0, "size": 0.25, "qos": 1.0}
    return [{"id": "1234567_12", "user": LONG, "account": LONG, "priority": 4 * weight,
             "factors": factors, "weighted": {k: v * weight for k, v in factors.items()}},
            {"id": "17_5", "user": "bob", "account": "v", "priority": None, "factors": None,
             "weighted": None}]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("weight", [1000.0, 1_000_000.0])
def test_priority_fits_with_whole_headers(width: int, weight: float) -> None:
    table, factors = priority_table(priorities(weight), width)
    lines = lines_of(table, width)
    fits(lines, width)
    assert lines[0].split() == ["JOBID", "USER", "ACCOUNT", "PRIORITY", "FAIRSHARE", "AGE",
                                "SIZE", "QOS"]
    row = row_with(lines, "1234567_12 ")
    assert f"{4 * weight:.0f}" in row and f"{weight / 4:.0f}" in row
    assert factors == (width == 120 or weight == 1000.0)
    assert ("(0.25)" in row) == factors


# ---------------------------------------------------------------------------- top


@pytest.mark.parametrize("width", WIDTHS)
def test_top_fits_without_one_letter_headers(width: int) -> None:
    data = cluster()
    data.nodes[0]["name"] = "n-" + LONG
    for record in data.jobs:
        record["user"], record["account"], record["name"] = "u-" + LONG, "a-" + LONG, "j-" + LONG
    lines = lines_of(render(data, NOW, width=width), width)
    fits(lines, width)
    text = "\n".join(lines)
    for header in (["NODE", "STATE", "GPU", "MODEL", "UTIL", "MEM", "GiB", "JOB", "USER",
                    "NOTE"], ["#", "JOBID", "USER", "STATE", "GPUS", "WAITED", "REASON"]):
        assert any(all(h in line.split() for h in header) for line in lines), (header, text)
    assert "1:02:03" in row_with(lines, "17 ") and "2:00:00" in row_with(lines, "17 ")
    assert "Resources" in row_with(lines, "2 21 ")
    assert "IDLE 15:00" in text


# ---------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def server(valkey_url: str) -> Iterator[ApiServer]:
    ensure_user("width-u")  # jobs run as known users
    srv = ApiServer(valkey_url, nodes=(("node-" + LONG, 4, "model-" + LONG),
                                       ("n2", 2, "A100"))).start()
    for name in ("short", "y" * 70):
        status, answer = srv.call("POST", "/v1/jobs", {
            "command": ["sleep", "1"], "name": name, "workdir": "/tmp", "account": LONG,
            "as_user": "width-u"})
        assert status == 200, answer
    yield srv
    srv.stop()


def labq(server: ApiServer, columns: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABQ_HOME": str(server.dir), "LABQ_SOCKET": server.socket,
           "COLUMNS": str(columns)}
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", *args], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("width", WIDTHS)
def test_commands_fit_the_terminal(server: ApiServer, width: int) -> None:
    ids = [j["id"] for j in server.call("GET", "/v1/jobs?all=1")[1]]
    for args in (("nodes",), ("nodes", "--gpus"), ("queue", "--all", "--start"),
                 ("show", ids[0]), ("priority", "--all"), ("quota", "--user", "width-u"),
                 ("top", "--once")):
        out = labq(server, width, *args).stdout
        fits(out.splitlines(), width)
        assert "…" in out or args[0] in ("show", "quota", "top"), (args, out)
    nodes_out = labq(server, width, "nodes").stdout
    assert "0/4 used" in nodes_out and "0/2 used" in nodes_out and len(nodes_out.splitlines()) == 3


def test_queue_filters_and_format(server: ApiServer) -> None:
    ids = sorted(j["id"] for j in server.call("GET", "/v1/jobs?all=1")[1])
    out = labq(server, 80, "queue", "-j", ids[0], "-t", "pd,r", "-o", "%i %t %u",
               "--noheader").stdout
    assert out.split() == [ids[0], "PD", "width-u"]
    assert labq(server, 80, "queue", "--all", "-t", "RUNNING", "--noheader").stdout == ""
    both = labq(server, 80, "queue", "-u", "width-u", "-o", "id", "--noheader").stdout
    assert sorted(both.split()) == ids


# ---------------------------------------------------------------------------- a real stack


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack("2x4", COLUMNS="80", LABQ_HEARTBEAT_INTERVAL="1").start()
    yield s
    s.stop()


@pytest.mark.e2e
def test_nodes_queue_and_show_fit_80_columns_on_a_real_stack(stack: Stack) -> None:
    name = "run-" + LONG
    running = [stack.submit("--gpus", "3", "--name", name, "--time", "10m", "--", "sleep",
                            "300") for _ in range(2)]
    job = stack.wait_state(running[0], {"RUNNING"})
    stack.wait_state(running[1], {"RUNNING"})
    waiting = stack.submit("--gpus", "4", "--name", name, "--", "true")
    stack.wait(lambda: stack.job(waiting)["reason"] == "Resources", what="reason Resources")
    outputs = {args: stack.labq(*args).stdout for args in (
        ("nodes",), ("nodes", "--gpus"), ("queue", "--all"), ("queue", "--all", "--start"),
        ("show", running[0]), ("show", waiting))}
    for out in outputs.values():
        fits(out.splitlines(), 80)
    nodes_out = outputs[("nodes",)].splitlines()
    assert len(nodes_out) == 3 and nodes_out[0].split()[:3] == ["NODE", "STATE", "GPUS"]
    assert "\n".join(nodes_out).count("3/4 used") == 2
    assert len(outputs[("nodes", "--gpus")].splitlines()) == 9  # a header and 8 GPUs
    queue = outputs[("queue", "--all")]
    line = row_with(queue.splitlines(), f"{running[0]} ")
    assert "RUNNING" in line and "…" in line and f"{job['node']}:" in line
    assert row_with(queue.splitlines(), f"{waiting} ").split()[-1] == "Resources"
    assert ":" in row_with(outputs[("queue", "--all", "--start")].splitlines(), f"{waiting} ")
    shown = outputs[("show", running[0])]
    assert "time limit: 10m 00s" in shown and "deadline: " in shown
    assert f"output: {stack.workdir}/labq-{running[0]}.out" in shown
    assert "waiting: Resources: " in outputs[("show", waiting)]
    stack.labq("cancel", *running, waiting)
