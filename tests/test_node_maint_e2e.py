"""End to end, on a real `labq up --simulate 2x1`: an admin drains a node while a job runs
there; the job runs to its end, the node shows DRAINING then DRAINED with who and why (in
`labq nodes` and /metrics), a new job does not start there and says so; a user who is not an
admin cannot drain, nor can the drained node's own agent login lift the drain; resume lets the
job start there; a node whose agent still reports cannot be removed, and once its agent is
stopped `labq admin node remove` drops it from `labq nodes` and /metrics, until its agent
reports again and it joins again."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from scheduler.store import read_secret
from scheduler.store.acl import agent_user
from tests.e2e_stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack("2x1", LABQ_NODE_TIMEOUT="5", LABQ_HEARTBEAT_INTERVAL="1").start()
    yield s
    s.stop()


def waiter(stack: Stack, name: str) -> tuple[str, Path]:
    """A job that runs until the test touches its file."""
    go = stack.workdir / f"go-{name}"
    job_id = stack.submit("--", "sh", "-c", f"while [ ! -e {go} ]; do sleep 0.2; done")
    return job_id, go


def node_of(stack: Stack, name: str) -> dict[str, Any] | None:
    return next((n for n in stack.labq_json("nodes") if n["name"] == name), None)


def shown(stack: Stack, name: str) -> str:
    node = node_of(stack, name)
    return node["shown_state"] if node else "GONE"


def test_drain_resume_and_remove_a_node(stack: Stack) -> None:
    first, go_first = waiter(stack, "first")
    drained = stack.wait_state(first, {"RUNNING"})["node"]
    other, go_other = waiter(stack, "other")
    assert stack.wait_state(other, {"RUNNING"})["node"] != drained

    said = stack.labq("admin", "node", "drain", drained, "--reason", "disk swap").stdout
    assert said.startswith(f"node {drained}: DRAINING: no new job starts there")
    node = node_of(stack, drained)
    assert node is not None and (node["shown_state"], node["drained_by"],
                                 node["drain_reason"]) == ("DRAINING", "labq-e2e", "disk swap")
    refused = stack.labq("admin", "node", "drain", drained, "--reason", "mine", user="alice",
                         check=False)
    assert refused.returncode != 0
    assert refused.stderr.strip() == "labq: error: only admins drain nodes (alice is not an admin)"
    assert node_of(stack, drained)["drain_reason"] == "disk swap"  # type: ignore[index]

    # An agent restart (an upgrade) needs no drain and keeps one: the new agent takes the
    # running job back, and the node is still drained.
    agents = stack.pids(f"agent --node {drained}")
    for pid in agents:
        os.kill(pid, signal.SIGKILL)
    stack.wait(lambda: [p for p in stack.pids(f"agent --node {drained}") if p not in agents],
               30, "the agent restarted")
    stack.wait(lambda: node_of(stack, drained)["last_heartbeat"]  # type: ignore[index]
               > node["last_heartbeat"] + 1, 30, "a heartbeat of the new agent")
    again = node_of(stack, drained)
    assert again is not None and (again["shown_state"], again["drained_by"]) == (
        "DRAINING", "labq-e2e")
    assert stack.job(first)["state"] == "RUNNING"

    # The running job goes on to its end; then the node is DRAINED.
    go_first.touch()
    assert stack.wait_state(first, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    stack.wait(lambda: shown(stack, drained) == "DRAINED", 30, "the node DRAINED")
    table = stack.labq("nodes").stdout
    assert "DRAINED" in table and f"note: {drained} DRAINED by labq-e2e" in table
    assert "disk swap" in table
    metrics = stack.scrape()
    assert f'labq_node_state{{node="{drained}",state="DRAINED"}} 1.0' in metrics
    assert f'labq_node_drained{{drained_by="labq-e2e",node="{drained}"}} 1.0' in metrics
    assert f'labq_node_up{{node="{drained}"}} 1.0' in metrics  # its agent still reports

    # The node's agent login (what whoever holds its password there has) cannot lift the
    # drain: the node hash is its own, but the drain is not kept there.
    agent = redis.Redis(unix_socket_path=str(stack.home / "valkey" / "valkey.sock"),
                        username=agent_user(drained), decode_responses=True,
                        password=read_secret(stack.home / "secrets" / f"agent-{drained}.pass"))
    try:
        agent.hdel(f"labq:node:{drained}", "drained_by", "drain_reason", "drained_at")
        with pytest.raises(redis.exceptions.NoPermissionError):
            agent.hdel("labq:drains", drained)
    finally:
        agent.close()
    assert shown(stack, drained) == "DRAINED"

    # A new job waits rather than go to the drained (free) node, and says why.
    late = stack.submit("--", "sleep", "300")
    stack.wait(lambda: any(f"drained by an admin: {drained} (disk swap)" in r["detail"]
                           for r in stack.job(late)["reasons"]), 30, "the drain in its reason")
    assert stack.job(late)["state"] == "PENDING"

    # Resume: it starts there.
    said = stack.labq("admin", "node", "resume", drained).stdout
    assert said.startswith(f"node {drained}: resumed (drained by labq-e2e until now)")
    assert stack.wait_state(late, {"RUNNING"}, timeout=30)["node"] == drained
    assert shown(stack, drained) == "UP"

    # Removal: refused while its agent reports, and while it holds a job.
    alive = stack.labq("admin", "node", "remove", drained, check=False)
    assert alive.returncode != 0 and len(alive.stderr.strip().splitlines()) == 1
    assert f"stop `labq agent` on {drained} first" in alive.stderr
    stack.labq("cancel", late)
    stack.wait_state(late, {"CANCELLED"}, timeout=30)
    stack.wait(lambda: node_of(stack, drained)["gpus_allocated"] == 0,  # type: ignore[index]
               30, "its GPU freed")
    agents = stack.pids(f"agent --node {drained}")
    assert agents
    for pid in agents:
        os.kill(pid, signal.SIGSTOP)  # alive to the supervisor, silent to the coordinator
    try:
        stack.wait(lambda: node_of(stack, drained)["state"] == "DOWN",  # type: ignore[index]
                   30, "the stopped agent's node DOWN")
        said = stack.labq("admin", "node", "remove", drained).stdout
        assert said.strip() == f"node {drained}: removed"
        assert node_of(stack, drained) is None
        assert f'node="{drained}"' not in stack.scrape()
        gone = stack.labq("admin", "node", "resume", drained, check=False)
        assert gone.returncode != 0
        assert gone.stderr.strip() == f"labq: error: no node {drained}: see `labq nodes`"
    finally:
        for pid in agents:
            os.kill(pid, signal.SIGCONT)
    # Its agent reports again: the node joins again, not drained.
    stack.wait(lambda: shown(stack, drained) == "UP", 30, "the node back")
    go_other.touch()
    assert stack.wait_state(other, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    # Each act is in the audit log, with who did it.
    logs = "".join(p.read_text(errors="replace") for p in (stack.home / "logs").glob("*"))
    for act in (f"drained node {drained} (jobs still hold 1 of its GPUs): disk swap",
                f"resumed node {drained} (drained by labq-e2e)", f"removed node {drained}"):
        assert f"labq-e2e (uid {stack.user.pw_uid}) {act}" in logs, act


@pytest.mark.parametrize(("args", "status", "message"), [
    (("drain", "sim-1"), 2, "Missing option '--reason'"),
    (("drain", "sim-1", "--reason", " "), 2, "--reason: say why the node is drained"),
    (("drain", "sim-1", "--reason", "x" * 300), 1,
     "labq: error: --reason must be at most 200 characters: it has 300"),
    (("drain", "sim-1", "--reason", "a\x1b[2Jb"), 1, "--reason must be one line of printable"),
    (("drain", "nosuch", "--reason", "x"), 1, "labq: error: no node nosuch: see `labq nodes`"),
    (("drain", "bad/name", "--reason", "x"), 2, "'bad/name' is not a node name"),
    (("resume", "sim-1"), 1, "labq: error: node sim-1 is not drained: nothing to resume"),
    (("remove", "nosuch"), 1, "labq: error: no node nosuch: see `labq nodes`"),
])
def test_bad_node_maintenance_requests_say_why_in_one_line(
        stack: Stack, args: tuple[str, ...], status: int, message: str) -> None:
    result = stack.labq("admin", "node", *args, check=False)
    assert result.returncode == status, result
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result
    assert node_of(stack, "sim-1")["drained_by"] == ""  # type: ignore[index]
