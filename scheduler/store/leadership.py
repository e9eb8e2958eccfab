"""The store's leadership role: one coordinator leads at a time, under a lease; each new lease
raises the fencing epoch that every leader-only script checks."""

from __future__ import annotations

from scheduler.store.core import StoreCore


class LeaderStore(StoreCore):
    """The leader lease and its epoch."""

    SCRIPTS: tuple[str, ...] = ("lease",)

    async def lease(self, holder: str, ttl_ms: int) -> int:
        return int(await self._run("lease", [self.keys.leader, self.keys.epoch], [holder, ttl_ms]))

    async def leader(self) -> str | None:
        value = await self.r.get(self.keys.leader)
        return None if value is None else str(value)


