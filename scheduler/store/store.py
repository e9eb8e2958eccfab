"""The only module that talks to Redis/Valkey: `Store`, the facade of the store's roles.

Every state change is one Lua script (in `scheduler/store/lua/`) that checks before it writes; reads
are plain pipelined commands. Leader-only scripts carry the fencing epoch and refuse to write
under a stale one.

The store is split by role, one class each (as rq's registries are): jobs (`JobStore`, with
arrays and retention), nodes (`NodeStore`), node maintenance (`NodeMaintStore`: drains),
accounts (`AccountStore`, with tokens) and
leadership (`LeaderStore`), all on one `StoreCore` (client, keys, scripts). `Store` is all of
them, with the reads that span roles, so callers keep one object and today's method names.
"""

from __future__ import annotations

import secrets

import redis.exceptions as redis_errors

from scheduler.accounts.tree import Accounts
from scheduler.model import Job, Node
from scheduler.store.accountstore import AccountStore
from scheduler.store.core import ID_BLOCK, StoreCore, load_script_text
from scheduler.store.jobstore import (
    LIST_FIELDS,
    RAY_PORTS,
    SUBMIT_TOKEN_TTL_S,
    WAIT_BUCKETS,
    JobStore,
)
from scheduler.store.leadership import LeaderStore
from scheduler.store.nodemaint import NodeMaintStore
from scheduler.store.nodestore import NodeStore
from scheduler.store.records import id_key, nodes_from

__all__ = [
    "ID_BLOCK", "LIST_FIELDS", "RAY_PORTS", "ROLES", "SUBMIT_TOKEN_TTL_S", "WAIT_BUCKETS",
    "Store", "StoreCore", "new_token",
]

_load_script_text = load_script_text  # (its name before the split)


class Store(JobStore, NodeStore, NodeMaintStore, AccountStore, LeaderStore):
    """Async access to labq's state. One instance per process; cheap to share."""

    async def cluster_reads(self) -> tuple[list[Node], Accounts, list[Job], dict[str, str]]:
        """Nodes, accounts, active jobs and the usage hash, in two round trips (names and
        tables first, then each node and job): what one scheduling cycle reads."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.smembers(self.keys.nodes)
            pipe.smembers(self.keys.active)
            pipe.hgetall(self.keys.accounts)
            pipe.hgetall(self.keys.users)
            pipe.get(self.keys.accounts_version)
            pipe.hgetall(self.keys.budgets)
            pipe.hgetall(self.keys.usage)
            pipe.hgetall(self.keys.drains)
            (names, active, accounts, users, version, budgets, usage,
             drains) = await pipe.execute()
        names, active = sorted(names), sorted(active, key=id_key)
        async with self.r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.node(name))
                pipe.hgetall(self.keys.node_alloc(name))
            for job_id in active:
                pipe.hgetall(self.keys.job(job_id))
            rows = await pipe.execute()
        split = 2 * len(names)
        jobs = [Job.from_fields(raw) for raw in rows[split:] if raw]
        accounts_now = Accounts.from_raw(accounts, users, int(version or 0), budgets)
        return nodes_from(rows[:split], drains, names), accounts_now, jobs, dict(usage)

    # ---------------------------------------------------------------- the server

    async def memory(self) -> tuple[int, int]:
        """(used_memory, maxmemory) in bytes, from INFO memory (0 where not reported, or
        where this store user may not run INFO)."""
        try:
            info = await self.r.info("memory")
        except redis_errors.NoPermissionError:
            return 0, 0
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))

    async def stats(self) -> dict[str, str]:
        """The persisted metric counters (keys.py documents the fields)."""
        return dict(await self.r.hgetall(self.keys.stats))


ROLES: tuple[type[StoreCore], ...] = (JobStore, NodeStore, NodeMaintStore, AccountStore,
                                       LeaderStore)


def new_token() -> str:
    return secrets.token_hex(12)
