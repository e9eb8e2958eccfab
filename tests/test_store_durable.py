"""An acknowledged submission is on the store's disk (issue 21, item 6): with an append-only
file, the submit waits (WAITAOF) until the store has fsynced it, even under `appendfsync
everysec`, so neither kill -9 of the store nor a power cut loses it; a store without one is
said so and submits go on. Real valkey-server processes of the test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scheduler.model import JobState
from scheduler.store import Store
from tests.builders import job_of, submit_one
from tests.valkey_proc import Valkey

pytestmark = pytest.mark.store


@pytest.fixture
def durable_valkey() -> Iterator[Valkey]:
    server = Valkey(appendonly=True).start()
    yield server
    server.stop()


async def test_an_acknowledged_submit_is_fsynced_and_survives_kill_9(
        durable_valkey: Valkey) -> None:
    store = Store.from_url(durable_valkey.url)
    try:
        ids = [await submit_one(store) for _ in range(5)]
        assert await store.durable()  # WAITAOF: fsynced on the store's disk
        durable_valkey.stop()  # kill -9, no shutdown save
        durable_valkey.start()  # the same directory: it reloads its append-only file
        for job_id in ids:
            assert (await job_of(store, job_id)).state == JobState.PENDING
    finally:
        await store.close()


async def test_a_store_without_an_append_only_file_is_not_waited_for(store: Store) -> None:
    job_id = await submit_one(store)  # (the session's store has appendonly no)
    assert await store.durable() is False
    assert (await job_of(store, job_id)).state == JobState.PENDING
