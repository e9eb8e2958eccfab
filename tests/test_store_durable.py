"""An acknowledged submission is on the store's disk (issue 21, item 6): with an append-only
file, the submit waits (WAITAOF) until the store has fsynced it, even under `appendfsync
everysec`, so neither kill -9 of the store nor a power cut loses it; a store without one is
said so and submits go on. Real valkey-server processes of the test's own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from scheduler.model import JobState
from scheduler.store import Store
from tests.builders import job_of, submit_one
from tests.valkey_proc import Valkey

pytestmark = pytest.mark.store


class StoreMonitor:
    """The store's MONITOR in a thread: each command's (client address, name), in the order
    the store ran them, until `stop`."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.seen: list[tuple[str, str]] = []
        self._watcher = redis.Redis.from_url(url, decode_responses=True)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> StoreMonitor:
        self._thread.start()
        self._ready.wait(5)
        return self

    def _watch(self) -> None:
        with self._watcher.monitor() as monitor:
            self._ready.set()
            for record in monitor.listen():
                command = str(record.get("command", ""))
                self.seen.append((f"{record['client_address']}:{record['client_port']}",
                                  command.split(" ")[0].upper()))
                if "labq-test-end" in command:
                    return

    def stop(self) -> None:
        import redis

        redis.Redis.from_url(self.url).echo("labq-test-end")  # after all the others
        self._thread.join(10)


@pytest.fixture
def durable_valkey() -> Iterator[Valkey]:
    server = Valkey(appendonly=True, fsync="everysec").start()  # labq's own store: always
    yield server
    server.stop()


async def test_an_acknowledged_submit_is_fsynced_and_survives_kill_9(
        durable_valkey: Valkey) -> None:
    store = Store.from_url(durable_valkey.url)
    try:
        # at once, on as many pooled connections: each submit waits (WAITAOF) on the
        # connection that wrote it, so each is fsynced when acknowledged
        ids = await asyncio.gather(*(submit_one(store) for _ in range(200)))
        assert store.on_disk is True
        durable_valkey.stop()  # kill -9 at once, no shutdown save
        durable_valkey.start()  # the same directory: it reloads its append-only file
        for job_id in ids:
            assert (await job_of(store, job_id)).state == JobState.PENDING
        # the restarted store has no scripts: a submit loads its script and goes on
        assert (await job_of(store, await submit_one(store))).state == JobState.PENDING
    finally:
        await store.close()


async def test_a_store_without_an_append_only_file_is_not_waited_for(store: Store) -> None:
    assert store.on_disk is None  # not asked yet
    job_id = await submit_one(store)  # (the session's store has appendonly no)
    assert store.on_disk is False
    assert (await job_of(store, job_id)).state == JobState.PENDING


async def test_each_submit_waits_for_the_disk_on_the_connection_that_wrote_it(
        durable_valkey: Valkey) -> None:
    """WAITAOF counts the writes of the connection that asks. With concurrent submits from one
    pool, a WAITAOF sent on its own could go out on another connection and answer at once,
    before the submit's own write is fsynced (kill -9 keeps such writes in the page cache; a
    power cut does not). The store's MONITOR shows which connection sent what: every submit
    script is followed, on its own connection, by a WAITAOF before that connection's client
    hears back; and concurrent submits share one (group commit: fewer waits than submits)."""
    store = Store.from_url(durable_valkey.url)
    await submit_one(store)  # the scripts loaded: each submit below is one EVALSHA
    monitor = StoreMonitor(durable_valkey.url).start()
    try:
        ids = await asyncio.gather(*(submit_one(store) for _ in range(40)))
        assert len(set(ids)) == 40
    finally:
        await store.close()
    monitor.stop()
    seen = [(client, name) for client, name in monitor.seen if name in ("EVALSHA", "WAITAOF")]
    pending: dict[str, int] = {}  # client -> submit scripts not yet followed by a WAITAOF
    waits = 0
    for client, name in seen:
        if name == "EVALSHA":
            pending[client] = pending.get(client, 0) + 1
        else:
            assert pending.get(client, 0) >= 1, (client, seen)  # it waits for its own writes
            pending[client] = 0
            waits += 1
    assert sum(pending.values()) == 0  # no submit was left without its wait
    assert sum(name == "EVALSHA" for _, name in seen) == 40
    assert 1 <= waits < 40  # the concurrent submits shared their waits


async def test_a_group_whose_connection_was_killed_is_sent_again_on_a_new_one(
        durable_valkey: Valkey) -> None:
    """The store drops every client connection (a restarted proxy, a failover, `CLIENT KILL`)
    while submits are about to go: each is sent again on a fresh connection, acknowledged once
    on disk, and stored once."""
    store = Store.from_url(durable_valkey.url)
    killer = Store.from_url(durable_valkey.url)
    try:
        await submit_one(store)  # the pool holds a connection now
        before = int(await killer.r.execute_command("DBSIZE"))
        killed = await killer.r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME",
                                                "yes")
        assert int(killed) >= 1
        ids = await asyncio.gather(*(submit_one(store) for _ in range(20)))
        assert len(set(ids)) == 20
        for job_id in ids:
            assert (await job_of(store, job_id)).state == JobState.PENDING
        assert store.on_disk is True
        # 20 job hashes and 20 submit tokens more, nothing twice
        assert int(await killer.r.execute_command("DBSIZE")) == before + 40
    finally:
        await store.close()
        await killer.close()

