"""Idle GPUs in the coordinator's cycle against the real store: state kept by fenced scripts,
the owner notified through notify_command, and under "stop" the job stopped as IdleGpu."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from scheduler.config import Settings
from scheduler.coordinator.core import Coordinator
from scheduler.coordinator.notify import run_notify
from scheduler.model import GpuInfo, JobState, NodeReport
from scheduler.noderun import RunStatus
from scheduler.store import Store
from tests.builders import A100, job_of, lead, started

NOTIFY = ('printf "%s|%s|%s|%s\\n" "$LABQ_NOTIFY_EVENT" "$LABQ_NOTIFY_USER" "$LABQ_NOTIFY_JOB" '
          '"$LABQ_NOTIFY_MESSAGE" >> {out}')


def coordinator(store: Store, tmp_path: Path, **settings: Any) -> Coordinator:
    """A real coordinator on the store (it talks to nodes only through the store)."""
    return Coordinator(store, Settings(tmp_path, **settings))


async def beat(store: Store, now: float, *utils: float) -> None:
    gpus = [GpuInfo(i, f"GPU-{i}", A100, 1 << 30, 0, u) for i, u in enumerate(utils)]
    await store.heartbeat(NodeReport("n1", gpus), now=now)


async def cycle_idle(coord: Coordinator, epoch: int, now: float) -> None:
    """The cycle's idle step on what the store holds now, then wait for notifications."""
    await coord._check_idle(epoch, await coord.store.nodes(), await coord.store.active_jobs(),
                            now)
    await asyncio.gather(*coord.notifier.running)


async def test_warn_tracks_in_the_store_and_notifies_once(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "notified"
    T = time.time()
    epoch = await lead(store)
    await beat(store, T, 0.0, 0.9)
    job_id = await started(store, epoch, [0, 1], now=T - 1, user="ann")
    coord = coordinator(store, tmp_path, idle_gpu_after_s=60.0, idle_gpu_stop_after_s=120.0,
                        notify_command=NOTIFY.format(out=out))
    coord.epoch = epoch
    await cycle_idle(coord, epoch, T + 1)
    assert (await job_of(store, job_id)).gpu_idle_since == {0: T}
    assert not out.exists()

    # A new coordinator (a leader change) carries on from the stored state.
    other = coordinator(store, tmp_path, idle_gpu_after_s=60.0, idle_gpu_stop_after_s=120.0,
                        notify_command=NOTIFY.format(out=out))
    await beat(store, T + 61, 0.01, 0.9)
    await cycle_idle(other, epoch, T + 62)
    await beat(store, T + 90, 0.0, 0.9)
    await cycle_idle(other, epoch, T + 91)
    job = await job_of(store, job_id)
    assert job.gpu_idle_since == {0: T} and job.idle_notified
    lines = out.read_text().splitlines()
    assert len(lines) == 1  # once per idle spell
    event, user, notified_job, message = lines[0].split("|")
    assert (event, user, notified_job) == ("gpu_idle", "ann", job_id)
    assert f"labq job {job_id} of ann: GPU(s) 0 on n1 idle for" in message
    assert "utilization < 5%" in message and "policy: warn only" in message
    assert job.state == JobState.RUNNING and not job.stop_request  # warn never stops


async def test_stop_ends_the_job_cancelled_idlegpu(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "notified"
    T = time.time()
    epoch = await lead(store)
    await beat(store, T, 0.0, 0.0)
    job_id = await started(store, epoch, [0, 1], now=T - 1, user="ann", account="lab")
    coord = coordinator(store, tmp_path, idle_gpu_policy="stop", idle_gpu_after_s=30.0,
                        idle_gpu_stop_after_s=60.0, notify_command=NOTIFY.format(out=out))
    coord.epoch = epoch
    await cycle_idle(coord, epoch, T + 1)
    await beat(store, T + 30, 0.0, 0.0)
    await cycle_idle(coord, epoch, T + 31)  # idle: notified
    await beat(store, T + 60, 0.0, 0.0)
    await cycle_idle(coord, epoch, T + 61)  # idle for 60 s: stopped
    job = await job_of(store, job_id)
    assert (job.stop_request, job.stop_reason) == ("CANCELLED", "IdleGpu")
    events = [line.split("|")[0] for line in out.read_text().splitlines()]
    assert events == ["gpu_idle", "gpu_idle_stopped"]
    assert "labq stopped job" in out.read_text().splitlines()[1]
    await cycle_idle(coord, epoch, T + 62)  # asked once
    assert len(out.read_text().splitlines()) == 2

    # The stop went to the node; its agent's runner stopped the job and reports so: it ends so.
    _, stops, _ = await store.node_orders("n1")
    assert stops == {job_id: "CANCELLED"}
    stopped = RunStatus(0, "EXITED", T, T + 63, 143, 15, stopped=True)
    assert await store.report_runs("n1", {job_id: stopped}) == 1
    await coord._watch(epoch, await store.active_jobs(), T + 64)
    ended = await job_of(store, job_id)
    assert (ended.state, ended.reason) == (JobState.CANCELLED, "IdleGpu")
    stats = await store.stats()
    assert stats["evictions|lab|IdleGpu"] == "1"


async def test_idle_state_is_fenced(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(NodeReport("n1", [GpuInfo(0, "g", A100, 1, 0, 0.0)]), now=1000.0)
    job_id = await started(store, epoch, [0])
    assert await store.set_idle(epoch + 1, {job_id: ({0: 5.0}, True)}) == "STALE_EPOCH"
    assert (await job_of(store, job_id)).gpu_idle_since == {}
    assert await store.set_idle(epoch, {job_id: ({0: 5.0}, True)}) == "1"
    assert await store.requeue(epoch, await job_of(store, job_id), "NodeLost", 1010.0) == "OK"
    requeued = await job_of(store, job_id)
    assert requeued.gpu_idle_since == {} and not requeued.idle_notified
    assert requeued.queued_at == 1010.0 and requeued.waiting_since == 1010.0
    assert await store.set_idle(epoch, {job_id: ({0: 5.0}, True)}) == "0"  # not RUNNING


async def test_notify_failures_and_timeouts_are_logged_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    began = time.monotonic()
    assert not await run_notify("sleep 30", "ann", "7", "gpu_idle", "m", timeout_s=0.5)
    assert time.monotonic() - began < 10
    assert not await run_notify("echo broken >&2; exit 4", "ann", "7", "gpu_idle", "m", 5)
    assert "ran past" in caplog.text and "exited 4: broken" in caplog.text
    # Data reaches the command by environment only: shell syntax in it is never run.
    marker = tmp_path / "pwned"
    out = tmp_path / "message"
    assert await run_notify(f'printf %s "$LABQ_NOTIFY_MESSAGE" > {out}', "ann", "7", "gpu_idle",
                            f"$(touch {marker}); `touch {marker}`", 5)
    assert out.read_text() == f"$(touch {marker}); `touch {marker}`" and not marker.exists()


async def test_notify_output_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """A chatty command (8 MiB of output) is drained, not held: the log keeps the tail of the
    first 64 KiB only, and the call still reports the failure."""
    caplog.set_level(logging.WARNING)
    command = "head -c 8388608 /dev/zero | tr '\\0' x; echo; echo END; exit 3"
    assert not await run_notify(command, "ann", "7", "gpu_idle", "m", timeout_s=30)
    [record] = [r for r in caplog.records if "exited 3" in r.getMessage()]
    assert "END" not in record.getMessage()  # past the cap: read and dropped
    assert len(record.getMessage()) < 3000
