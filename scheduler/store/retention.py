"""Retention: finished jobs leave the hot store for a compact per-day history (part of the
jobs role; see expire_done.lua)."""

from __future__ import annotations

import json
from typing import Any

from scheduler.store.core import StoreCore
from scheduler.store.outcome import Outcome
from scheduler.store.records import id_key

RETENTION_BATCH = 200  # jobs per expire_done script: ~15 ms of the store's time each


class RetentionStore(StoreCore):
    """Part of the jobs role (`JobStore`): ended jobs leave for the per-day history."""

    SCRIPTS: tuple[str, ...] = ("expire_done",)

    async def expire_done(self, epoch: int, now: float, keep_s: float, keep_jobs: int,
                          history_s: float, batch: int = RETENTION_BATCH) -> int:
        """Move out of the hot store, oldest first, at most `batch` finished jobs that ended
        more than `keep_s` ago or are beyond the newest `keep_jobs`; each leaves a compact
        record in its day's history (kept `history_s` after that day). Returns how many moved
        (0: nothing to do, or not the leader's epoch)."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.done)
            pipe.zcount(self.keys.done, "-inf", f"({now - keep_s}")
            total, too_old = await pipe.execute()
        count = min(batch, max(too_old, total - keep_jobs))
        if count <= 0:
            return 0
        oldest = await self.r.zrange(self.keys.done, 0, count - 1, withscores=True)
        keys = [self.keys.epoch, self.keys.done, self.keys.stored]
        args: list[Any] = [epoch]
        for job_id, ended in oldest:
            day = int(ended // 86400)
            keys += [self.keys.job(job_id), self.keys.history(day), self.keys.log(job_id)]
            args += [job_id, repr(ended), int((day + 1) * 86400 + history_s)]
        result = await self._run("expire_done", keys, args)
        return 0 if result == Outcome.STALE_EPOCH else int(result)

    async def history(self, first_day: int, last_day: int) -> list[dict[str, str]]:
        """Compact records of the jobs that left the hot store, of UTC days (unix day numbers)
        `first_day` to `last_day`, in id order."""
        days = range(first_day, last_day + 1)
        async with self.r.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hgetall(self.keys.history(day))
            rows = await pipe.execute()
        records = [json.loads(text) for row in rows for text in row.values()]
        return sorted(records, key=lambda r: id_key(str(r.get("id", ""))))
