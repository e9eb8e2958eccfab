"""Per-user API tokens, for callers of the TCP API that have no MUNGE (notebooks, scripts).

A token is `labq_<id>_<secret>`: the id names its record, the secret (32 random bytes) is
shown once, when the token is made, and only its sha256 is kept (`{p}token:{id}`: user, hash,
created, expires). Revoking deletes the record; an expired record is refused and also expires
from the store by itself. `{p}tokens` lists the ids.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from scheduler.store.core import StoreCore

TOKEN_RE = re.compile(r"labq_([0-9a-f]{16})_([0-9A-Za-z_-]{43})")
ID_RE = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class TokenRecord:
    id: str
    user: str
    created: float
    expires: float  # unix seconds; 0: never

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "created": self.created,
                "expires": self.expires or None}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(text: str) -> tuple[str, str] | None:
    """(id, secret) of a token's text, or None when it is not one."""
    match = TOKEN_RE.fullmatch(text)
    return (match.group(1), match.group(2)) if match else None


class TokenStore(StoreCore):
    """Part of the accounts role (`AccountStore`): users' API tokens."""

    async def create_token(self, user: str, now: float, expires: float) -> tuple[TokenRecord, str]:
        """A new token for `user` (expires: unix seconds, 0 for never): its record and its
        text, which is nowhere else (only its hash is stored)."""
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        record = TokenRecord(token_id, user, now, expires)
        key = self.keys.token(token_id)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"user": user, "hash": _digest(secret),
                                    "created": repr(now), "expires": repr(expires)})
            if expires:
                pipe.expireat(key, int(expires) + 1)
            pipe.sadd(self.keys.tokens, token_id)
            await pipe.execute()
        return record, f"labq_{token_id}_{secret}"

    async def check_token(self, text: str, now: float) -> TokenRecord | None:
        """The record of a valid token (known, secret matching, not expired), else None."""
        parts = split_token(text)
        if parts is None:
            return None
        token_id, secret = parts
        raw = await self.r.hgetall(self.keys.token(token_id))
        if not raw or not hmac.compare_digest(raw.get("hash", ""), _digest(secret)):
            return None
        record = _record(token_id, raw)
        if record.expires and record.expires <= now:
            return None
        return record

    async def tokens(self, user: str | None = None) -> list[TokenRecord]:
        """Every token not revoked (expired ones until the store drops them), oldest first."""
        ids = sorted(await self.r.smembers(self.keys.tokens))
        records: list[TokenRecord] = []
        gone: list[str] = []
        async with self.r.pipeline(transaction=False) as pipe:
            for token_id in ids:
                pipe.hgetall(self.keys.token(token_id))
            rows = await pipe.execute()
        for token_id, raw in zip(ids, rows, strict=True):
            if not raw:
                gone.append(token_id)
            elif user is None or raw.get("user") == user:
                records.append(_record(token_id, raw))
        if gone:
            await self.r.srem(self.keys.tokens, *gone)
        return sorted(records, key=lambda t: (t.created, t.id))

    async def revoke_token(self, token_id: str) -> TokenRecord | None:
        """Delete a token; its record, or None when there is none."""
        key = self.keys.token(token_id)
        raw = await self.r.hgetall(key)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.srem(self.keys.tokens, token_id)
            await pipe.execute()
        return _record(token_id, raw) if raw else None


def _record(token_id: str, raw: dict[str, str]) -> TokenRecord:
    return TokenRecord(token_id, raw.get("user", ""), float(raw.get("created") or 0),
                       float(raw.get("expires") or 0))
