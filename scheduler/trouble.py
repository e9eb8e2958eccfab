"""A daemon loop's outage in two lines, however long it lasts (the agent's heartbeat and job
loops, the coordinator's lease, wake and cycle loops): one when it starts, what failed and why,
with no traceback for a store or network outage; one when it ends, how long and how many tries.
"""

from __future__ import annotations

import logging
import sys
import time

import redis.exceptions as redis_errors

log = logging.getLogger(__name__)

# What an outage of the store or the network raises (a refused login mid-run, a store still
# loading its data, a replica that is not yet the primary included): said in one line, no
# traceback. Anything else is a fault in labq and is logged with its traceback, once.
UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError,
               redis_errors.ReadOnlyError, redis_errors.MasterDownError, OSError, TimeoutError)


class Trouble:
    """One loop's outage in two lines, however long it lasts: one when it starts (what failed
    and why), one when it ends (how long, how many tries). Between them a line only when it
    fails in a way not yet seen in this outage (the store back but refusing, say). A store or
    network outage (`UNREACHABLE`) has no traceback; any other failure has one, the first time
    it is seen in an outage."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.count = 0
        self.kinds: set[str] = set()

    def failed(self, exc: BaseException | None = None) -> None:
        """Called in the `except` block of a failed try (or with the exception)."""
        exc = exc if exc is not None else sys.exc_info()[1]
        now = time.monotonic()
        self.count += 1
        kind = type(exc).__name__
        if kind in self.kinds:
            return
        self.kinds.add(kind)
        why = " ".join(f"{kind}: {exc}".split())  # one line, whatever the message holds
        trace = None if isinstance(exc, UNREACHABLE) else exc
        if self.since is None:
            self.since = now
            log.warning("%s failing: %s; retrying (one line when it works again)", self.what,
                        why, exc_info=trace)
        else:
            log.warning("%s still failing after %.0f s, now with %s", self.what,
                        now - self.since, why, exc_info=trace)

    def ok(self) -> None:
        if self.since is not None:
            log.warning("%s works again after %.0f s (%d failed tries)", self.what,
                        time.monotonic() - self.since, self.count)
            self.since, self.count, self.kinds = None, 0, set()
