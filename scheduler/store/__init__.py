"""The only package that talks to Redis/Valkey: `Store` (store.py), the key schema (keys.py),
the ACL users (acl.py) and the Lua scripts that make every state change (lua/)."""

from scheduler.store.store import (
    RETENTION_BATCH,
    WAIT_BUCKETS,
    Outcome,
    Store,
    StoreError,
    new_token,
    parse_daily,
    parse_decayed,
    parse_totals,
    read_secret,
)

__all__ = [
    "RETENTION_BATCH", "WAIT_BUCKETS", "Outcome", "Store", "StoreError", "new_token",
    "parse_daily", "parse_decayed", "parse_totals", "read_secret",
]
