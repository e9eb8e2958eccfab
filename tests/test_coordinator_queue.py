"""What the leader keeps of a deep queue between cycles (issue 21, item 7: load): each waiting
job as a `Queued` read from a few of its fields, the reasons it wrote as fingerprints,
rewritten a share at a time; and the API's node list read once for a burst of submits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from scheduler.config import Settings
from scheduler.coordinator.core import REASONS_REFRESH_S, Coordinator
from scheduler.coordinator.nodes import InMemoryNodes
from scheduler.coordinator.waiting import QUEUE_FIELDS, Queued
from scheduler.model import Job, Node
from scheduler.noderun import RUNNING, RunStatus
from scheduler.server.api import Api
from scheduler.store import Store
from tests.builders import T0, job_of, lead, report, spec


async def test_a_job_read_by_its_queue_fields_is_scheduled_as_read_in_full(store: Store) -> None:
    asked = spec(gpus=4, gpu_type="A100", qos="scavenger", time_limit_s=7200, nodes=2,
                 cpus=8, cpus_per_gpu=3, mem=64000, mem_per_gpu=9000, name="train-x",
                 dependency="afterok:1", array_job="17", requeue=True, env={"A": "1"})
    (job_id,) = await store.submit([asked], "t", T0)
    full = await job_of(store, job_id)
    (row,) = await store.job_fields([job_id], QUEUE_FIELDS)
    queued = Queued.of(Job.from_fields({k: v for k, v in zip(QUEUE_FIELDS, row, strict=True)
                                        if v is not None}))
    assert queued == Queued.of(full)  # the policy's view, name, state, dependency, array
    assert (queued.id, queued.user, queued.submitted_at) == (job_id, "alice", T0)
    assert queued.view.demand == full.demand and queued.view.nodes == 2


async def test_unchanged_reasons_are_rewritten_a_share_each_cycle(store: Store,
                                                                  tmp_path: Path) -> None:
    nodes = InMemoryNodes()
    coord = Coordinator(store, Settings(tmp_path), nodes=nodes)
    coord.epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=1), now=T0)
    ids = await store.submit([spec(gpus=1) for _ in range(41)], "t", T0)
    written: list[int] = []
    real = store.set_reasons

    async def counting(reasons: dict[str, Any], *args: Any) -> int:
        written.append(len(reasons))
        return await real(reasons, *args)

    store.set_reasons = counting  # type: ignore[method-assign,assignment]
    await coord.cycle(T0 + 1)  # the first job starts; the others wait
    assert written[-1] == 40  # every waiting job's, once
    nodes.report("n1", ids[0], RunStatus(0, RUNNING, T0 + 1))
    await coord.cycle(T0 + 2)  # it runs: the estimated starts move once more
    await coord.cycle(T0 + 3)
    assert written[-1] <= 1  # unchanged: (almost) none again
    coord._reasons_refreshed -= REASONS_REFRESH_S / 2
    await coord.cycle(T0 + 4)
    assert 19 <= written[-1] <= 22  # half of them, the longest written first

    coord._reasons_refreshed -= REASONS_REFRESH_S
    await coord.cycle(T0 + 5)
    assert written[-1] == 40  # all of them, a whole REASONS_REFRESH_S later


async def test_a_hold_and_release_between_two_cycles_is_explained_again(
        store: Store, tmp_path: Path) -> None:
    nodes = InMemoryNodes()
    coord = Coordinator(store, Settings(tmp_path), nodes=nodes)
    coord.epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=1), now=T0)
    first, *_, last = await store.submit([spec(gpus=1) for _ in range(20)], "t", T0)
    await coord.cycle(T0 + 1)
    nodes.report("n1", first, RunStatus(0, RUNNING, T0 + 1))
    await coord.cycle(T0 + 2)  # it runs: the others' reasons and estimates stay as they are
    reason = (await job_of(store, last)).reason
    assert reason not in ("", "Released")
    # The job leaves the queue and comes back before the next cycle: as far as the leader
    # sees, it never left, but the release wrote "Released" over the reason it had.
    assert await store.hold(last, "alice", False, release=False, now=T0) == "OK"
    assert await store.hold(last, "alice", False, release=True, now=T0) == "OK"
    assert (await job_of(store, last)).reason == "Released"
    await coord.cycle(T0 + 3)
    assert (await job_of(store, last)).reason == reason


async def test_a_burst_of_submits_reads_the_nodes_once(store: Store, tmp_path: Path) -> None:
    reads = 0

    class SlowNodes:
        async def nodes(self) -> list[Node]:
            nonlocal reads
            reads += 1
            await asyncio.sleep(0.05)
            return []

    api = Api(SlowNodes(), Settings(tmp_path), lambda: None)  # type: ignore[arg-type]
    answers = await asyncio.gather(*(api._nodes_cached() for _ in range(32)))
    assert reads == 1 and answers == [()] * 32  # (no node: no shape)
    api._nodes = (0.0, ())  # stale: read again, once
    await asyncio.gather(*(api._nodes_cached() for _ in range(8)))
    assert reads == 2
