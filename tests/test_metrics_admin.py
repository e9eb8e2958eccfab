"""`/metrics` series an admin alerts on (issue 22): node drains and removals, ended jobs by
state and reason, GPUs per user, the store's health and the build, and gauges present from the
start; against the real store, parsed back with prometheus_client's parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.metrics import render
from scheduler.model import GpuInfo, JobState, NodeReport
from scheduler.store import Store
from tests.builders import A100, T0, job_of, lead, report, started
from tests.test_metrics import admin, coordinator, parse, scrape


async def test_a_drained_node_shows_draining_then_drained_and_who_drained_it(
        store: Store, tmp_path: Path) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    await store.heartbeat(report("n2", gpus=1), now=T0)
    job_id = await started(store, epoch, [0])
    await store.drain_node("n1", "alice", "disk swap", T0)
    got = await scrape(store, coordinator(store, tmp_path), T0 + 1)
    states = {s: got.value("labq_node_state", node="n1", state=s)
              for s in ("UP", "DOWN", "DRAINING", "DRAINED")}
    assert states == {"UP": 0, "DOWN": 0, "DRAINING": 1, "DRAINED": 0}
    assert got.value("labq_node_drained", node="n1", drained_by="alice") == 1
    assert got.value("labq_node_drained", node="n2", drained_by="") == 0
    assert got.value("labq_node_state", node="n2", state="UP") == 1
    assert got.value("labq_node_up", node="n1") == 1  # its agent reports: alive, drained
    assert got.value("labq_gpus_idle", node="n1", model=A100) == 0  # free, but no job goes
    assert await store.finish(epoch, await job_of(store, job_id), JobState.SUCCEEDED, 0,
                              "Completed", T0 + 2) == "OK"
    got = await scrape(store, coordinator(store, tmp_path), T0 + 3)
    assert got.value("labq_node_state", node="n1", state="DRAINED") == 1
    assert got.value("labq_node_state", node="n1", state="DRAINING") == 0
    await store.resume_node("n1")
    got = await scrape(store, coordinator(store, tmp_path), T0 + 4)
    assert got.value("labq_node_drained", node="n1", drained_by="") == 0
    assert got.value("labq_node_drained", node="n1", drained_by="alice") is None
    assert got.value("labq_gpus_idle", node="n1", model=A100) == 2


async def test_a_removed_node_has_no_series(store: Store, tmp_path: Path) -> None:
    await store.heartbeat(report("n1", gpus=2), now=T0)
    await store.heartbeat(report("old", gpus=1), now=T0 - 900)
    assert (await store.remove_node("old", T0 - 300)).outcome == "OK"
    text = (await render(store, coordinator(store, tmp_path), now=T0)).decode()
    assert 'node="n1"' in text and 'node="old"' not in text


async def test_ended_jobs_by_state_reason_and_account_from_the_stats_hash(
        store: Store, tmp_path: Path) -> None:
    await admin(store, {"target": "account", "op": "add", "name": "lab", "parent": "root"})
    # As the scripts that end jobs count them: ended|{state}|{reason code}|{account}.
    await store.r.hincrby(store.keys.stats, "ended|FAILED|NonZeroExitCode|lab", 3)
    await store.r.hincrby(store.keys.stats, "ended|FAILED|Signal|lab", 1)
    await store.r.hincrby(store.keys.stats, "ended|SUCCEEDED|Completed|guests", 2)
    got = await scrape(store, coordinator(store, tmp_path), T0)
    ended = "labq_jobs_ended_total"
    assert got.value(ended, state="FAILED", reason="NonZeroExitCode", account="lab") == 3
    assert got.value(ended, state="FAILED", reason="Signal", account="lab") == 1
    assert got.value(ended, state="SUCCEEDED", reason="Completed", account="guests") == 2
    # Known accounts count the common outcomes from 0, so the first one is a rate.
    assert got.value(ended, state="SUCCEEDED", reason="Completed", account="lab") == 0
    assert got.value(ended, state="TIMEOUT", reason="TimeLimit", account="default") == 0
    assert got.value(ended, state="CANCELLED", reason="Cancelled", account="lab") == 0
    assert got.value(ended, state="FAILED", reason="Signal", account="default") is None


async def test_ended_jobs_are_counted_by_the_script_that_ends_them(store: Store,
                                                                   tmp_path: Path) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    failed = await started(store, epoch, [0], account="lab")
    assert await store.finish(epoch, await job_of(store, failed), JobState.FAILED, 3,
                              "NonZeroExitCode 3", T0 + 5) == "OK"
    got = await scrape(store, coordinator(store, tmp_path), T0 + 6)
    assert got.value("labq_jobs_ended_total", state="FAILED", reason="NonZeroExitCode",
                     account="lab") == 1


async def test_every_gauge_an_alert_reads_is_there_on_an_idle_cluster(
        store: Store, tmp_path: Path) -> None:
    await admin(store, {"target": "account", "op": "add", "name": "lab", "parent": "root"},
                {"target": "user", "op": "add", "name": "ann", "account": "lab"})
    await store.heartbeat(report("n1", gpus=2), now=T0)
    got = await scrape(store, coordinator(store, tmp_path), T0)
    assert got.value("labq_pending_oldest_seconds", account="lab") == 0
    assert got.value("labq_pending_oldest_seconds", account="default") == 0
    assert got.value("labq_user_gpus_allocated", account="lab", user="ann") == 0
    assert got.value("labq_user_gpus_utilized", account="lab", user="ann") == 0
    assert got.value("labq_store_up") == 1
    [info] = got.family("labq_build_info").samples
    assert info.value == 1 and info.labels["version"] and info.labels["python"].count(".") == 2


async def test_gpus_and_their_utilization_per_user(store: Store, tmp_path: Path) -> None:
    gpus = [GpuInfo(i, f"GPU-{i}", A100, 80 << 30, 0, u, 50.0, 30.0, "OK")
            for i, u in enumerate((0.5, 0.75, 0.1))]
    await store.heartbeat(NodeReport("n1", gpus), now=T0)
    epoch = await lead(store)
    await started(store, epoch, [0, 1], user="ann", account="lab")
    await started(store, epoch, [2], user="bob", account="lab")
    got = await scrape(store, coordinator(store, tmp_path), T0 + 1)
    assert got.value("labq_user_gpus_allocated", account="lab", user="ann") == 2
    assert got.value("labq_user_gpus_utilized", account="lab", user="ann") == 1.25
    assert got.value("labq_user_gpus_utilized", account="lab", user="bob") == pytest.approx(0.1)


async def test_a_scrape_while_the_store_is_down_says_so(store: Store, tmp_path: Path) -> None:
    from scheduler.server.ports import free_port

    source = coordinator(store, tmp_path)
    source.epoch = 4
    down = Store.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        got = parse((await render(down, source, now=T0)).decode())
    finally:
        await down.close()
    assert got.value("labq_store_up") == 0
    assert got.value("labq_coordinator_leader") == 1
    assert got.family("labq_build_info").samples
    assert got.family("labq_jobs") is None  # nothing read from the store is made up
