"""The store's accounts role: the account tree, users and budgets (one versioned write),
the usage the charging scripts add up, and users' API tokens (`TokenStore`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scheduler.accounts.tree import Accounts
from scheduler.store.records import parse_daily
from scheduler.store.tokens import TokenStore


class AccountStore(TokenStore):
    """Accounts, users, budgets and usage."""

    SCRIPTS: tuple[str, ...] = ("config_put",)

    async def set_half_life(self, seconds: float) -> None:
        """The usage half-life the charging scripts decay with (a setting, not job state)."""
        await self.r.hset(self.keys.usage, "half_life_s", seconds)

    async def usage_hash(self) -> dict[str, str]:
        """The whole usage hash, for a caller that needs several views of it at once."""
        return dict(await self.r.hgetall(self.keys.usage))

    async def accounts(self) -> Accounts:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.accounts)
            pipe.hgetall(self.keys.users)
            pipe.get(self.keys.accounts_version)
            pipe.hgetall(self.keys.budgets)
            accounts, users, version, budgets = await pipe.execute()
        return Accounts.from_raw(accounts, users, int(version or 0), budgets)

    async def put_accounts(
        self, read_version: int, changes: Sequence[tuple[str, str, str]]
    ) -> bool:
        """Write (kind, name, JSON or '' to delete) changes; False if someone else wrote first."""
        args: list[Any] = [read_version]
        for kind, name, value in changes:
            args += [kind, name, value]
        keys = [self.keys.accounts_version, self.keys.accounts, self.keys.users,
                self.keys.budgets]
        return int(await self._run("config_put", keys, args)) >= 0

    async def daily_usage(self) -> list[tuple[int, str, str, float]]:
        """(UTC day number, account, user, billed) for every day with usage."""
        return parse_daily(await self.usage_hash())

