"""A node cannot lift, nor forge, an admin's drain of itself (a security finding): the drain is
kept in the coordinator-only drains hash (`keys.drains`), which no agent ACL pattern reaches,
not in the node hash that the node's agent writes.

Against the real store, logged in as the node's agent ACL user (the rules `labq up` writes, as
whoever holds the agent's password on that node would be): after an admin drained the node,
its writes to its own node hash change nothing, and every write to the drains hash, by command,
by EVAL or by a script of its own, is refused. The node stays drained as the store reads it,
start.lua starts no job there, and the agent's heartbeat still works."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import pytest
import pytest_asyncio
import redis.exceptions as redis_errors

from scheduler.model import Node, NodeState
from scheduler.store import Outcome, Store
from scheduler.store.acl import agent_rules, agent_user, password_hash
from scheduler.store.keys import Keys
from tests.builders import T0, alloc, lead, report, start_job, submit_one

LEGACY = ("drained_by", "drain_reason", "drained_at")  # where an earlier labq kept a drain


@dataclass
class Agent:
    node: str
    store: Store  # the store as the node's agent's ACL user


@pytest_asyncio.fixture
async def agent(store: Store, valkey_url: str) -> AsyncIterator[Agent]:
    """A node's agent ACL user (agent_rules, for the test's key prefix) and its login."""
    node = f"sec-{uuid.uuid4().hex[:8]}"
    user, password = agent_user(node), uuid.uuid4().hex
    await store.r.execute_command("ACL", "SETUSER", user, "on", "resetpass",
                                  password_hash(password), *agent_rules(store.keys, node))
    as_agent = Store.from_url(valkey_url, store.keys.prefix, user, password)
    try:
        yield Agent(node, as_agent)
    finally:
        await as_agent.close()
        await store.r.execute_command("ACL", "DELUSER", user)


async def node_of(store: Store, name: str) -> Node:
    return next(n for n in await store.nodes() if n.name == name)


async def refused(attempt: Awaitable[Any]) -> str:
    """The store's refusal of `attempt` (a NOPERM, or a script's permission error)."""
    with pytest.raises(redis_errors.ResponseError) as caught:
        await attempt
    text = str(caught.value)
    assert "permission" in text.lower(), text
    return text


def drain_writes(agent: Agent, keys: Keys) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    """Every way the agent's login might write (or read) the drains hash."""
    r, node, drains = agent.store.r, agent.node, keys.drains
    own = keys.node(node)

    def script(body: str, declared: list[str], *args: Any) -> Callable[[], Awaitable[Any]]:
        return lambda: r.register_script(body)(keys=declared, args=list(args))

    return [
        ("HDEL its drain", lambda: r.hdel(drains, node)),
        ("HSET its drain away", lambda: r.hset(drains, node, "")),
        ("forge another drain", lambda: r.hset(drains, "other", '{"by": "root"}')),
        ("DEL the drains hash", lambda: r.delete(drains)),
        ("read the drains hash", lambda: r.hgetall(drains)),
        ("EVAL an HDEL of the drains hash",
         lambda: r.eval("return redis.call('HDEL', KEYS[1], ARGV[1])", 1, drains, node)),
        ("a script declaring the drains hash",
         script("return redis.call('HDEL', KEYS[1], ARGV[1])", [drains], node)),
        ("a script declaring the drains hash beside its own keys",
         script("return redis.call('HDEL', KEYS[3], ARGV[1])", [own, keys.nodes, drains], node)),
        ("a script of its own keys naming the drains hash",
         script("return redis.call('HDEL', ARGV[1], ARGV[2])", [own], drains, node)),
        ("the resume script itself", lambda: agent.store.resume_node(node)),
        ("the drain script itself (to rewrite the drain)",
         lambda: agent.store.drain_node(node, "root", "forged", T0)),
    ]


async def test_a_drained_nodes_agent_cannot_lift_the_drain(store: Store, agent: Agent) -> None:
    epoch, node, r = await lead(store), agent.node, agent.store.r
    assert await agent.store.heartbeat(report(node, gpus=2), now=T0) == NodeState.UP
    assert (await store.drain_node(node, "root", "disk swap", T0 + 1)).outcome == Outcome.OK
    assert json.loads(await store.r.hget(store.keys.drains, node)) == {
        "by": "root", "reason": "disk swap", "at": T0 + 1}

    # Its node hash is its own: these writes go through (the old way to lift a drain) ...
    await r.hset(store.keys.node(node), mapping=dict.fromkeys(LEGACY, ""))
    await r.hdel(store.keys.node(node), *LEGACY)
    await r.hset(store.keys.node(node), "drained_by", "mallory")
    # ... and the drains hash is out of its reach, whichever way it tries.
    for what, attempt in drain_writes(agent, store.keys):
        try:
            await refused(attempt())
        except BaseException as exc:
            raise AssertionError(f"{what}: not refused as it should be") from exc

    # The drain holds: as the store reads the node, and in start.lua.
    assert json.loads(await store.r.hget(store.keys.drains, node))["by"] == "root"
    shown = await node_of(store, node)
    assert (shown.shown_state, shown.drained_by, shown.drain_reason, shown.drained_at) == (
        "DRAINED", "root", "disk swap", T0 + 1)
    job_id = await submit_one(store, now=T0 + 2)
    assert await start_job(store, epoch, job_id, node, [0], 1.0, T0 + 3) == Outcome.NODE_NOT_UP
    assert await alloc(store, node) == {}

    # The agent's heartbeat still works while drained, and lifts nothing.
    assert await agent.store.heartbeat(report(node, gpus=2), now=T0 + 4) == NodeState.UP
    shown = await node_of(store, node)
    assert (shown.state, shown.last_heartbeat, shown.shown_state, shown.drained_by) == (
        NodeState.UP, T0 + 4, "DRAINED", "root")
    assert await start_job(store, epoch, job_id, node, [0], 1.0, T0 + 5) == Outcome.NODE_NOT_UP

    # Only the admin lifts it; then the job starts there.
    resumed = await store.resume_node(node)
    assert (resumed.outcome, resumed.drained_by) == (Outcome.OK, "root")
    assert await start_job(store, epoch, job_id, node, [0], 1.0, T0 + 6) == Outcome.OK


