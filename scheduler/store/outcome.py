"""What the store says: script outcomes, refusals, and the password files it reads."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Outcome(StrEnum):
    """What a state-changing script says happened (each script's header lists its own)."""

    OK = "OK"
    STALE_EPOCH = "STALE_EPOCH"  # another coordinator leads now: nothing written
    STALE_VIEW = "STALE_VIEW"  # the job moved since the caller read it: read it again
    NOT_PENDING = "NOT_PENDING"
    NOT_STARTING = "NOT_STARTING"
    NOT_ACTIVE = "NOT_ACTIVE"
    NOT_WAITING = "NOT_WAITING"
    NODE_NOT_UP = "NODE_NOT_UP"
    WRONG_COUNT = "WRONG_COUNT"
    GPU_OUT_OF_RANGE = "GPU_OUT_OF_RANGE"
    GPU_BUSY = "GPU_BUSY"
    NOT_DISTINCT = "NOT_DISTINCT"  # a multi-node start names a node twice
    ALREADY = "ALREADY"
    ALREADY_DONE = "ALREADY_DONE"
    ALREADY_STOPPING = "ALREADY_STOPPING"
    ALREADY_DOWN = "ALREADY_DOWN"
    NO_SUCH_JOB = "NO_SUCH_JOB"
    NO_STOP = "NO_STOP"
    FORBIDDEN = "FORBIDDEN"
    CANCELLED = "CANCELLED"  # a cancel: the waiting job ended at once
    STOPPING = "STOPPING"  # a cancel: the running job will be stopped
    ENDED = "ENDED"  # a requeue of a job that had to end instead (cancelled, timed out)
    DOWN = "DOWN"
    ALIVE = "ALIVE"  # node_down: it reported since; node_remove: its agent still reports
    NO_SUCH_NODE = "NO_SUCH_NODE"
    NOT_DRAINED = "NOT_DRAINED"  # a resume of a node nobody drained
    HOLDS_JOBS = "HOLDS_JOBS"  # a removal of a node jobs still hold


class StoreError(RuntimeError):
    """The store refused an operation (stale leader, duplicate ids, ...)."""


class PendingCapError(Exception):
    """A submit refused for the owner's pending cap, in the same step that would have added
    the jobs: `has` waiting jobs already."""

    def __init__(self, has: int) -> None:
        super().__init__(f"{has} waiting jobs")
        self.has = has


class StoredCapError(Exception):
    """A submit refused for what its owner may keep in the store, in the same step that would
    have added the jobs: `what` is "jobs" (max_stored_jobs_per_user) or "bytes" (of commands,
    environments and scripts: max_stored_bytes_per_user), `has` what the owner keeps already."""

    def __init__(self, what: str, has: int) -> None:
        super().__init__(f"{has} stored {what}")
        self.what = what
        self.has = has


class JobCapError(Exception):
    """A submit refused for the owner's cap on jobs waiting and running together (an accounts
    file's `max_jobs`), in the same step that would have added the jobs: `has` such jobs
    already."""

    def __init__(self, has: int) -> None:
        super().__init__(f"{has} waiting and running jobs")
        self.has = has


@dataclass(frozen=True, slots=True)
class SubmitCaps:
    """An owner's caps that a submit is held to in the step that stores it (0: none), so they
    hold exactly whichever coordinator's API takes the submits."""

    pending: int = 0  # waiting jobs (max_pending_jobs)
    stored_jobs: int = 0  # jobs kept, ended ones included (max_stored_jobs_per_user)
    stored_bytes: int = 0  # bytes of their commands, environments, scripts (..._bytes_...)
    live: int = 0  # waiting and running jobs together (the accounts file's max_jobs)

    def args(self) -> list[int]:
        return [self.pending, self.stored_jobs, self.stored_bytes, self.live]


NO_CAPS = SubmitCaps()


_CAP_REPLY = re.compile(r"(PENDING_CAP|JOB_CAP|STORED_CAP (jobs|bytes)) (\d+)")


def cap_refusal(exc: Exception) -> PendingCapError | StoredCapError | JobCapError | None:
    """The error a script's reply `PENDING_CAP <has>`, `JOB_CAP <has>` or
    `STORED_CAP jobs|bytes <has>` stands for, else None."""
    found = _CAP_REPLY.search(str(exc))
    if found is None:
        return None
    has = int(found.group(3))
    if found.group(2):
        return StoredCapError(found.group(2), has)
    return JobCapError(has) if found.group(1) == "JOB_CAP" else PendingCapError(has)


def read_secret(path: Path) -> str:
    """A password from its file, which must be private (like ssh's keys: refused otherwise)."""
    try:  # never through a link, and never blocked by a FIFO put in its place
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise StoreError(f"cannot read the store password file {path}: {exc.strerror}") from None
    with os.fdopen(fd) as handle:
        info = os.fstat(handle.fileno())
        mode = info.st_mode
        if not stat.S_ISREG(mode) or info.st_uid not in (os.geteuid(), 0):
            raise StoreError(f"the store password file {path} must be a plain file of this "
                             "user's (or root's)")
        if mode & 0o077:
            raise StoreError(f"the store password file {path} is mode {mode & 0o777:o}: others "
                             f"may read it; chmod 600 {path}")
        secret = handle.read().strip()
    if not secret:
        raise StoreError(f"the store password file {path} is empty")
    return secret
