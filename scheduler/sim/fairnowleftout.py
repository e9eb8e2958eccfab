"""Whether the jobs fair now's exact cut left out of a call could have changed its decisions
(`scheduler.sim.fairnowcut`): a mixin of `FairNowCut`, on the replay's state. A job left out
ranks below its user's last shown job and below its bound; it changes nothing if the walk
ended before it (every free GPU taken), or if the reservation was taken before it and it fits
neither the GPUs still free nor, ending by the reservation's start, the reserved ones."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from scheduler.policy.backfill import Reservation
from scheduler.policy.cycle import Decisions, Start
from scheduler.policy.snapshot import Snapshot
from scheduler.sim.classes import ClassKey, Queued
from scheduler.sim.fairnowusers import (
    Bound,
    FreeAfter,
    HeapEntry,
    LastCall,
    RankKey,
    UserJobs,
    ranks_before,
)
from scheduler.sim.trace import SimJob

if TYPE_CHECKING:
    from collections import deque

    from scheduler.sim.policies import ShareBuilder

NEAR_JOBS = 32  # a user's jobs shown at once when a later one could change a decision


class LeftOutChecks:
    """The checks of what a call left out, and the closer bounds they and the pick use."""

    classes: dict[ClassKey, deque[Queued]]
    _last: LastCall | None
    sizes: dict[int, int]
    free: dict[str, list[int]]
    free_total: int
    by_id: dict[str, SimJob]
    shares: ShareBuilder

    def _refined(self, entry: HeapEntry, bound: Bound) -> HeapEntry:
        """A heap entry's bound, closer: its tenant's jobs below it counted (for a user none
        of whose jobs is shown, kept for the next calls until its tenant changes)."""
        most, i, _, own, users = entry
        if own.n == 0:
            closer = (max(bound.of(own, None, users, bound.horizon), most), i, True, own, users)
            if self._last is not None:
                self._last.entries[own] = closer
            return closer
        return (max(bound.of(own, None, users), most), i, True, own, users)

    def _hidden_matter(self, tenants: Mapping[str, list[UserJobs]], shown: Mapping[ClassKey, int],
                       decisions: Decisions, snap: Snapshot, bound: Bound,
                       rest: list[HeapEntry] | None) -> set[str]:
        """Whether a job left out could have changed the call's decisions; if so, more jobs
        of the users concerned are marked to be shown (`UserJobs.n`), and their tenants are
        returned (none: the decisions are the whole queue's).

        Every shown job has the level, band and total the whole queue gives it (each user's
        shown jobs are the first of its own order, and each tenant's every job at or below
        the highest user-level shown), so the policy walked the shown jobs in their order on
        the whole queue. A user's jobs left out come after its last shown one in that order
        (the policy keeps each total below the one before it in the user's own order) and
        after every job whose key beats the most they can have (`Bound`). They change
        nothing if the walk stopped before them (every free GPU taken), or if the
        reservation was taken before them and none of them fits in the GPUs still free then,
        nor, ending by the reservation's start, on the reserved GPUs. `rest`: the users not
        yet examined, by bound (None: every user is examined)."""
        ranking = self.shares.engine.last
        assert ranking is not None
        totals, within = ranking.totals, ranking.within or set()
        now, by_id = snap.now, self.by_id

        def key_of(job_id: str) -> RankKey:
            job = by_id[job_id]
            return (job_id not in within, -totals[job_id], job.submit, len(job_id), job_id)

        starts = decisions.starts
        start_keys = [key_of(st.job_id) for st in starts]
        stopped = sum(by_id[st.job_id].gpus for st in starts) == self.free_total
        res = decisions.reservation
        res_key = key_of(res.job_id) if res is not None else None
        barrier = start_keys[-1] if stopped else res_key
        pools: dict[int, FreeAfter] = {}
        if rest is not None and self._none_matter(rest, bound, starts, start_keys, stopped, res,
                                                  res_key, pools):
            return set()
        # The bounds the heap holds still bound each user's jobs left out (more shown since
        # only moves its first left out later, whose total is below the one before it);
        # where the walk took every free GPU, those below its last start need no look.
        users_left: list[tuple[UserJobs, tuple[bool, float] | None, list[UserJobs]]]
        if rest is not None:
            users_left = [(entry[3], entry[0], entry[4]) for entry in rest
                          if not (stopped and ranks_before(start_keys[-1], entry[0], None))]
        else:
            users_left = [(own, None, users) for users in tenants.values() for own in users]
        failing: list[tuple[int, UserJobs, str]] = []  # (jobs to show, the user, its tenant)
        for own, most, users in users_left:
            if own.n >= own.total:
                continue
            last = key_of(own.job(own.n - 1).id) if own.n else None
            if most is None:
                most = bound.of(own, last)
            elif last is not None:
                most = (most[0] or last[0], max(most[1], last[1]))
            if not self._left_out_matter(own, most, last, shown, decisions, start_keys,
                                         stopped, res_key, pools, now, bound):
                continue
            need = self._left_out_matter(own, bound.of(own, last, users), last, shown,
                                         decisions, start_keys, stopped, res_key, pools, now,
                                         bound)
            if need:
                failing.append((max(need, own.n + 1), own, own.owner[0]))
        # Show more of these users: their jobs up to one that could start, or at least the
        # next and those whose key could beat the call's last start (if it took every free
        # GPU) or the reservation. Those far down a user's own order (all the user's jobs
        # before them shown, and their tenant's up to their level) only once no nearer one
        # is left: the nearer ones, shown, may take the free GPUs first.
        if not failing:
            return set()
        near = [f for f in failing if f[0] - f[1].n <= NEAR_JOBS]
        more: set[str] = set()
        for need, own, tenant in near or [min(failing, key=lambda f: f[0] - f[1].n)]:
            own.seek(need)
            if barrier is not None:
                while own.n < own.total and (barrier[0], barrier[1]) >= bound.of(own, None):
                    own.advance()
            more.add(tenant)
        return more

    def _none_matter(self, rest: list[HeapEntry], bound: Bound, starts: Sequence[Start],
                     start_keys: Sequence[RankKey], stopped: bool, res: Reservation | None,
                     res_key: RankKey | None, pools: dict[int, FreeAfter]
                     ) -> bool:
        """Whether every job left out comes after the walk ended, or after the reservation
        and fits nowhere: `_hidden_matter` at once for all of them, on the best bound of
        the users `rest` (a heap), first as it is, then closer (`_refined`)."""
        for refine in (False, True):
            while rest:
                top = rest[0]
                if top[3].n >= top[3].total:
                    heapq.heappop(rest)  # shown whole since (`close_levels`)
                elif refine and not top[2]:
                    heapq.heapreplace(rest, self._refined(top, bound))
                else:
                    break
            if not rest:
                return True
            best = rest[0][0]  # the most any job left out can have
            if stopped and ranks_before(start_keys[-1], best, None):
                return True  # the walk ended before all of them
            if res is not None and res_key is not None and ranks_before(res_key, best, None):
                j = sum(1 for key in start_keys if ranks_before(key, best, None))
                if j not in pools:
                    pools[j] = self._pool_after(starts[:j], res)
                return min(self.sizes) > pools[j].counted[-1]  # none of them fits anywhere
        return False

    def _left_out_matter(self, own: UserJobs, most: tuple[bool, float], last: RankKey | None,
                         shown: Mapping[ClassKey, int], decisions: Decisions,
                         start_keys: Sequence[RankKey], stopped: bool, res_key: RankKey | None,
                         pools: dict[int, FreeAfter], now: float, bound: Bound) -> int:
        """Whether the user's jobs left out, which rank at best `most` and after `last`,
        could change the call's decisions (see `_hidden_matter`): 0 if not, else how many of
        its first jobs to show (its next one; or up to the first that could start)."""
        starts, res = decisions.starts, decisions.reservation
        # The starts and the reservation surely before its jobs left out.
        j, n_starts = 0, len(starts)
        while j < n_starts:  # (`ranks_before`, written out)
            before = start_keys[j]
            if not ((before[0], before[1]) < most or (last is not None and before <= last)):
                break
            j += 1
        if stopped and j == len(starts):
            return 0  # the walk ended before them
        if res is None or res_key is None or not ranks_before(res_key, most, last):
            return own.n + 1  # they could take the reservation
        if j not in pools:
            pools[j] = self._pool_after(starts[:j], res)
        pool = pools[j]
        if own.smallest > pool.counted[-1]:
            return 0  # none of its jobs fits anywhere
        need = 0
        at = 0  # where each run begins in its own order
        for _, jobs, keys in own.runs:
            for key in keys:
                n = shown.get(key, 0)
                q = self.classes[key]
                if n < len(q) and pool.could_start(key, q[n][1], res, now):
                    # the first job left out of the class, in the user's own order
                    place = at + n if len(keys) == 1 else at + jobs.index(q[n])
                    if (stopped and place > own.n
                            and ranks_before(start_keys[-1], bound.job_at(own, place), None)):
                        continue  # the walk ends before it (and the others of its class)
                    need = place + 1 if not need else min(need, place + 1)
            at += len(jobs)
        return need

    def _pool_after(self, starts: Sequence[Start], res: Reservation) -> FreeAfter:
        """The free GPUs after `starts`, with the reservation taken."""
        taken: dict[str, set[int]] = {}
        for st in starts:
            for node, indices in st.parts:
                taken.setdefault(node, set()).update(indices)
        reserved = {node: set(indices) for node, indices in res.parts}
        outside, counted = [], []
        on_reserved = 0
        for name, free in self.free.items():
            left = [i for i in free if i not in taken[name]] if name in taken else free
            counted.append(len(left))
            if name == res.node:
                on_reserved = len(left)
            if name in reserved:
                outside.append(sum(1 for i in left if i not in reserved[name]))
            else:
                outside.append(len(left))
        return FreeAfter(sorted(outside), sorted(counted), on_reserved)
