"""`labq queue` on an 80-column terminal: one line per job, its REASON a short code never cut;
the words that explain it stay in `labq show`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from scheduler.cli import queue_table
from tests.security_server import ApiServer, ensure_user

NOW = 1_800_000_000.0
LONG_DETAIL = "needs 8 GPUs of type A100 but no node has that many free ones, and more words"


def job(job_id: str = "1234", state: str = "PENDING", reason: str = "Priority",
        reasons: list[dict[str, str]] | None = None, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": job_id, "name": "train", "user": "alice", "account": "vision", "state": state,
        "gpus": 1, "gpu_type": None, "node": None, "gpu_indices": [],
        "submitted_at": NOW - 600, "started_at": None, "ended_at": None, "est_start": None,
        "reason": reason,
        "reasons": [{"code": reason, "detail": LONG_DETAIL}] if reasons is None else reasons,
    }
    return {**base, **fields}


WIDE: dict[str, Any] = {"name": "a-very-long-job-name-for-a-sweep-over-learning-rates",
        "user": "alice-with-a-long-login", "account": "vision-research-group-2026",
        "gpus": 8, "gpu_type": "H100-SXM5-80GB", "submitted_at": NOW - 3 * 86400 - 5,
        "est_start": NOW + 9 * 86400}

CASES = [
    pytest.param(job(reason="Resources"), "Resources", id="resources"),
    pytest.param(job(reason="Priority"), "Priority", id="priority"),
    pytest.param(job(reason="BudgetExhausted", **WIDE), "BudgetExhausted",
                 id="budget-exhausted-wide-cells"),
    pytest.param(job(job_id="1234567", reason="GpuTypeUnavailable", **WIDE),
                 "GpuTypeUnavailable", id="longest-code-wide-cells"),
    pytest.param(job(reasons=[{"code": "UserGpuLimit", "detail": LONG_DETAIL},
                              {"code": "Resources", "detail": LONG_DETAIL}]),
                 "UserGpuLimit", id="first-of-several-reasons"),
    pytest.param(job(state="HELD", reason="Held"), "Held", id="held"),
    pytest.param(job(state="FAILED", reason="LaunchFailed: cannot run train.sh: no such file",
                     reasons=[], started_at=NOW - 60, ended_at=NOW - 50, **WIDE),
                 "LaunchFailed", id="ended-code-without-its-message"),
    pytest.param(job(state="FAILED", reason="NonZeroExitCode 3", reasons=[]),
                 "NonZeroExitCode", id="ended-code-without-exit-status"),
    pytest.param(job(state="RUNNING", reason="Started", reasons=[], node="gpu-node-17",
                     gpu_indices=list(range(8)), started_at=NOW - 7200), "Started",
                 id="running-on-eight-gpus"),
]


def render(jobs: list[dict[str, Any]], with_start: bool, width: int = 80) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width).print(queue_table(jobs, NOW, with_start, width))
    return out.getvalue().splitlines()


@pytest.mark.parametrize("with_start", [False, True], ids=["plain", "with-start"])
@pytest.mark.parametrize(("record", "code"), CASES)
def test_queue_row_fits_80_columns_with_its_reason_code_whole(record: dict[str, Any], code: str,
                                                              with_start: bool) -> None:
    lines = render([record, job(job_id="7", reason="Resources")], with_start)
    assert len(lines) == 3, lines  # header and one line per job: nothing wrapped
    assert max(len(line) for line in lines) <= 80, lines
    assert lines[0].split()[-1] == "REASON"
    assert lines[1].split()[-1] == code, lines
    assert lines[2].split()[-1] == "Resources"
    assert "no node has" not in "\n".join(lines)  # the explanation is for `labq show`


def test_queue_on_a_wide_terminal_shows_every_cell_whole() -> None:
    record = job(reason="BudgetExhausted", **WIDE)
    lines = render([record], with_start=False, width=250)
    for cell in ("a-very-long-job-name-for-a-sweep-over-learning-rates",
                 "alice-with-a-long-login", "vision-research-group-2026", "8:H100-SXM5-80GB",
                 "3-00:00:05", "BudgetExhausted"):
        assert cell in lines[1], (cell, lines)


def test_queue_on_80_columns_narrows_long_cells_with_an_ellipsis() -> None:
    lines = render([job(reason="Resources", **WIDE)], with_start=False)
    assert "a-very-long-job-name-for-a-sweep-over-learning-rates" not in lines[1]
    assert "…" in lines[1] and lines[1].startswith("1234 ")


@pytest.fixture(scope="module")
def server(valkey_url: str) -> Iterator[ApiServer]:
    ensure_user("queue-view-u")  # jobs run as known users
    srv = ApiServer(valkey_url).start()
    for name in ("short", "x" * 70):
        status, answer = srv.call("POST", "/v1/jobs", {
            "command": ["sleep", "1"], "name": name, "workdir": "/tmp",
            "account": "an-account-name-long-enough-to-squeeze", "as_user": "queue-view-u"})
        assert status == 200, answer
    yield srv
    srv.stop()


def test_labq_queue_with_columns_80_keeps_to_80(server: ApiServer) -> None:
    env = {**os.environ, "LABQ_HOME": str(server.dir), "LABQ_SOCKET": server.socket,
           "COLUMNS": "80"}
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "queue", "--all"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and max(len(line) for line in lines) <= 80, result.stdout
    assert all(line.split()[-1] == "Submitted" for line in lines[1:]), result.stdout


def test_labq_show_marks_as_private_exactly_the_fields_the_api_hides() -> None:
    """`labq show` of another user's job under private_data: what the API nulls (one list,
    `wire.PRIVATE_FIELDS`) reads `(private)`; a field it does not hide, unset, reads `-`."""
    from scheduler.cli.queue_view import show_lines
    from scheduler.wire import PRIVATE_FIELDS

    hidden = job(state="FAILED", private=True, time_limit_s=3600, qos="normal", nodes=1,
                 ended_at=NOW, dependency="", **dict.fromkeys(PRIVATE_FIELDS))
    rows = dict(show_lines(hidden, NOW))
    private = {label for label, value in rows.items() if value == "(private)"}
    assert private == {"command", "batch script", "submit dir", "workdir", "output", "error",
                       "exit code", "GPU time", "billed"}
    mine = dict(show_lines({**hidden, "private": False}, NOW))
    assert "(private)" not in mine.values()
