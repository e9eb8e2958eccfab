"""Retention: finished jobs leave the hot store for a compact per-day history (part of the
jobs role; see history_retire.lua), and the reads of that history (`HistoryReads`)."""

from __future__ import annotations

from typing import Any

from scheduler.store.historyread import DAY, HistoryReads
from scheduler.store.historyusage import UsageRow, usage_rows
from scheduler.store.outcome import Outcome

RETENTION_BATCH = 200  # jobs per history_retire script: ~15 ms of the store's time each
USAGE_SCAN = 5000  # usage hash fields per HSCAN step or HMGET


class RetentionStore(HistoryReads):
    """Part of the jobs role (`JobStore`): ended jobs leave for the per-day history."""

    SCRIPTS: tuple[str, ...] = ("history_retire",)

    async def expire_done(self, epoch: int, now: float, keep_s: float, keep_jobs: int,
                          history_s: float, batch: int = RETENTION_BATCH) -> int:
        """Move out of the hot store, oldest first, at most `batch` finished jobs that ended
        more than `keep_s` ago or are beyond the newest `keep_jobs`; each leaves a compact
        record in its day's history, indexed by user, account and id (kept `history_s` after
        that day). Returns how many moved (0: nothing to do, or not the leader's epoch)."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.done)
            pipe.zcount(self.keys.done, "-inf", f"({now - keep_s}")
            total, too_old = await pipe.execute()
        count = min(batch, max(too_old, total - keep_jobs))
        if count <= 0:
            return 0
        oldest = await self.r.zrange(self.keys.done, 0, count - 1, withscores=True)
        # Who each belongs to, read first: the script is given every key it writes.
        async with self.r.pipeline(transaction=False) as pipe:
            for job_id, _ in oldest:
                pipe.hmget(self.keys.job(job_id), "user", "account")
            owners = await pipe.execute()
        keys = [self.keys.epoch, self.keys.done, self.keys.stored]
        args: list[Any] = [epoch]
        for (job_id, ended), (user, account) in zip(oldest, owners, strict=True):
            day = int(ended // DAY)
            user, account = user or "", account or ""
            keys += [self.keys.job(job_id), self.keys.history(day), self.keys.log(job_id),
                     self.keys.history_user(day, user), self.keys.history_account(day, account),
                     self.keys.history_where(job_id)]
            args += [job_id, repr(ended), int((day + 1) * DAY + history_s), user, account, day]
        result = await self._run("history_retire", keys, args)
        return 0 if result == Outcome.STALE_EPOCH else int(result)

    async def usage_report(self, first_day: int, last_day: int) -> list[UsageRow]:
        """GPU-seconds and billed units per (account, user) charged on UTC days `first_day`
        to `last_day` (unix day numbers), from the usage hash's per-day fields.

        The hash holds every day of every association: a short range reads only its own days'
        fields (of the associations the hash has decayed usage for, which every charge
        writes), a long one the whole hash."""
        size = int(await self.r.hlen(self.keys.usage))
        days = last_day - first_day + 1
        assocs: list[str] = []
        if days > 0:
            async for name, _ in self.r.hscan_iter(self.keys.usage, match="decayed:*",
                                                   count=USAGE_SCAN):
                assocs.append(name[len("decayed:"):])
        wanted = [f"{kind}:{day}:{assoc}" for day in range(first_day, last_day + 1)
                  for assoc in assocs for kind in ("day", "dgpu")]
        if len(wanted) * 2 >= size:
            return usage_rows(await self.r.hgetall(self.keys.usage), first_day, last_day)
        async with self.r.pipeline(transaction=False) as pipe:
            for first in range(0, len(wanted), USAGE_SCAN):
                pipe.hmget(self.keys.usage, wanted[first:first + USAGE_SCAN])
            replies = await pipe.execute()
        values = [value for reply in replies for value in reply]
        raw = {name: value for name, value in zip(wanted, values, strict=True)
               if value is not None}
        return usage_rows(raw, first_day, last_day)
