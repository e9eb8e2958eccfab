"""The leader lease is renewed however long a cycle takes (issue 21, item 2). The policy runs
in a thread of its own and the lease is renewed on another (`LeaseKeeper`), so neither 8 s of
CPU spent deciding nor the coordinator's event loop held for 8 s (its own CPU work: reading a
long queue, writing reasons) loses the 5 s lease: another coordinator trying meanwhile never
gets it, and the epoch is unchanged afterwards. The slowness is a busy loop in front of the
real policy, or a blocking sleep on the event loop; the lease, the store and the coordinator
are real."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scheduler.config import Settings
from scheduler.coordinator import core
from scheduler.coordinator.core import Coordinator
from scheduler.coordinator.lease import LEASE_TTL_MS
from scheduler.coordinator.nodes import InMemoryNodes
from scheduler.model import JobState
from scheduler.store import Store
from tests.builders import job_of, report, submit_one

pytestmark = pytest.mark.store
BUSY_S = 8.0  # longer than the lease


async def test_a_long_cycle_keeps_the_lease(store: Store, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real = core.schedule

    def slow(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + BUSY_S
        while time.monotonic() < deadline:  # CPU, not a sleep: the GIL is contended
            sum(range(1000))
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "schedule", slow)
    coord = Coordinator(store, Settings(tmp_path), nodes=InMemoryNodes())
    lease = asyncio.create_task(coord.lease_loop())
    try:
        while not coord.is_leader:
            await asyncio.sleep(0.05)
        epoch = coord.epoch
        now = time.time()
        await store.heartbeat(report("n1", gpus=2), now=now)
        job_id = await submit_one(store, now=now)
        cycle = asyncio.create_task(coord.cycle(now))
        challenges = []
        while not cycle.done():  # another coordinator tries to take over meanwhile
            challenges.append(await store.lease("coordinator-2", LEASE_TTL_MS))
            await asyncio.sleep(0.5)
        await cycle
        assert len(challenges) >= BUSY_S  # the cycle did take that long
        assert set(challenges) == {0}  # ... and nobody else ever got the lease
        assert coord.epoch == epoch and coord.is_leader
        assert (await job_of(store, job_id)).state == JobState.STARTING  # its starts landed
    finally:
        lease.cancel()


async def test_a_held_event_loop_keeps_the_lease(store: Store, tmp_path: Path) -> None:
    coord = Coordinator(store, Settings(tmp_path), nodes=InMemoryNodes())
    lease = asyncio.create_task(coord.lease_loop())
    challenger = store.reopen()  # on a thread of its own: this test's loop is held below
    challenges: list[int] = []
    done = threading.Event()

    async def challenge() -> None:
        try:
            while not done.is_set():
                challenges.append(await challenger.lease("coordinator-2", LEASE_TTL_MS))
                await asyncio.sleep(0.5)
        finally:
            await challenger.close()

    thread = threading.Thread(target=lambda: asyncio.run(challenge()))
    try:
        while not coord.is_leader:
            await asyncio.sleep(0.05)
        epoch = coord.epoch
        thread.start()
        time.sleep(BUSY_S)  # the coordinator's own event loop does nothing else meanwhile
        done.set()
        thread.join()
        assert len(challenges) >= BUSY_S  # the challenger did try all along
        assert set(challenges) == {0}  # ... and never got the lease
        await asyncio.sleep(1.5)  # the renewals' answers held meanwhile reach the loop
        assert coord.epoch == epoch and coord.is_leader
        assert int(await store.r.get(store.keys.epoch)) == epoch  # no new epoch was taken
    finally:
        done.set()
        lease.cancel()
