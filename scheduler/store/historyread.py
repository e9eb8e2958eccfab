"""Reads of ended jobs over a time range, from the hot store (the done zset and job hashes) and
the per-day history alike, and of one job's history record (part of the jobs role, through
`RetentionStore`).

The history is kept by UTC day (`history:{day}`), with per-day sets of each user's and each
account's ids: a query reads only the days of its range, and one user's (or account's) query
only that user's records of those days, so its cost follows what it returns, not the year."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from scheduler.store.core import StoreCore
from scheduler.store.records import HISTORY_FIELDS, id_key

DAY = 86400
DAYS_PER_ROUND = 8  # history days read per round trip (a busy day is ~1,400 records)
INDEXED_DAYS_PER_ROUND = 64  # as many for one user or account (a few records a day)
HOT_CHUNK = 2000  # job hashes per read_fields script (as jobstore.READ_CHUNK)
PICK_CHUNK = 5000  # job hashes per history_hot_ids script (two fields each: ~3 ms)

Record = dict[str, str]


def _ended(record: Record) -> float:
    try:
        return float(record.get("ended_at") or 0)
    except ValueError:
        return 0.0


class HistoryReads(StoreCore):
    """Ended jobs by time range, user and account; one job from the history by id."""

    SCRIPTS: tuple[str, ...] = ("history_hot_ids",)

    async def history(self, first_day: int, last_day: int) -> list[Record]:
        """Compact records of the jobs that left the hot store, of UTC days (unix day numbers)
        `first_day` to `last_day`, in id order."""
        records: list[Record] = []
        for chunk in _rounds(range(first_day, last_day + 1), DAYS_PER_ROUND):
            async with self.r.pipeline(transaction=False) as pipe:
                for day in chunk:
                    pipe.hgetall(self.keys.history(day))
                rows = await pipe.execute()
            records += [json.loads(text) for row in rows for text in row.values()]
        return sorted(records, key=lambda r: id_key(str(r.get("id", ""))))

    async def history_job(self, job_id: str) -> Record | None:
        """The compact history record of one job that left the hot store (None: not there, or
        its day's history has expired)."""
        day = await self.r.hget(self.keys.history_where(job_id), job_id)
        if day is None or not str(day).lstrip("-").isdigit():
            return None
        text = await self.r.hget(self.keys.history(int(day)), job_id)
        return dict(json.loads(text)) if text else None

    async def ended_jobs(self, since: float, until: float, user: str | None = None,
                         account: str | None = None,
                         match: Callable[[Record], bool] | None = None,
                         limit: int = 10_000) -> tuple[list[Record], bool]:
        """Jobs that ended from `since` to `until` (Unix seconds, both included), of `user`
        and `account` where given and that `match` accepts: still in the hot store or in the
        history. Records as the history keeps them (HISTORY_FIELDS, strings). At most `limit`,
        the latest ended; returns (records newest first, whether every match is there).

        Reads the hot store first, then the history, so a job that retention moves meanwhile
        is seen twice (kept once), never missed."""
        def wanted(record: Record) -> bool:
            return ((user is None or record.get("user") == user)
                    and (account is None or record.get("account") == account)
                    and since <= _ended(record) <= until
                    and (match is None or match(record)))

        found: dict[str, Record] = {}
        for record in await self._hot_ended(since, until, user, account):
            if wanted(record):
                found[record["id"]] = record
        complete = True
        first, last = int(since // DAY), int(until // DAY)
        per_round = DAYS_PER_ROUND if user is None and account is None \
            else INDEXED_DAYS_PER_ROUND
        for days in _rounds(range(last, first - 1, -1), per_round):  # newest day first
            if len(found) > limit:  # the older days cannot make the latest `limit` newer
                complete = False
                break
            for record in await self._history_days(days, user, account):
                if wanted(record):
                    found.setdefault(record["id"], record)
        records = sorted(found.values(), key=_ended, reverse=True)
        return records[:limit], complete and len(records) <= limit

    async def _hot_ended(self, since: float, until: float, user: str | None,
                         account: str | None) -> list[Record]:
        """Ended jobs still in the hot store, by the done zset's end times: for one user or
        account, the store picks their ids (history_hot_ids.lua) before their records are
        read."""
        ids: list[str] = list(await self.r.zrangebyscore(self.keys.done, since, until))
        if user is not None or account is not None:
            theirs: list[str] = []
            for first in range(0, len(ids), PICK_CHUNK):
                chunk = ids[first:first + PICK_CHUNK]
                picked = await self._run("history_hot_ids", [self.keys.job(j) for j in chunk],
                                         [user or "", account or ""])
                theirs += [chunk[int(i) - 1] for i in picked]
            ids = theirs
        rows = await self._read_fields(ids, HISTORY_FIELDS)
        return [{k: v for k, v in zip(HISTORY_FIELDS, row, strict=True) if v not in (None, "")}
                for row in rows if row[0] is not None and row[3]]

    async def _read_fields(self, ids: Sequence[str],
                           fields: Sequence[str]) -> list[list[str | None]]:
        width, rows = len(fields), []
        for first in range(0, len(ids), HOT_CHUNK):
            chunk = ids[first:first + HOT_CHUNK]
            flat = await self._run("read_fields", [self.keys.job(j) for j in chunk], fields)
            rows += [flat[i * width:(i + 1) * width] for i in range(len(chunk))]
        return rows

    async def _history_days(self, days: Sequence[int], user: str | None,
                            account: str | None) -> list[Record]:
        """The history records of `days`: all of them, or only those the per-day user or
        account sets name (two round trips: the ids, then their records)."""
        if user is None and account is None:
            async with self.r.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hvals(self.keys.history(day))
                rows = await pipe.execute()
            return [json.loads(text) for row in rows for text in row]
        async with self.r.pipeline(transaction=False) as pipe:
            for day in days:
                sets = ([self.keys.history_user(day, user)] if user is not None else []) + (
                    [self.keys.history_account(day, account)] if account is not None else [])
                pipe.sinter(sets)
            id_sets = await pipe.execute()
        async with self.r.pipeline(transaction=False) as pipe:
            for day, ids in zip(days, id_sets, strict=True):
                if ids:
                    pipe.hmget(self.keys.history(day), sorted(ids))
            rows = await pipe.execute() if any(id_sets) else []
        return [json.loads(text) for row in rows for text in row if text]


def _rounds(days: range, size: int) -> list[range]:
    return [days[i:i + size] for i in range(0, len(days), size)]

