"""What users typed is shown as typed: never read as rich markup, never sent to the terminal as
control codes. A job named `[/x]` once crashed `labq queue --all` and `labq top` for everyone."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from scheduler.cli.common import markup, plain
from scheduler.cli.top import TopData, render
from tests.builders import start_job
from tests.security_server import ApiServer, ensure_user

NAMES = ["[/x]", "[bold red]loud[/]", "[link=http://evil]x[/link]", "ends\\", "ok [/] ["]


@pytest.fixture(scope="module")
def server(valkey_url: str) -> Iterator[ApiServer]:
    ensure_user("markup-u")  # jobs run as known users
    srv = ApiServer(valkey_url, nodes=(("n1", len(NAMES), "SIM-GPU"),)).start()
    ids = []
    for name in NAMES:
        status, answer = srv.call("POST", "/v1/jobs", {"command": ["sleep", "1"], "name": name,
                                                       "workdir": "/tmp", "as_user": "markup-u"})
        assert status == 200, answer
        ids += answer["ids"]

    async def start_some() -> None:  # as the coordinator would: top shows running jobs' names
        epoch = await srv.store.lease("test", 60_000)
        for index, job_id in enumerate(ids[:3]):
            now = time.time()
            assert await start_job(srv.store, epoch, job_id, "n1", [index], 1.0, now) == "OK"

    srv.run(start_some())
    yield srv
    srv.stop()


def labq(server: ApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABQ_HOME": str(server.dir), "LABQ_SOCKET": server.socket,
           "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [("queue", "--all"), ("top", "--once"), ("priority", "--all")])
def test_markup_in_job_names_is_shown_not_interpreted(server: ApiServer,
                                                      args: tuple[str, ...]) -> None:
    result = labq(server, *args)
    assert result.returncode == 0, result.stderr
    if args[0] == "priority":  # no names there: the users and accounts rows render
        assert "markup-u" in result.stdout
        return
    for name in NAMES[:3] if args[0] == "top" else NAMES:  # top names running jobs only
        assert name in result.stdout, (name, result.stdout)


def test_show_prints_a_name_as_typed(server: ApiServer) -> None:
    jobs = server.call("GET", "/v1/jobs?all=1")[1]
    job = next(j for j in jobs if j["name"] == "[/x]")
    result = labq(server, "show", job["id"])
    assert result.returncode == 0 and "name: [/x]" in result.stdout


def test_plain_escapes_control_and_formatting_characters() -> None:
    assert plain("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert plain("rtl\u202eexe") == "rtl\\u202eexe"
    assert plain("zero\u200bwidth\u2028line") == "zero\\u200bwidth\\u2028line"
    assert plain("héllo 日本 [x]") == "héllo 日本 [x]"
    assert markup("[/x]") == "\\[/x]"
    assert plain(None) == "-"


def _job(**fields: Any) -> dict[str, Any]:
    base = {"id": "7", "user": "u", "account": "a", "state": "PENDING", "gpus": 1,
            "gpu_type": None, "node": None, "gpu_indices": [], "submitted_at": time.time() - 60,
            "started_at": None, "time_limit_s": 60, "name": "n", "reason": "Priority",
            "reasons": [{"code": "Priority", "detail": "first"}]}
    return {**base, **fields}


def test_top_never_sends_terminal_codes_from_stored_text() -> None:
    """Records stored before names were checked (or written another way) still render
    escaped: the frame has no ESC, BEL or bidi override of its own making."""
    hostile = "\x1b]0;owned\x07\x1b[2J\u202e[/x]"
    data = TopData(nodes=[], quota={"user": hostile, "gpu_seconds": 0, "billed_units": 0,
                                    "running_jobs": 0, "pending_jobs": 1, "running_gpus": 0},
                   jobs=[_job(name=hostile, user=hostile, account=hostile,
                              reasons=[{"code": hostile, "detail": hostile}]),
                         _job(id="8", state="RUNNING", name=hostile, node=hostile,
                              gpu_indices=[0], started_at=time.time())])
    out = io.StringIO()
    Console(file=out, width=400, color_system=None).print(render(data, time.time()))
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b]0;owned\\x07" in text and "[/x]" in text
