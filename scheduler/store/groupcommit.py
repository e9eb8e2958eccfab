"""Durable writes in groups: a write is acknowledged only once it is on the store's disk (and
on a replica, when there is one), and concurrent writes share the wait.

A durable write is its script followed, on the same connection, by `WAITAOF` (its append-only
file fsynced) and, on a replicated store, `WAIT` (a replica has it): both count the writes of
the connection that asks, so a wait sent on another connection could answer before the write
is safe. Sending each write with its own waits costs a pipeline and a wait per submission;
under a burst that is most of the API's time in the store client. So writes that arrive while
one group is in flight wait for it, then go together as the next group: one pipeline, their
scripts in arrival order, one `WAITAOF` and one `WAIT` after them all (a database's group
commit). Alone, a write goes at once, as before. Each script still runs on its own, atomically;
one that fails fails only its own caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions as redis_errors

log = logging.getLogger(__name__)

REPLICA_WAIT_MS = 1000  # how long a write that must survive a failover waits for a replica
GROUP_MAX = 256  # writes in one group at most (one pipeline; a burst makes several)


@dataclass(slots=True)
class Write:
    sha: str
    script: Any  # its text, to load it again into a store that lost it (restart, failover)
    keys: Sequence[str]
    args: Sequence[Any]
    disk: bool  # False: wait for a replica only (a lease renewal, each second or so)
    done: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop()
                                      .create_future())


class GroupCommit:
    """Sends durable writes on `client`, one group in flight at a time."""

    def __init__(self, client: Any, replicated: bool = False) -> None:
        self.r = client
        self.replicated = replicated
        self.aof: bool | None = None  # whether the store has an append-only file to wait for
        self._queue: list[Write] = []
        self._busy = False
        self._sender: asyncio.Task[None] | None = None  # (a task is kept only if referenced)

    async def run(self, write: Write) -> Any:
        """The script's reply, once the write is as safe as the store can make it."""
        self._queue.append(write)
        if not self._busy:  # a task of its own: a caller cancelled cancels no other's write
            self._busy = True
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())
        return await write.done

    async def _send_queued(self) -> None:
        while self._queue:  # what came while a group was in flight goes next
            group, self._queue = self._queue[:GROUP_MAX], self._queue[GROUP_MAX:]
            try:
                await self._send(group)
            except Exception as exc:  # the connection failed after its retries: all of them
                for write in group:
                    _settle(write.done, exc)
            except BaseException as exc:
                for write in group:
                    _settle(write.done, exc)
                self._busy = False
                raise
        self._busy = False

    async def _send(self, group: list[Write]) -> None:
        replies = await self._pipeline(group)
        missing = [w for w, reply in zip(group, replies, strict=False)
                   if isinstance(reply, redis_errors.NoScriptError)]
        if missing:  # a store restarted, or new: load the scripts, then those writes again
            for text in {w.script for w in missing}:
                await self.r.script_load(text)
            again = await self._pipeline(missing)
            replies = [again[missing.index(w)] if w in missing else reply
                       for w, reply in zip(group, replies, strict=False)]
        for write, reply in zip(group, replies, strict=False):
            _settle(write.done, reply)

    async def _pipeline(self, group: list[Write]) -> list[Any]:
        """The group's scripts and their waits in one round trip; each script's reply (an
        exception for one that failed).

        Sent on a connection of the client's pool with the client's own retry policy (a
        connection that fails is dropped and the group sent again, as redis-py's pipeline
        does), without the pipeline object: its bookkeeping cost about as much CPU as the
        round trip itself, for every group."""
        commands: list[tuple[Any, ...]] = [("EVALSHA", w.sha, len(w.keys), *w.keys, *w.args)
                                           for w in group]
        aof = self.aof is not False and any(w.disk for w in group)
        if aof:
            commands.append(("WAITAOF", 1, 0, REPLICA_WAIT_MS))
        if self.replicated:
            commands.append(("WAIT", 1, REPLICA_WAIT_MS))
        pool = self.r.connection_pool
        conn = await pool.get_connection()
        try:
            replies = await conn.retry.call_with_retry(
                lambda: _exchange(conn, commands), lambda _error: conn.disconnect())
        finally:
            await pool.release(conn)
        if aof:
            self._aof_answered(replies[len(group)])
        return list(replies[:len(group)])

    def _aof_answered(self, reply: Any) -> None:
        if not isinstance(reply, redis_errors.ResponseError):
            self.aof = True
            return
        self.aof = False  # appendonly off, or no WAITAOF: an acknowledgement is in memory
        log.warning("the store cannot say a write is on its disk (%s): an acknowledged "
                    "submission survives a restart of the store only as its snapshots allow; "
                    "set appendonly yes (deploy/valkey/labq.conf)", reply)


async def _exchange(conn: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send `commands` at once on `conn` and read every reply: an error reply is kept as its
    exception. A connection left with replies unread (cancelled, or failed midway) is dropped,
    never handed to the next caller."""
    await conn.send_packed_command(conn.pack_commands(commands))
    replies: list[Any] = []
    try:
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except redis_errors.ResponseError as exc:
                replies.append(exc)
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    return replies


def _settle(done: asyncio.Future[Any], reply: Any) -> None:
    """Answer a write's caller (unless it gave up waiting): its reply, or what failed."""
    if done.done():
        return
    if isinstance(reply, BaseException):
        done.set_exception(reply)
    else:
        done.set_result(reply)
