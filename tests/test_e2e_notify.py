"""End to end: a student asks to be told of their jobs (--notify, #SBATCH --mail-type) on a real
`labq up --simulate` stack, and the admin's notify_command (a real local command) runs once per
asked event, as the coordinator, with the job's facts and never the job's environment."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_stack import E2E_USER, Stack

pytestmark = pytest.mark.e2e

FIELDS = ("EVENT", "USER", "JOB", "STATE", "REASON", "EXIT_CODE", "NODES")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="labq-e2e-notify-"))
    told = home / "told.txt"
    line = "|".join(f"$LABQ_NOTIFY_{f}" for f in FIELDS) + "|${TRAIN_SECRET:-none}"
    command = f'printf "%s\\n" "{line}" >> {told}'
    (home / "config.toml").write_text(f"notify_command = {json.dumps(command)}\n")
    s = Stack("1x2:A100-80GB", home=home, LABQ_HEARTBEAT_INTERVAL="1").start()
    yield s
    s.stop()


def told(stack: Stack, job_id: str) -> list[dict[str, str]]:
    path = stack.home / "told.txt"
    rows = [dict(zip((*FIELDS, "SECRET"), line.split("|"), strict=True))
            for line in (path.read_text().splitlines() if path.exists() else [])]
    return [row for row in rows if row["JOB"] == job_id]


def test_begin_and_end_are_told_with_the_jobs_facts(stack: Stack) -> None:
    job_id = stack.submit("--notify", "begin,end", "--export", "ALL,TRAIN_SECRET=hunter2",
                          "--", "true")
    stack.wait_state(job_id, {"SUCCEEDED"})
    rows = stack.wait(lambda: told(stack, job_id) if len(told(stack, job_id)) == 2 else None,
                      30, "both notifications")
    assert [(r["EVENT"], r["STATE"]) for r in rows] == [("begin", "RUNNING"),
                                                       ("end", "SUCCEEDED")]
    assert rows[1]["USER"] == E2E_USER and rows[1]["EXIT_CODE"] == "0"
    assert rows[1]["REASON"] == "Completed" and rows[1]["NODES"]
    assert all(r["SECRET"] == "none" for r in rows)  # the job's environment never reaches it


def test_a_batch_scripts_mail_type_fail_tells_a_failure_once(stack: Stack) -> None:
    script = stack.workdir / "fails.sh"
    script.write_text("#!/bin/bash\n#SBATCH --mail-type=FAIL\nexit 3\n")
    script.chmod(0o755)
    failed = stack.submit(str(script))
    fine = stack.submit("--mail-type", "FAIL", "--", "true")  # asked fail only: nothing
    stack.wait_state(failed, {"FAILED"})
    stack.wait_state(fine, {"SUCCEEDED"})
    rows = stack.wait(lambda: told(stack, failed) or None, 30, "the failure told")
    assert [(r["EVENT"], r["STATE"], r["EXIT_CODE"]) for r in rows] == [("fail", "FAILED", "3")]
    assert told(stack, fine) == []
