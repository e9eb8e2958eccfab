"""Node maintenance against the real store and a real coordinator cycle: an admin's drain keeps
new jobs off a node while its jobs run on, outlives heartbeats (an agent restart is one), shows
DRAINING then DRAINED, and is named in waiting jobs' reasons; resume lifts it; remove forgets
a retired node unless its agent still reports or it holds jobs, and a node that reports again
joins again. A drain is kept in the drains hash, never in the node hash its agent writes (see
test_drain_security)."""

from __future__ import annotations

import json
from pathlib import Path

from scheduler.config import Settings
from scheduler.coordinator.core import Coordinator
from scheduler.coordinator.nodes import InMemoryNodes
from scheduler.model import JobState
from scheduler.noderun import EXITED, RUNNING, RunStatus
from scheduler.store import Outcome, Store
from tests.builders import T0, job_of, lead, report, started, submit_one


async def shown_node(store: Store, name: str) -> dict[str, object]:
    return next(n.to_dict() for n in await store.nodes() if n.name == name)


async def test_a_drain_outlives_heartbeats_and_shows_draining_then_drained(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await started(store, epoch, [0])
    drained = await store.drain_node("n1", "root", "disk swap", T0 + 1)
    assert (drained.outcome, drained.gpus_allocated) == (Outcome.OK, 1)
    assert json.loads(await store.r.hget(store.keys.drains, "n1")) == {
        "by": "root", "reason": "disk swap", "at": T0 + 1}
    assert not await store.r.hexists(store.keys.node("n1"), "drained_by")
    shown = await shown_node(store, "n1")
    assert (shown["shown_state"], shown["drained_by"], shown["drain_reason"],
            shown["drained_at"]) == ("DRAINING", "root", "disk swap", T0 + 1)
    # The agent goes on reporting (a restart for an upgrade is the same): the drain stays.
    await store.heartbeat(report("n1", gpus=2), now=T0 + 5)
    shown = await shown_node(store, "n1")
    assert (shown["state"], shown["shown_state"], shown["drained_by"]) == ("UP", "DRAINING",
                                                                           "root")
    assert await store.finish(epoch, await job_of(store, job_id), JobState.SUCCEEDED, 0,
                              "Completed", T0 + 6) == "OK"
    assert (await shown_node(store, "n1"))["shown_state"] == "DRAINED"
    # Drained again: who and why are the new ones, since when is kept.
    again = await store.drain_node("n1", "alice", "new PSU", T0 + 9)
    assert (again.outcome, again.gpus_allocated) == (Outcome.ALREADY, 0)
    shown = await shown_node(store, "n1")
    assert (shown["drained_by"], shown["drain_reason"], shown["drained_at"]) == (
        "alice", "new PSU", T0 + 1)
    resumed = await store.resume_node("n1")
    assert (resumed.outcome, resumed.drained_by) == (Outcome.OK, "alice")
    shown = await shown_node(store, "n1")
    assert (shown["shown_state"], shown["drained_by"], shown["drain_reason"],
            shown["drained_at"]) == ("UP", "", "", None)
    assert await store.r.hgetall(store.keys.drains) == {}
    assert (await store.resume_node("n1")).outcome == Outcome.NOT_DRAINED


async def test_drained_fields_an_earlier_version_left_in_the_node_hash_are_ignored(
        store: Store) -> None:
    """An earlier labq kept a drain in the node hash, where the node's agent may write: such
    fields drain nothing (shown UP, a job starts there) and drain, resume and remove delete
    them."""
    legacy = {"drained_by": "root", "drain_reason": "old", "drained_at": T0}
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    await store.r.hset(store.keys.node("n1"), mapping=legacy)
    shown = await shown_node(store, "n1")
    assert (shown["shown_state"], shown["drained_by"], shown["drained_at"]) == ("UP", "", None)
    job_id = await started(store, epoch, [0], now=T0 + 1)
    assert (await job_of(store, job_id)).node == "n1"
    assert (await store.drain_node("n1", "alice", "new PSU", T0 + 2)).outcome == Outcome.OK
    assert await store.r.hmget(store.keys.node("n1"), *legacy) == [None] * 3
    await store.r.hset(store.keys.node("n1"), mapping=legacy)
    resumed = await store.resume_node("n1")
    assert (resumed.outcome, resumed.drained_by) == (Outcome.OK, "alice")
    assert await store.r.hmget(store.keys.node("n1"), *legacy) == [None] * 3
    await store.r.hset(store.keys.node("n1"), mapping=legacy)
    assert (await store.resume_node("n1")).outcome == Outcome.NOT_DRAINED
    assert await store.r.hmget(store.keys.node("n1"), *legacy) == [None] * 3


async def test_unknown_nodes_are_refused_and_nothing_is_made(store: Store) -> None:
    assert (await store.drain_node("ghost", "root", "x", T0)).outcome == Outcome.NO_SUCH_NODE
    assert (await store.resume_node("ghost")).outcome == Outcome.NO_SUCH_NODE
    assert (await store.remove_node("ghost", T0)).outcome == Outcome.NO_SUCH_NODE
    assert await store.nodes() == []
    assert not await store.r.exists(store.keys.node("ghost"))


async def test_remove_refuses_a_reporting_agent_and_held_jobs_then_forgets_the_node(
        store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    await store.heartbeat(report("n2", gpus=1), now=T0)
    job_id = await started(store, epoch, [0])
    alive = await store.remove_node("n1", cutoff=T0 - 300)  # it reported after the cutoff
    assert (alive.outcome, alive.last_heartbeat) == (Outcome.ALIVE, T0)
    held = await store.remove_node("n1", cutoff=T0 + 1)  # silent, but a job holds it
    assert (held.outcome, held.jobs) == (Outcome.HOLDS_JOBS, (job_id,))
    assert {n.name for n in await store.nodes()} == {"n1", "n2"}
    assert await store.finish(epoch, await job_of(store, job_id), JobState.FAILED, None,
                              "NodeLost", T0 + 2) == "OK"
    await store.drain_node("n1", "root", "retired", T0 + 2)
    await store.drain_node("n2", "root", "kept", T0 + 2)
    assert (await store.remove_node("n1", cutoff=T0 + 1)).outcome == Outcome.OK
    assert [n.name for n in await store.nodes()] == ["n2"]
    assert list(await store.r.hgetall(store.keys.drains)) == ["n2"]  # its drain went with it
    for key in (store.keys.node("n1"), store.keys.node_alloc("n1"), store.keys.node_runs("n1"),
                store.keys.node_stops("n1"), store.keys.node_status("n1"),
                store.keys.node_wake("n1")):
        assert not await store.r.exists(key), key
    # Its agent comes back later: the node joins again, as a new node (not drained).
    await store.heartbeat(report("n1", gpus=2), now=T0 + 900)
    back = await shown_node(store, "n1")
    assert (back["state"], back["shown_state"], back["drained_by"]) == ("UP", "UP", "")


async def test_a_drained_node_gets_no_new_job_and_the_reason_names_the_drain(
        store: Store, tmp_path: Path) -> None:
    nodes = InMemoryNodes()
    coord = Coordinator(store, Settings(tmp_path), nodes=nodes)  # type: ignore[arg-type]
    coord.epoch = epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    await store.heartbeat(report("n2", gpus=2), now=T0)
    running = await started(store, epoch, [0], node="n1")
    await store.drain_node("n1", "root", "disk swap", T0)
    await store.r.delete(store.keys.wake)
    first = await submit_one(store, now=T0 + 1, gpus=2)
    second = await submit_one(store, now=T0 + 2, gpus=2)
    await coord.cycle(T0 + 3)
    assert (await job_of(store, first)).node == "n2"
    waiting = await job_of(store, second)
    assert waiting.state == JobState.PENDING
    assert any("drained by an admin: n1 (disk swap)" in r["detail"] for r in waiting.reasons), (
        waiting.reasons)
    # The job on the drained node runs on to its end; the node is then DRAINED, and stays
    # empty though it could hold the waiting job.
    nodes.report("n1", running, RunStatus(0, RUNNING, T0))
    nodes.report("n1", running, RunStatus(0, EXITED, T0, T0 + 4, 0))
    await coord.cycle(T0 + 5)
    assert (await job_of(store, running)).state == JobState.SUCCEEDED
    assert (await job_of(store, second)).state == JobState.PENDING
    assert (await shown_node(store, "n1"))["shown_state"] == "DRAINED"
    # Resume wakes the leader, and the waiting job starts on n1.
    assert (await store.resume_node("n1")).outcome == Outcome.OK
    assert await store.r.lrange(store.keys.wake, 0, -1) == ["node"]
    await coord.cycle(T0 + 6)
    assert (await job_of(store, second)).node == "n1"


def test_labq_nodes_shows_the_drain_with_who_why_and_since_when() -> None:
    from scheduler.cli.main import node_notes, node_rows
    from scheduler.model import Node, NodeState

    drained = Node("gpu1", NodeState.UP, 2, "A100", T0, [], {0: "17"},
                   drained_by="alice", drain_reason="disk swap\x1b[31m", drained_at=T0 - 7200)
    empty = Node("gpu2", NodeState.DOWN, 2, "A100", T0, [], {}, drained_by="bob",
                 drain_reason="retired", drained_at=T0 - 60)
    data = [n.to_dict() for n in (drained, empty)]
    assert [row[1] for row in node_rows(data, T0)] == ["DRAINING", "DRAINED"]
    notes = node_notes(data, per_gpu=False, now=T0)
    assert notes[0] == ("note: gpu1 DRAINING by alice 2h 00m ago: disk swap\\x1b[31m (no new job "
                        "starts there; `labq admin node resume gpu1`)")
    assert notes[1].startswith("note: gpu2 DRAINED (its agent is silent: DOWN) by bob 1m 00s ago")
