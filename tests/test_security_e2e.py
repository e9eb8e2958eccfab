"""Issue 10's findings against a real `labq up` started by root, attacked by an unprivileged
Unix user on the API socket: each attack fails with one clear line and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_stack import Stack
from tests.security_server import call_as, can_switch_users, ensure_user, unused_uid

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not can_switch_users(),
                                 reason="needs root, useradd and /usr/bin/python3")]

EVE, BOB = "labq-sec-eve", "labq-sec-bob"
JOB = {"command": ["sleep", "30"], "workdir": "/tmp", "time": "5m"}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    ensure_user(EVE)
    ensure_user(BOB)
    s = Stack("1x2").start()
    yield s
    s.stop()


def socket_of(stack: Stack) -> str:
    for line in stack.output:
        if "api     unix:" in line:
            return str(Path(line.split("unix:", 1)[1].strip()).expanduser())
    return str(stack.home / "labq.sock")


def everything(stack: Stack) -> Any:
    """What an attack could change, as root sees it: every job and the account tree."""
    volatile = ("run_time_s", "est_start", "reason", "reasons")  # move on their own
    jobs = [{k: v for k, v in job.items() if k not in volatile}
            for job in stack.labq_json("queue", "--all", "--done")]
    return jobs, json.loads(stack.labq("admin", "account", "list", "--json").stdout)


def attack(stack: Stack, user: str | int, method: str, path: str, body: Any = None,
           raw: str | None = None) -> tuple[int, str]:
    before = everything(stack)
    status, answer = call_as(user, socket_of(stack), method, path, body, raw)
    assert 400 <= status < 500, (status, answer)
    assert answer["error"] and "\n" not in answer["error"]
    assert everything(stack) == before
    return status, answer["error"]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({**JOB, "account": "root"}, 403, "root of the account tree is never charged"),
    ({**JOB, "account": "fresh-share-7"}, 403, "may charge only 'default'"),
    ({**JOB, "array": "0-9999"}, 400, "max_array_size"),
    ({**JOB, "command": ["echo", "x" * (1 << 20)]}, 413, "max_request_bytes"),
    ({**JOB, "name": "\x1b]0;owned\x07"}, 400, "U+001B"),
    ({**JOB, "as_user": BOB}, 403, "only root acts for another user"),
], ids=["root-account", "new-account-label", "array-10000", "command-1MB", "name-escape",
        "as-another"])
def test_submit_attacks_fail_and_change_nothing(stack: Stack, body: dict[str, Any],
                                                status: int, words: str) -> None:
    got, message = attack(stack, EVE, "POST", "/v1/jobs", body)
    assert got == status and words in message, message


def test_a_uid_without_a_name_is_refused(stack: Stack) -> None:
    status, message = attack(stack, unused_uid(), "POST", "/v1/jobs", JOB)
    assert status == 403 and "has no user name" in message


def test_users_cannot_make_themselves_admins(stack: Stack) -> None:
    stack.labq("admin", "account", "add", "sec-lab")
    stack.labq("admin", "user", "add", EVE, "--account", "sec-lab")
    body = {"target": "user", "op": "set", "name": EVE, "admin": True}
    assert attack(stack, EVE, "POST", "/v1/admin/accounts", body)[0] == 403
    before = everything(stack)
    status, answer = call_as("root", socket_of(stack), "POST", "/v1/admin/accounts",
                             {**body, "admin": "false"})  # once read as true
    assert status == 400 and "JSON boolean" in answer["error"]
    assert everything(stack) == before
    assert call_as(EVE, socket_of(stack), "GET", "/v1/whoami")[1]["admin"] is False


def test_a_markup_name_and_private_data_across_users(stack: Stack) -> None:
    status, answer = call_as(BOB, socket_of(stack), "POST", "/v1/jobs",
                             {**JOB, "name": "[/x]", "env": {"HF_TOKEN": "hf_secret"},
                              "command": ["sleep 60 # secret-plan.py"],
                              # its own folder: an old labq-<id>.out in /tmp is no job's file
                              "workdir": str(stack.workdir)})
    assert status == 200, answer
    job_id = answer["ids"][0]
    seen = call_as(EVE, socket_of(stack), "GET", f"/v1/jobs/{job_id}")[1]
    assert seen["user"] == BOB and seen["name"] == "[/x]"
    assert seen["command"] is None and seen["env"] is None and seen["workdir"] is None
    assert call_as(EVE, socket_of(stack), "GET", f"/v1/quota?user={BOB}")[0] == 403
    assert call_as(BOB, socket_of(stack), "GET", f"/v1/jobs/{job_id}")[1]["command"] == [
        "sleep 60 # secret-plan.py"]
    for args in (("queue", "--all"), ("top", "--once")):  # root's views: the name as typed
        result = stack.labq(*args, check=False)
        assert result.returncode == 0, result.stderr
    assert "[/x]" in stack.labq("queue", "--all").stdout
    stack.labq("cancel", job_id)
