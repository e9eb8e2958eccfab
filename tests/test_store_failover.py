"""A replicated store (issue 21, item 3): a Valkey primary, a replica and three Sentinels
(tests/sentinel.py, real processes). labq's client finds the primary through the Sentinels and
follows a failover; an acknowledged submit waited for the replica, so killing the primary
loses none; the leader renews under a new epoch on the new primary, so no epoch number is
handed out twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import pytest_asyncio
import redis.exceptions as redis_errors

from scheduler.model import JobState
from scheduler.store import Store
from tests.builders import job_of, submit_one
from tests.sentinel import MASTER, SentinelStore

pytestmark = pytest.mark.store
T = TypeVar("T")


@pytest.fixture
def replicated() -> Iterator[SentinelStore]:
    made = SentinelStore().start()
    yield made
    made.stop()


@pytest_asyncio.fixture
async def store(replicated: SentinelStore) -> AsyncIterator[Store]:
    made = Store.from_url("redis:///0", sentinels=replicated.sentinels.split(","),
                          master=MASTER)
    yield made
    await made.close()


async def again(call: Callable[[], Awaitable[T]], within: float = 15.0) -> T:
    """`call()` until it succeeds, as a daemon's loop calls the store again after an error."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except (redis_errors.ConnectionError, redis_errors.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_a_failover_loses_no_acknowledged_submit_and_moves_the_epoch_on(
        store: Store, replicated: SentinelStore) -> None:
    epoch = await store.lease("coordinator-1", 5000)
    assert epoch == 1
    assert await store.lease("coordinator-1", 5000) == 1  # renewed, same primary
    replica = replicated.client(next(n for n in replicated.ports if n != replicated.primary))
    ids = await asyncio.gather(*(submit_one(store) for _ in range(20)))  # on several connections
    # each acknowledged only once the replica had it (WAIT on the connection that wrote it)
    assert all(replica.exists(store.keys.job(job_id)) for job_id in ids)

    took = replicated.kill_primary()
    # the client asks the Sentinels again and goes on with the new primary (a call made
    # while they still disagree fails, and the daemons' loops call again, as here)
    renewed = await again(lambda: store.lease("coordinator-1", 5000))
    assert renewed > epoch  # a new epoch on the new primary: never one handed out before
    assert await store.lease("coordinator-2", 5000) == 0  # and still one leader
    for job_id in ids:
        assert (await job_of(store, job_id)).state == JobState.PENDING
    after = await submit_one(store)
    assert (await job_of(store, after)).state == JobState.PENDING
    assert after not in ids
    print(f"failover: the replica was promoted {took:.1f} s after the primary was killed")
