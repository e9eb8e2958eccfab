"""The coordinator against nodes played by the test (coordinator.nodes.InMemoryNodes): what it
does with agents' reports, and the stops it sends, with a real store and no process at all."""

from __future__ import annotations

from pathlib import Path

from scheduler.config import Settings
from scheduler.coordinator.core import Coordinator
from scheduler.coordinator.nodes import InMemoryNodes
from scheduler.model import JobState
from scheduler.noderun import EXITED, RUNNING, RunStatus
from scheduler.store import Store
from tests.builders import T0, job_of, lead, report, submit_one


async def coordinator(store: Store, tmp_path: Path) -> tuple[Coordinator, InMemoryNodes]:
    nodes = InMemoryNodes()
    coord = Coordinator(store, Settings(tmp_path), nodes=nodes)
    coord.epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    return coord, nodes


async def test_a_job_runs_and_is_cancelled_through_its_nodes_reports(
        store: Store, tmp_path: Path) -> None:
    coord, nodes = await coordinator(store, tmp_path)
    job_id = await submit_one(store, now=T0)
    await coord.cycle(T0 + 1)
    job = await job_of(store, job_id)
    assert (job.state, job.node) == (JobState.STARTING, "n1")
    runs, _, _ = await store.node_orders("n1")
    assert runs[job_id].gpu_indices == job.gpu_indices  # the start record went with the start

    nodes.report("n1", job_id, RunStatus(0, RUNNING, T0 + 1.5))
    await coord.cycle(T0 + 2)
    job = await job_of(store, job_id)
    assert (job.state, job.started_at) == (JobState.RUNNING, T0 + 1.5)  # the real start

    assert await store.cancel(job_id, "alice", False, T0 + 3) == "STOPPING"
    await coord.cycle(T0 + 4)
    assert nodes.stops == [(job_id, "CANCELLED")]
    assert (await job_of(store, job_id)).state == JobState.RUNNING  # until the node says so

    nodes.report("n1", job_id, RunStatus(0, EXITED, T0 + 1.5, T0 + 5, 143, 15, stopped=True))
    await coord.cycle(T0 + 6)
    job = await job_of(store, job_id)
    assert (job.state, job.reason, job.ended_at) == (JobState.CANCELLED, "Cancelled", T0 + 5)
    assert (await store.nodes())[0].allocations == {}


async def test_the_time_limit_is_a_stop_sent_to_the_node(store: Store, tmp_path: Path) -> None:
    coord, nodes = await coordinator(store, tmp_path)
    job_id = await submit_one(store, now=T0, time_limit_s=60)
    await coord.cycle(T0 + 1)
    nodes.report("n1", job_id, RunStatus(0, RUNNING, T0 + 1))
    await coord.cycle(T0 + 30)
    assert nodes.stops == []
    await coord.cycle(T0 + 62)
    assert nodes.stops == [(job_id, "TIMEOUT")]
    nodes.report("n1", job_id, RunStatus(0, EXITED, T0 + 1, T0 + 63, 143, 15, stopped=True))
    await coord.cycle(T0 + 64)
    job = await job_of(store, job_id)
    assert (job.state, job.reason) == (JobState.TIMEOUT, "TimeLimit")


async def test_a_silent_node_is_lost_only_after_node_timeout(store: Store, tmp_path: Path) -> None:
    coord, nodes = await coordinator(store, tmp_path)
    job_id = await submit_one(store, now=T0)
    await coord.cycle(T0 + 1)
    nodes.report("n1", job_id, RunStatus(0, RUNNING, T0 + 1))
    await coord.cycle(T0 + 2)
    await coord.cycle(T0 + 250)  # a long hiccup: the node's jobs keep running
    assert (await job_of(store, job_id)).state == JobState.RUNNING
    await coord.cycle(T0 + 301)  # past node_timeout_s (300 s by default): lost
    job = await job_of(store, job_id)
    assert (job.state, job.reason) == (JobState.FAILED, "NodeLost")


async def test_the_last_cycles_fair_share_table_is_reused_while_fresh(
        store: Store, tmp_path: Path) -> None:
    from scheduler.cluster.read import build_snapshot, read_cluster
    from scheduler.cluster.views import pending_view
    from scheduler.metrics import render
    from scheduler.policy.cycle import schedule
    from scheduler.policy.fairengine import rank

    coord, _ = await coordinator(store, tmp_path)
    for _ in range(3):  # more than the 2 GPUs: some wait
        await submit_one(store, now=T0)
    await coord.cycle(T0 + 1)
    table = coord.fresh_fairshare(T0 + 2)
    assert table is not None and any(r.user == "alice" for r in table.rows)
    # The same table the policy ranks by for the same inputs.
    state = await read_cluster(store, T0 + 1)
    waiting = [pending_view(j) for j in await store.waiting_jobs()]
    snapshot = build_snapshot(state, waiting, coord.settings)
    assert schedule(snapshot).fairshare == rank(snapshot).table
    assert coord.fresh_fairshare(T0 + 60) is None  # stale: computed again by readers
    coord.epoch = 0
    assert coord.fresh_fairshare(T0 + 2) is None  # a follower has none of its own
    coord.epoch = await lead(store)
    text = (await render(store, coord, now=T0 + 2)).decode()
    factor = table.factor("lab", "alice")
    assert f'labq_fairshare_factor{{account="lab",user="alice"}} {factor}' in text