async def test_a_nodes_agent_cannot_forge_a_drain_nor_shed_one_by_renaming(
        store: Store, agent: Agent) -> None:
    epoch, node, r = await lead(store), agent.node, agent.store.r
    assert await agent.store.heartbeat(report(node, gpus=2), now=T0) == NodeState.UP
    # "drained_by" in its node hash is no drain: the node is shown UP and takes jobs.
    await r.hset(store.keys.node(node), mapping={"drained_by": "root", "drain_reason": "forged",
                                                 "drained_at": T0})
    shown = await node_of(store, node)
    assert (shown.shown_state, shown.drained_by, shown.drained) == ("UP", "", False)
    job_id = await submit_one(store, now=T0 + 1)
    assert await start_job(store, epoch, job_id, node, [0], 1.0, T0 + 2) == Outcome.OK
    # Drained by the admin, its hash's `name` says another node: the store reads the node by
    # its key, drained all the same.
    assert (await store.drain_node(node, "root", "disk swap", T0 + 3)).outcome == Outcome.OK
    assert await r.hget(store.keys.node(node), "drained_by") is None  # the drain took it away
    await r.hset(store.keys.node(node), "name", "elsewhere")
    assert [(n.name, n.shown_state, n.drained_by) for n in await store.nodes()] == [
        (node, "DRAINING", "root")]


async def test_the_agents_acl_rules_are_refused_the_drains_hash_by_the_store(
        store: Store, agent: Agent) -> None:
    """ACL DRYRUN: the store's own verdict on the agent's rules, command by command."""
    user, drains = agent_user(agent.node), store.keys.drains
    for command in (("HSET", drains, agent.node, "{}"), ("HDEL", drains, agent.node),
                    ("DEL", drains), ("HGET", drains, agent.node)):
        verdict = await store.r.execute_command("ACL", "DRYRUN", user, *command)
        assert verdict != "OK" and "no permissions to access the" in verdict.lower(), verdict
    own = await store.r.execute_command("ACL", "DRYRUN", user, "HSET",
                                        store.keys.node(agent.node), "state", "UP")
    assert own == "OK"  # (its node hash is its own: what makes the drain's place matter)


@pytest.mark.parametrize("node", ["gpu1", "drains", "d", "x:drains", "node.a@b-1_2", "n:"])
@pytest.mark.parametrize("prefix", ["labq:", "lab:x:", "q"])
def test_no_agent_key_pattern_matches_the_drains_hash(node: str, prefix: str) -> None:
    keys = Keys(prefix)
    rules = " ".join(agent_rules(keys, node))
    patterns = re.findall(r"(?:^|[\s(])%?[RW]*~([^\s)]+)", rules)
    assert keys.node(node) in patterns and keys.wake in patterns  # the patterns were found
    assert not [p for p in patterns if fnmatchcase(keys.drains, p)], patterns


async def test_a_node_hash_its_agent_garbled_is_that_node_down_not_an_error_for_all(
        store: Store, agent: Agent) -> None:
    """A hostile or broken agent writes junk into its own node hash (it may): the cluster read
    shows that node DOWN with nothing to offer, and every other node as before."""
    await store.heartbeat(report(agent.node), now=T0)
    await store.heartbeat(report("other"), now=T0)
    for field, junk in (("state", "BOGUS"), ("gpus", "{not json"), ("gpus_total", "many")):
        await agent.store.r.hset(store.keys.node(agent.node), field, junk)
        garbled = await node_of(store, agent.node)
        assert (garbled.state, garbled.gpus_total) == (NodeState.DOWN, 0), field
        assert (await node_of(store, "other")).state is NodeState.UP
        assert {n.name for n in (await store.cluster_reads())[0]} >= {agent.node, "other"}
        await store.heartbeat(report(agent.node), now=T0)  # its next report mends it
        assert (await node_of(store, agent.node)).state is NodeState.UP
