"""The store's leadership role: one coordinator leads at a time, under a lease; each new lease
raises the fencing epoch that every leader-only script checks."""

from __future__ import annotations

from scheduler.store.core import StoreCore


class LeaderStore(StoreCore):
    """The leader lease and its epoch."""

    SCRIPTS: tuple[str, ...] = ("lease",)
    _primary = ""  # the primary's run_id at the last lease (a replicated store)
    _leased = 0  # the epoch of the last lease

    async def lease(self, holder: str, ttl_ms: int) -> int:
        """The epoch `holder` leads under (0: another leads). On a replicated store, a primary
        that changed since the last call (a failover) makes the holder take a new epoch, and a
        new epoch is acknowledged only once a replica has it, so no failover hands an epoch
        number out twice."""
        fresh = ""
        if self.replicated:
            primary = str((await self.r.info("server")).get("run_id", ""))
            fresh, self._primary = ("1" if primary != self._primary else ""), primary
        keys, args = [self.keys.leader, self.keys.epoch], [holder, ttl_ms, fresh]
        if self.replicated:  # a new epoch (any call may take one) is on a replica when answered
            epoch = int(await self._run_durably("lease", keys, args, disk=False))
        else:
            epoch = int(await self._run("lease", keys, args))
        self._leased = epoch
        return epoch

    async def leader(self) -> str | None:
        value = await self.r.get(self.keys.leader)
        return None if value is None else str(value)


