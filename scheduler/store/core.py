"""What every role of the store shares: the client, the key schema, the Lua scripts and the
job-id counter. Each role (`JobStore`, `NodeStore`, `AccountStore`, `LeaderStore`) is a
`StoreCore` that names the scripts it runs; `Store` is all of them behind one facade."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from scheduler.config import Settings
from scheduler.model import lua_lifecycle, lua_table
from scheduler.store.groupcommit import GroupCommit, Write
from scheduler.store.keys import Keys
from scheduler.store.outcome import Outcome, StoreError, read_secret
from scheduler.store.records import HISTORY_FIELDS

log = logging.getLogger(__name__)
ID_BLOCK = 256
# The store client's timeouts and retries (redis-py's own): a store that stops answering is an
# error after 3 tries of SOCKET_TIMEOUT_S (with backoff between), never a hang; a connection
# dropped by a restart or a failover is made again at once. SOCKET_TIMEOUT_S is above the
# longest blocking wait (1 s) and the slowest script seen (~2.5 s at 100,000 jobs). A script
# tried again after a lost reply is safe: each one checks the state before it writes.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
RETRIES = 2
POOL_CONNECTIONS = 128  # connections one process holds to the store at most
CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": SOCKET_TIMEOUT_S,
    "socket_connect_timeout": CONNECT_TIMEOUT_S,
    "health_check_interval": 30,
    "retry": Retry(ExponentialBackoff(cap=1.0, base=0.1), RETRIES),
    "retry_on_error": [redis_errors.ConnectionError, redis_errors.TimeoutError],
}


def load_script_text(name: str) -> str:
    """A script as the store runs it: the declarations generated from scheduler.model and the
    outcomes from `Outcome` (`OUTCOME.<name>`: a script returns only what Python declares),
    the fields a history record keeps (`HISTORY_FIELDS`), the shared helpers (`_common.lua`),
    then the script."""
    folder = resources.files("scheduler.store") / "lua"
    common = (folder / "_common.lua").read_text()
    outcomes = lua_table("OUTCOME", [o.value for o in Outcome], "scheduler.store.outcome")
    fields = "local HISTORY_FIELDS = {" + ", ".join(f"'{f}'" for f in HISTORY_FIELDS) + "}"
    return (lua_lifecycle() + outcomes + "\n" + fields + "\n" + common + "\n"
            + (folder / f"{name}.lua").read_text())


class StoreCore:
    """Async access to labq's state: the connection and the scripts of the roles it is made
    of (each role class lists its own in `SCRIPTS`). Cheap to share; one per process."""

    SCRIPTS: tuple[str, ...] = ()

    def __init__(self, client: aioredis.Redis, keys: Keys | None = None) -> None:
        self.r: Any = client  # decode_responses=True: replies are str, not bytes
        self.keys = keys or Keys()
        names = sorted({name for cls in type(self).__mro__
                        for name in vars(cls).get("SCRIPTS", ())})
        self._scripts = {name: client.register_script(load_script_text(name))
                         for name in names}
        self._id_next = 0
        self._id_last = -1
        # A store with a replica (Sentinels): what must survive a failover waits for it.
        self.replicated = False
        self._group: GroupCommit | None = None  # durable writes (made on first use)
        self._opened: tuple[Any, ...] | None = None  # from_url's arguments, for `reopen`

    @classmethod
    def from_url(cls, url: str, prefix: str = "labq:", username: str = "",
                 password: str = "", sentinels: Sequence[str] = (),
                 master: str = "labq") -> Self:
        """`redis://`, `rediss://` (TLS; e.g. `?ssl_ca_certs=/etc/labq/ca.pem`) or
        `unix:///path/to/valkey.sock`, as the ACL user `username` if given. With `sentinels`
        (host:port each), the primary the Sentinels name as `master`, followed through a
        failover (the URL then gives only the database, e.g. redis:///0). Every call has the
        timeouts and retry policy of CLIENT_OPTIONS."""
        auth: dict[str, Any] = {"username": username or None, "password": password or None}
        if sentinels:
            from redis.asyncio.sentinel import Sentinel

            db = int(urlsplit(url).path.strip("/") or 0) if url else 0
            watchers = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in sentinels)]
            sentinel = Sentinel(watchers, socket_timeout=CONNECT_TIMEOUT_S)
            client = sentinel.master_for(master, decode_responses=True, db=db, **auth,
                                         **CLIENT_OPTIONS)
        else:
            # More callers at once than POOL_CONNECTIONS (a burst of submits through an API
            # that takes thousands of connections) wait their turn instead of failing.
            pool = aioredis.BlockingConnectionPool.from_url(
                url, decode_responses=True, max_connections=POOL_CONNECTIONS,
                timeout=SOCKET_TIMEOUT_S, **auth, **CLIENT_OPTIONS)
            client = aioredis.Redis.from_pool(pool)
        made = cls(client, Keys(prefix))
        made.replicated = bool(sentinels)
        made._opened = (url, prefix, username, password, tuple(sentinels), master)
        return made

    def reopen(self) -> Self:
        """Another client of the same store, as the same user, with connections of its own:
        for another thread's event loop (a client belongs to the loop that made it)."""
        if self._opened is None:
            raise StoreError("this store client was not made by from_url: it cannot be "
                             "opened again")
        return type(self).from_url(*self._opened)

    @classmethod
    def connect(cls, settings: Settings, node: str | None = None) -> Self:
        """The store as the coordinator's ACL user, or as `node`'s agent's (settings say which
        user and which password file; no file: no password)."""
        if not settings.redis_url and not settings.redis_sentinels:
            raise StoreError("no Redis: set LABQ_REDIS_URL (e.g. redis://host:6379/0 or "
                             "unix:///path/valkey.sock) or use `labq up`")
        username, password_file = settings.redis_username, settings.redis_password_file
        if node is not None and settings.agent_redis_password_file:
            password_file = settings.agent_redis_password_file
            from scheduler.store.acl import agent_user  # (acl also runs as a script)

            username = settings.agent_redis_username or agent_user(node)
        password = read_secret(Path(password_file)) if password_file else ""
        return cls.from_url(settings.redis_url or "", settings.redis_prefix, username, password,
                            settings.redis_sentinels, settings.redis_sentinel_master)

    async def close(self) -> None:
        await self.r.aclose()

    async def ping(self) -> bool:
        """True if the store answers; a refused login or an unreachable store is a StoreError."""
        try:
            return bool(await self.r.ping())
        except (redis_errors.AuthenticationError, redis_errors.NoPermissionError) as exc:
            raise StoreError(f"the store refused this login ({exc}): check redis_username and "
                             "redis_password_file") from None
        except redis_errors.ConnectionError as exc:
            raise StoreError(f"cannot reach the store: {exc}") from None

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys), args=list(args))

    async def _run_durably(self, name: str, keys: Sequence[str], args: Sequence[Any],
                           disk: bool = True) -> Any:
        """Run a script, acknowledged only once its writes are on the store's disk (WAITAOF:
        its append-only file fsynced) and, on a replicated store, on a replica (WAIT), so
        what the caller acknowledges survives kill -9 of the store, a power cut, whatever
        `appendfsync` says, and the primary's loss; concurrent callers share the waits
        (`GroupCommit`). A store with no append-only file (or older than Valkey 8 / Redis
        7.2) has nothing to wait for: said in the log once. Asynchronous replication can lose
        what was not waited for: see README, "Store failover". `disk=False`: the replica only
        (a lease renewal, each second, need not wait for the disk)."""
        script = self._scripts[name]
        if self._group is None or self._group.replicated != self.replicated:
            self._group = GroupCommit(self.r, self.replicated)
        return await self._group.run(Write(script.sha, script.script, keys, args, disk))

    @property
    def on_disk(self) -> bool | None:
        """Whether the store says an acknowledged submit is on its disk (WAITAOF answered);
        False: it keeps no append-only file; None: no submit asked yet."""
        return None if self._group is None else self._group.aof

    async def _next_ids(self, count: int) -> list[str]:
        """Job ids, reserved from Redis in blocks so a submit costs one round trip."""
        ids: list[str] = []
        while len(ids) < count:
            if self._id_next > self._id_last:
                block = max(ID_BLOCK, count - len(ids))
                last = int(await self.r.incrby(self.keys.ids, block))
                self._id_next, self._id_last = last - block + 1, last
            ids.append(str(self._id_next))
            self._id_next += 1
        return ids
