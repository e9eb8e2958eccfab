"""What a daemon checks of its store before it uses it: the labq schema version the store
holds, the server's version (Redis or Valkey 7 or newer) and how far apart this host's clock
and the store's are.

`check_store` is called once, right after the store answers a ping. Every refusal is a
`StoreError` of one line saying what to do.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import redis.exceptions as redis_errors

from scheduler.config import Settings
from scheduler.store.outcome import StoreError
from scheduler.store.store import Store

# The layout of labq's keys (store.keys) this code reads and writes. A change that an older
# labq would misread bumps it; data written before the key existed is version 1.
SCHEMA_VERSION = 1
MIN_SERVER_MAJOR = 7
SKEW_WARN_S = 2.0
SKEW_REFUSE_S = 30.0

log = logging.getLogger(__name__)


def shown_url(url: str | None) -> str:
    """The store's URL without any user or password in it (and without its query)."""
    if not url:
        return "(no URL)"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def schema_problem(stored: str | None, url: str) -> str | None:
    """Why this labq may not use a store holding schema `stored` (None: it may)."""
    if stored is None:
        return None
    text = stored.strip()
    if not text.isdigit() or len(text) > 9:
        return (f"the store at {url} holds {stored[:40]!r} as its labq schema, not a version "
                f"number: it is not labq's, or damaged; point redis_url or redis_prefix "
                "elsewhere")
    version = int(text)
    if version > SCHEMA_VERSION:
        return (f"the store at {url} holds labq schema {version}; this labq understands up to "
                f"{SCHEMA_VERSION}: upgrade labq")
    if version < SCHEMA_VERSION:
        return (f"the store at {url} holds labq schema {version}, older than this labq's "
                f"{SCHEMA_VERSION}: its data needs migrating; run the labq that wrote it, or "
                "migrate it first")
    return None


def server_problem(server: str, version: str, url: str) -> str | None:
    """Why a server of this name and version will not do (None: it will)."""
    head = version.split(".")[0]
    if not head.isdigit():
        return None  # a version this check cannot read: the scripts will say if they fail
    if int(head) < MIN_SERVER_MAJOR:
        name = "Valkey" if server.lower() == "valkey" else "Redis"
        return (f"the store at {url} is {name} {version}; labq needs Redis or Valkey "
                f"{MIN_SERVER_MAJOR} or newer: upgrade the store's server")
    return None


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def skew_problem(local: float, server: float, url: str, uncertainty: float = 0.0,
                 refuse_s: float = SKEW_REFUSE_S) -> str | None:
    """Why clocks this far apart will not do (None: they will). `uncertainty` (half the
    round trip) is given to the clocks' benefit."""
    apart = abs(server - local) - uncertainty
    if apart <= refuse_s:
        return None
    return (f"this host's clock reads {_utc(local)} and the store's ({url}) {_utc(server)}: "
            f"{abs(server - local):.0f} s apart, more than {refuse_s:.0f} s; keep both in time "
            "with NTP (chrony or systemd-timesyncd) and start again")


async def server_version(store: Store) -> tuple[str, str] | None:
    """(server name, version) from HELLO, which every user may run; else INFO server; None
    when neither answers."""
    try:
        hello: Any = await store.r.execute_command("HELLO")
        if isinstance(hello, list):  # RESP2: a flat list of names and values
            hello = dict(zip(hello[::2], hello[1::2], strict=False))
        if isinstance(hello, dict) and hello.get("version"):
            return str(hello.get("server") or "redis"), str(hello["version"])
    except redis_errors.ResponseError:
        pass
    try:
        info = await store.r.info("server")
    except redis_errors.ResponseError:  # NOPERM among them
        return None
    if info.get("valkey_version"):
        return "valkey", str(info["valkey_version"])
    if info.get("redis_version"):
        return "redis", str(info["redis_version"])
    return None


async def clock_skew(store: Store) -> tuple[float, float, float] | None:
    """(this host's time, the store's, half the round trip), or None where TIME is not
    permitted to this user."""
    before = time.time()
    try:
        seconds, micros = await store.r.time()
    except redis_errors.ResponseError:
        return None
    after = time.time()
    return (before + after) / 2, int(seconds) + int(micros) / 1e6, (after - before) / 2


async def check_store(store: Store, settings: Settings, node: str | None = None) -> None:
    """Refuse (StoreError, one line) a store this labq cannot use: a newer or older labq
    schema, a server older than 7, a clock more than 30 s from this host's. On first start
    the schema version is written. An agent (`node`) whose ACL user may not read the schema
    key or the store's clock skips those checks; the coordinator makes them."""
    try:
        await _check(store, settings, node)
    except redis_errors.ConnectionError as exc:
        raise StoreError(f"cannot reach the store: {exc}") from None


async def _check(store: Store, settings: Settings, node: str | None) -> None:
    url = shown_url(settings.redis_url)
    found = await server_version(store)
    if found is not None:
        problem = server_problem(*found, url)
        if problem:
            raise StoreError(problem)
    key = store.keys.schema
    try:
        await store.r.set(key, SCHEMA_VERSION, nx=True)  # the first start writes it
        stored = await store.r.get(key)
    except redis_errors.NoPermissionError:
        if node is None:
            raise StoreError(f"the store at {url} refused this user the labq schema key {key}: "
                             "grant the coordinator's ACL user ~PREFIX* (see README)") from None
        stored = None  # an agent's user: limited to its node's keys
    problem = schema_problem(stored, url)
    if problem:
        raise StoreError(problem)
    clocks = await clock_skew(store)
    if clocks is None:
        return
    local, server, uncertainty = clocks
    problem = skew_problem(local, server, url, uncertainty)
    if problem:
        raise StoreError(problem)
    if abs(server - local) - uncertainty > SKEW_WARN_S:
        log.warning("this host's clock is %.1f s from the store's (%s): keep both in time with "
                    "NTP; heartbeats and job times compare the two", server - local, url)
