"""The only package that talks to Redis/Valkey: `Store` (store.py: the facade of its roles,
jobs in jobstore.py, nodes in nodestore.py, accounts in accountstore.py, leadership in
leadership.py, on the shared core.py), the key schema (keys.py),
the ACL users (acl.py), the Lua scripts that make every state change (lua/), what they answer
(outcome.py) and the stored hashes read back as records (records.py)."""

from scheduler.store.outcome import (
    NO_CAPS,
    JobCapError,
    Outcome,
    PendingCapError,
    StoredCapError,
    StoreError,
    SubmitCaps,
    read_secret,
)
from scheduler.store.records import parse_daily, parse_decayed, parse_totals
from scheduler.store.retention import RETENTION_BATCH
from scheduler.store.store import WAIT_BUCKETS, Store, new_token

__all__ = [
    "NO_CAPS", "RETENTION_BATCH", "WAIT_BUCKETS", "JobCapError", "Outcome", "PendingCapError",
    "Store", "StoreError", "StoredCapError", "SubmitCaps", "new_token", "parse_daily",
    "parse_decayed", "parse_totals", "read_secret",
]
