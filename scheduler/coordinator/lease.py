"""The leader lease, renewed on a thread of its own.

The coordinator's event loop does CPU work of its own (reading and parsing a long queue,
writing its reasons, answering a burst of API requests); on a busy machine a cycle has taken
10 s, twice the lease. A lease renewed on that loop would wait behind it, and another
coordinator would take over from a leader that is alive and well. So the lease has a thread,
an event loop and a connection to the store of its own (`LeaseKeeper`): nothing on the
coordinator's loop can delay a renewal, only the whole process stopping can (kill -9,
SIGSTOP, a frozen host), and then its writes are fenced by the epoch as before. Python's
interpreter lock is handed between threads every few milliseconds, so a renewal waits at most
that long for a busy loop.

Each answer (the epoch this coordinator leads under, 0 when another leads or the store cannot
be reached) goes to the coordinator's loop, which alone changes what the coordinator believes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from scheduler.store import Store
from scheduler.trouble import Trouble

log = logging.getLogger(__name__)

LEASE_TTL_MS = 5000
RENEW_EVERY_S = LEASE_TTL_MS / 5000  # five tries within a lease
LEASE_LATE_S = LEASE_TTL_MS / 2000  # a renewal later than this after the last is logged


class LeaseKeeper:
    """Takes and renews the lease as `holder` every RENEW_EVERY_S on a thread of its own (with
    its own connection to `store`'s server), and hands each answer to `answered` on the event
    loop that runs `run`."""

    def __init__(self, store: Store, holder: str, answered: Callable[[int], None],
                 ttl_ms: int = LEASE_TTL_MS) -> None:
        self.store = store
        self.holder = holder
        self.answered = answered
        self.ttl_ms = ttl_ms

    async def run(self) -> None:
        """Until cancelled (or the thread fails, which raises here): the lease is renewed."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        ended: asyncio.Future[None] = loop.create_future()

        def thread_main() -> None:
            failure: BaseException | None = None
            try:
                asyncio.run(self._renew(loop, stop))
            except BaseException as exc:  # noqa: BLE001 - handed to the coordinator's loop
                failure = exc
            if not stop.is_set():
                try:
                    loop.call_soon_threadsafe(_settle, ended, failure)
                except RuntimeError:
                    pass  # the coordinator's loop is closed: nobody waits

        thread = threading.Thread(target=thread_main, name="labq-lease", daemon=True)
        thread.start()
        try:
            await ended
        finally:
            stop.set()  # the thread ends within RENEW_EVERY_S; it holds no lock of ours

    async def _renew(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        store = self.store.reopen()  # a client belongs to the event loop that made it
        trouble = Trouble("leader lease (not leading until it works again)")
        renewed = 0.0  # when the lease was last renewed (monotonic; 0: not leading)
        try:
            while not stop.is_set():
                epoch = 0
                try:
                    epoch = await store.lease(self.holder, self.ttl_ms)
                    trouble.ok()
                except Exception:
                    trouble.failed()
                now = time.monotonic()
                if epoch and renewed and now - renewed > LEASE_LATE_S:
                    log.warning("leader lease renewed %.1f s after the last; it lasts %.1f s",
                                now - renewed, self.ttl_ms / 1000)
                renewed = now if epoch else 0.0
                try:
                    loop.call_soon_threadsafe(self.answered, epoch)
                except RuntimeError:
                    return  # the coordinator's loop is closed
                await asyncio.sleep(RENEW_EVERY_S)
        finally:
            await store.close()


def _settle(future: asyncio.Future[None], failure: BaseException | None) -> None:
    if future.done():
        return
    if failure is None:
        future.set_exception(RuntimeError("the lease thread ended"))
    else:
        future.set_exception(failure)
