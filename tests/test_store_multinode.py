"""A job across nodes in a real Valkey: one start script allocates on all its nodes and writes
each node's start record (its rank, every node, the head); finish and requeue free them all
and release every node's run; nothing half-done."""

from __future__ import annotations

import pytest

from scheduler.model import JobState
from scheduler.noderun import StartRecord
from scheduler.store import Store
from tests.builders import T0, alloc, job_of, lead, report, spec, usage_totals, waiting_ids


async def three_nodes(store: Store) -> None:
    for name in ("n1", "n2", "n3"):
        await store.heartbeat(report(name, gpus=4), T0)


async def submit_across(store: Store, per_node: int = 2, nodes: int = 2,
                        requeue: bool = False) -> str:
    (job_id,) = await store.submit(
        [spec(gpus=per_node * nodes, nodes=nodes, requeue=requeue)], token=f"t{nodes}{requeue}",
        now=T0 - 10)
    return job_id


async def records(store: Store, job_id: str) -> dict[str, StartRecord]:
    found = {}
    for name in ("n1", "n2", "n3"):
        text = await store.r.hget(store.keys.node_runs(name), job_id)
        if text:
            found[name] = StartRecord.from_json(text)
    return found


async def test_start_allocates_on_every_node_and_tells_each_its_rank(store: Store) -> None:
    await three_nodes(store)
    epoch = await lead(store)
    job_id = await submit_across(store)
    job = await job_of(store, job_id)
    assert await store.start(epoch, job, "n2", [2, 3], 1.0, T0, [("n1", [0, 1])],
                             {"n2": "host-b", "n1": "host-a"}) == "OK"
    job = await job_of(store, job_id)
    assert job.state is JobState.STARTING and (job.node, job.gpu_indices) == ("n2", [2, 3])
    assert job.parts == [["n2", [2, 3]], ["n1", [0, 1]]] and job.node_names == ["n2", "n1"]
    assert await alloc(store, "n2") == {"2": job_id, "3": job_id}
    assert await alloc(store, "n1") == {"0": job_id, "1": job_id}
    assert await alloc(store, "n3") == {}
    found = await records(store, job_id)
    assert sorted(found) == ["n1", "n2"]
    head, other = found["n2"], found["n1"]
    assert (head.rank, head.gpu_indices, other.rank, other.gpu_indices) == (0, [2, 3], 1, [0, 1])
    assert head.hosts == other.hosts == ["host-b", "host-a"]
    assert head.node_names == other.node_names == ["n2", "n1"]


@pytest.mark.parametrize(("rest", "why"), [
    ([("n1", [0, 1]), ("n3", [0, 1])], "WRONG_COUNT"),  # a 2-node job on 3 nodes
    ([], "WRONG_COUNT"),  # or on one
    ([("n2", [0, 1])], "NOT_DISTINCT"),
    ([("n1", [0])], "WRONG_COUNT"),
    ([("n1", [3, 4])], "GPU_OUT_OF_RANGE"),
    ([("n1", [1, 2])], "GPU_BUSY"),  # n1's GPU 1 is another job's
])
async def test_a_start_refused_on_any_node_writes_nothing_anywhere(
        store: Store, rest: list[tuple[str, list[int]]], why: str) -> None:
    await three_nodes(store)
    epoch = await lead(store)
    (busy,) = await store.submit([spec(gpus=1)], token="busy", now=T0 - 20)
    assert await store.start(epoch, await job_of(store, busy), "n1", [1], 1.0, T0) == "OK"
    job_id = await submit_across(store)
    job = await job_of(store, job_id)
    assert await store.start(epoch, job, "n2", [2, 3], 1.0, T0, rest) == why
    assert (await job_of(store, job_id)).state is JobState.PENDING
    assert await alloc(store, "n2") == {} and await alloc(store, "n1") == {"1": busy}
    assert await records(store, job_id) == {}
    assert job_id in await waiting_ids(store)


async def test_a_start_refused_when_any_node_is_down(store: Store) -> None:
    await three_nodes(store)
    epoch = await lead(store)
    assert await store.node_down(epoch, "n3", T0 + 1) == "DOWN"
    job = await job_of(store, await submit_across(store))
    assert await store.start(epoch, job, "n1", [0, 1], 1.0, T0, [("n3", [0, 1])]) == \
        "NODE_NOT_UP"
    assert await alloc(store, "n1") == {} and await alloc(store, "n3") == {}


async def test_finish_frees_every_node_releases_every_run_and_charges_all_gpus(
        store: Store) -> None:
    await three_nodes(store)
    epoch = await lead(store)
    job_id = await submit_across(store)
    job = await job_of(store, job_id)
    assert await store.start(epoch, job, "n1", [0, 1], 1.0, T0, [("n2", [0, 1])]) == "OK"
    assert await store.mark_running(epoch, job_id, T0) == "OK"
    job = await job_of(store, job_id)
    assert await store.finish(epoch, job, JobState.SUCCEEDED, 0, "Completed", T0 + 100) == "OK"
    assert await alloc(store, "n1") == {} and await alloc(store, "n2") == {}
    assert await records(store, job_id) == {}
    for name in ("n1", "n2"):  # each node's agent is woken to clean up
        assert job_id in await store.r.lrange(store.keys.node_wake(name), 0, -1)
    done = await job_of(store, job_id)
    assert done.state is JobState.SUCCEEDED and done.gpu_seconds == pytest.approx(400)
    assert (await usage_totals(store))["user"]["alice"]["gpu_s"] == pytest.approx(400)


async def test_finish_with_a_stale_view_of_the_other_nodes_is_refused(store: Store) -> None:
    await three_nodes(store)
    epoch = await lead(store)
    job_id = await submit_across(store)
    job = await job_of(store, job_id)
    assert await store.start(epoch, job, "n1", [0, 1], 1.0, T0, [("n2", [0, 1])]) == "OK"
    job = await job_of(store, job_id)
    job.parts = [["n1", [0, 1]], ["n3", [0, 1]]]  # read wrong: its other node is n2
    assert await store.finish(epoch, job, JobState.FAILED, 1, "x", T0 + 1) == "STALE_VIEW"
    job.parts = []
    assert await store.finish(epoch, job, JobState.FAILED, 1, "x", T0 + 1) == "STALE_VIEW"
    assert await alloc(store, "n2") == {"0": job_id, "1": job_id}


async def test_requeue_frees_every_node_and_the_job_waits_with_no_nodes(store: Store) -> None:
    await three_nodes(store)
    epoch = await lead(store)
    job_id = await submit_across(store, requeue=True)
    job = await job_of(store, job_id)
    assert await store.start(epoch, job, "n1", [0, 1], 1.0, T0, [("n2", [2, 3])]) == "OK"
    job = await job_of(store, job_id)
    assert await store.requeue(epoch, job, "NodeLost", T0 + 5) == "OK"
    assert await alloc(store, "n1") == {} and await alloc(store, "n2") == {}
    assert await records(store, job_id) == {}
    again = await job_of(store, job_id)
    assert again.state is JobState.PENDING and again.parts == [] and again.node is None
    assert again.restarts == 1 and again.nodes == 2 and again.gpus == 4
    # and it starts again, elsewhere
    assert await store.start(epoch, again, "n3", [0, 1], 1.0, T0 + 6, [("n2", [0, 1])]) == "OK"
    assert (await records(store, job_id))["n2"].attempt == 1
