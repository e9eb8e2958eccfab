"""The store client's timeouts and retry policy (issue 21, item 6), against a real Valkey of the
test's own: a frozen store (SIGSTOP) makes a call fail within the timeout instead of hanging; a
store that restarts is reconnected without an error; a blocking wait (BLPOP) is not cut short
by the socket timeout; and the client states its own policy rather than inherit whatever the
installed redis-py defaults to (5.x: no socket timeout at all, so a frozen store hangs every
daemon loop forever).

RECOMMENDED is the policy `StoreCore.from_url` (scheduler/store/core.py) states
(CLIENT_OPTIONS); the tests check that the client really has it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from agents.backends.simulated import SimulatedBackend
from scheduler.model import NodeReport
from scheduler.store import Store
from scheduler.store.core import CLIENT_OPTIONS, CONNECT_TIMEOUT_S, RETRIES, SOCKET_TIMEOUT_S
from tests.valkey_proc import Valkey

pytestmark = pytest.mark.store

RECOMMENDED = CLIENT_OPTIONS  # the policy the store client states (scheduler.store.core)
# The longest a call may take against a frozen store: every try times out, with the backoff
# between them, and some slack for a loaded machine.
WORST_S = (RETRIES + 1) * SOCKET_TIMEOUT_S + RETRIES * 1.0 + 5.0
HANG_S = 60.0  # a call still waiting after this is hanging


@pytest.fixture
def valkey() -> Iterator[Valkey]:
    server = Valkey().start()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def store(valkey: Valkey) -> AsyncIterator[Store]:
    """The store as the daemons make it (`StoreCore.from_url`)."""
    made = Store.from_url(valkey.url)
    yield made
    await made.close()


async def fails_in(call: Any) -> tuple[float, BaseException | None]:
    """(seconds, the exception) of awaiting `call`, given at most HANG_S."""
    began = time.monotonic()
    try:
        await asyncio.wait_for(call, HANG_S)
    except BaseException as exc:  # noqa: BLE001 - the test reads what came
        return time.monotonic() - began, exc
    return time.monotonic() - began, None


async def test_a_frozen_store_is_an_error_within_the_timeout_not_a_hang(
        store: Store, valkey: Valkey) -> None:
    await store.r.set("k", "v")
    valkey.freeze()
    try:
        spent, error = await fails_in(store.r.get("k"))
    finally:
        valkey.thaw()
    assert isinstance(error, redis_errors.TimeoutError | redis_errors.ConnectionError), \
        f"{error!r} after {spent:.0f} s (a hang ends in a plain TimeoutError after {HANG_S:.0f} s)"
    assert spent <= WORST_S
    assert await store.r.get("k") == "v"  # and once thawed, it answers again


async def test_a_script_against_a_frozen_store_is_an_error_too(store: Store,
                                                               valkey: Valkey) -> None:
    beat = NodeReport("n0", SimulatedBackend("n0", 2, "SIM").read(), simulated=True)
    await store.heartbeat(beat, time.time())  # the script is loaded
    valkey.freeze()
    try:
        spent, error = await fails_in(store.heartbeat(beat, time.time()))
    finally:
        valkey.thaw()
    assert isinstance(error, redis_errors.TimeoutError | redis_errors.ConnectionError), error
    assert spent <= WORST_S


async def test_a_restarted_store_is_reconnected_without_an_error(store: Store,
                                                                 valkey: Valkey) -> None:
    """Without a retry policy the first call after a restart failed ("Connection closed by
    connection is dead and nothing tries again on a new one."""
    assert await store.ping()
    valkey.stop()
    valkey.start()  # the same port; the pooled connection is dead
    assert await store.ping()


async def test_a_blocking_wait_is_not_cut_short_by_the_socket_timeout(store: Store) -> None:
    began = time.monotonic()
    assert await store.wait_wake("labq:test-wake", 1.0) is False
    assert 0.9 <= time.monotonic() - began < SOCKET_TIMEOUT_S


@pytest.mark.parametrize("scheme", ["tcp", "unix"])
async def test_the_recommended_policy_works_for_both_kinds_of_url(valkey: Valkey,
                                                                   scheme: str) -> None:
    """What StoreCore.from_url would pass: accepted for redis:// and unix:// alike, a frozen
    store an error within WORST_S, a blocking wait of 1 s left alone."""
    url = valkey.url if scheme == "tcp" else valkey.unix_url
    client = aioredis.Redis.from_url(url, decode_responses=True, **RECOMMENDED)
    try:
        await client.set("k", "v")
        assert await client.blpop(["labq:test-wake"], timeout=1) is None
        valkey.freeze()
        try:
            spent, error = await fails_in(client.get("k"))
        finally:
            valkey.thaw()
        assert isinstance(error, redis_errors.TimeoutError | redis_errors.ConnectionError), error
        assert (RETRIES + 1) * SOCKET_TIMEOUT_S - 1 <= spent <= WORST_S  # every try was made
        assert await client.get("k") == "v"
    finally:
        await client.aclose()


async def test_the_client_states_its_own_timeouts_and_retry_policy(store: Store) -> None:
    """Not the installed redis-py's defaults (they changed: 5.x has no socket timeout)."""
    options = store.r.connection_pool.connection_kwargs
    assert options.get("socket_timeout") == SOCKET_TIMEOUT_S
    assert options.get("socket_connect_timeout") == CONNECT_TIMEOUT_S
    assert (options.get("health_check_interval") or 0) > 0
    retry = options.get("retry")
    assert retry is not None and retry.get_retries() == RETRIES
    errors = set(options.get("retry_on_error") or ())
    assert {redis_errors.ConnectionError, redis_errors.TimeoutError} <= errors


async def test_a_frozen_store_is_tried_again_before_it_is_an_error(store: Store,
                                                                   valkey: Valkey) -> None:
    """A store that stops answering for a moment (a fork for a rewrite, a failover) is tried
    RETRIES more times with backoff before the daemon sees an error."""
    await store.r.set("k", "v")
    valkey.freeze()
    try:
        spent, error = await fails_in(store.r.get("k"))
    finally:
        valkey.thaw()
    assert isinstance(error, redis_errors.TimeoutError | redis_errors.ConnectionError), error
    assert spent >= (RETRIES + 1) * SOCKET_TIMEOUT_S - 1
