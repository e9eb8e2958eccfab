"""The store's schema version, server version and clock, checked before a daemon uses it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from scheduler.config import Settings
from scheduler.store import Store
from scheduler.store.acl import agent_rules, coordinator_rules
from scheduler.store.outcome import StoreError
from scheduler.store.schema import (
    SCHEMA_VERSION,
    check_store,
    schema_problem,
    server_problem,
    server_version,
    shown_url,
    skew_problem,
)


def _settings(url: str) -> Settings:
    return Settings(home=Path("/nonexistent"), redis_url=url)


async def test_first_start_writes_the_version_and_a_second_start_accepts_it(
        store: Store, valkey_url: str) -> None:
    assert await store.r.get(store.keys.schema) is None
    await check_store(store, _settings(valkey_url))
    assert await store.r.get(store.keys.schema) == str(SCHEMA_VERSION)
    await check_store(store, _settings(valkey_url))
    await check_store(store, _settings(valkey_url), node="n1")
    assert await store.r.get(store.keys.schema) == str(SCHEMA_VERSION)


@pytest.mark.parametrize(("stored", "words"), [
    (str(SCHEMA_VERSION + 1), f"holds labq schema {SCHEMA_VERSION + 1}; this labq understands "
                              f"up to {SCHEMA_VERSION}: upgrade labq"),
    ("0", "older than this labq's"),
    ("banana", "not a version number"),
])
async def test_a_store_of_another_schema_is_refused_in_one_line(
        store: Store, valkey_url: str, stored: str, words: str) -> None:
    await store.r.set(store.keys.schema, stored)
    for node in (None, "n1"):
        with pytest.raises(StoreError) as err:
            await check_store(store, _settings(valkey_url), node=node)
        message = str(err.value)
        assert words in message and "\n" not in message
        assert shown_url(valkey_url) in message
    assert await store.r.get(store.keys.schema) == stored  # nothing written


async def test_the_coordinators_and_an_agents_acl_users_pass(
        store: Store, valkey_url: str) -> None:
    """As scheduler.store.acl makes them: the coordinator's user writes the version and reads
    the clock; an agent's (its node's keys, few commands) may run HELLO only, so the server's
    version is still checked and the rest skipped."""
    admin = aioredis.Redis.from_url(valkey_url, decode_responses=True)
    tag = uuid.uuid4().hex[:8]
    users = {f"coord-{tag}": coordinator_rules(store.keys),
             f"agent-{tag}": agent_rules(store.keys, "n1")}
    logins = {}
    try:
        for user, rules in users.items():
            await admin.execute_command("ACL", "SETUSER", user, "on", f">pw-{user}", *rules)
            logins[user] = Store.from_url(valkey_url, store.keys.prefix, user, f"pw-{user}")
        coordinator, agent = logins.values()
        await check_store(agent, _settings(valkey_url), node="n1")  # first: nothing written
        assert await store.r.get(store.keys.schema) is None
        await check_store(coordinator, _settings(valkey_url))
        assert await store.r.get(store.keys.schema) == str(SCHEMA_VERSION)
        assert await server_version(agent) is not None  # HELLO needs no permission
        await check_store(agent, _settings(valkey_url), node="n1")
        with pytest.raises(StoreError, match="refused this user the labq schema key"):
            await check_store(agent, _settings(valkey_url))  # not an agent: refused
    finally:
        for login in logins.values():
            await login.close()
        for user in users:
            await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def test_the_real_server_is_new_enough(store: Store) -> None:
    found = await server_version(store)
    assert found is not None
    assert server_problem(*found, "redis://x") is None


def test_an_old_server_is_refused_by_name() -> None:
    assert server_problem("redis", "6.2.14", "redis://h:6379/0") == (
        "the store at redis://h:6379/0 is Redis 6.2.14; labq needs Redis or Valkey 7 or newer: "
        "upgrade the store's server")
    assert server_problem("valkey", "7.2.4", "u") is None
    assert server_problem("redis", "unknown", "u") is None


def test_clock_skew_names_both_clocks_and_refuses_above_30_s() -> None:
    now = time.time()
    assert skew_problem(now, now + 29, "redis://h:6379/0") is None
    assert skew_problem(now, now - 31, "redis://h:6379/0", uncertainty=2) is None
    message = skew_problem(1_800_000_000, 1_800_000_045, "redis://h:6379/0")
    assert message == ("this host's clock reads 2027-01-15 08:00:00 UTC and the store's "
                       "(redis://h:6379/0) 2027-01-15 08:00:45 UTC: 45 s apart, more than 30 s; "
                       "keep both in time with NTP (chrony or systemd-timesyncd) and start again")


def test_the_url_shown_has_no_user_or_password() -> None:
    assert shown_url("rediss://u:pw@head:6380/0?ssl_ca_certs=/x") == "rediss://head:6380/0"
    assert shown_url("unix:///run/valkey.sock") == "unix:///run/valkey.sock"


def test_schema_problem_accepts_this_version_and_none() -> None:
    assert schema_problem(None, "u") is None
    assert schema_problem(str(SCHEMA_VERSION), "u") is None


async def test_an_unreachable_store_is_one_line() -> None:
    gone = Store.from_url("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(StoreError, match="cannot reach the store"):
            await check_store(gone, _settings("redis://127.0.0.1:1/0"))
    finally:
        await gone.close()
