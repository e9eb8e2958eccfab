"""Fair now's exact class cut: which waiting jobs the replay shows the policy, and the check
that those it leaves out could not have changed the call's decisions (else the call is made
again with more shown). A mixin of `scheduler.sim.engine._Replay`, whose state it reads
(declared below).

Under fair now a job's priority depends on the jobs ahead of it: its user's own, and its
tenant's at a lower user-level (`scheduler.policy.fairnow`). So the cut shows, of each user,
the first jobs of its own order, and of each tenant every job at or below the highest
user-level shown (`_close`; not above the level where a job's factor no longer depends on
it, `_flat`): every shown job then has the level, band and total the whole queue gives it,
and the policy walks the shown jobs in their order on the whole queue. Which jobs: the
users' next jobs, best bound first (`_Bound`: the most a user's next job, and every later
one, can rank), until the jobs that fit a node's free GPUs ask for every free GPU, and those
that may backfill before the last call's reservation (`_pick`). The jobs left out rank below
their user's last shown job (the policy keeps each user's totals decreasing in its own order)
and below their bound; they change nothing if the walk ended before them (every free GPU
taken) or if the reservation was taken before them and none of them fits the GPUs still free,
nor, ending by the reservation's start, the reserved ones (`_hidden_matter`). Users' queues
and bounds are kept from call to call while what they are made of stays (`_users`)."""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from scheduler.policy.backfill import Reservation
from scheduler.policy.cycle import Decisions, Start, schedule
from scheduler.policy.fairnow import Standing
from scheduler.policy.fairshare import FairShareTable
from scheduler.policy.sharetree import AccountTree
from scheduler.policy.snapshot import PendingJob, ShareInputs, Snapshot
from scheduler.sim.classes import ClassKey, Queued, class_key, rank_of
from scheduler.sim.trace import SimJob

if TYPE_CHECKING:
    from scheduler.sim.engine import Cluster
    from scheduler.sim.policies import ShareBuilder

_Key = tuple[bool, float, float, int, str]  # a job's place in the policy's order (`ranking`)
# From this x on, 2 ** -x is 0.0 in floating point (below the least subnormal, 2 ** -1074):
# fair now's factor of a job is then its past part alone, whatever its tenant-level.
_FLAT = 1100.0


def _flat(past: float, now_weight: float) -> float:
    """The level from which fair now's factor, now_weight * 2 ** -x + past, is `past` to the
    last bit (the first term under a quarter of past's last bit; at least 1, the band's
    edge): a job's total is then the same whatever its tenant-level. `_FLAT` for no past."""
    if now_weight <= 0:
        return 1.0
    if past <= 0:
        return _FLAT
    return max(1.0, math.ceil(math.log2(4 * now_weight / math.ulp(past))) + 1.0)
_NEAR = 32  # a user's jobs shown at once when a later one could change a decision
_BLOCKERS = 2  # jobs picked first that no node has the GPUs free for (one may reserve)
_SMALL = 48  # waiting jobs the cut shows all of
_numbers = itertools.count()
_HORIZON = 900.0  # seconds a user's bound is kept for (its jobs age 0.15 % of a week)
# A user in `_pick`'s heap: the best its next job can rank, a tie-break, whether that bound
# counts its tenant's jobs below it, the user, its tenant's users.
_Entry = tuple[tuple[bool, float], int, bool, "_Own", list["_Own"]]



class FairNowCut:
    """Fair now's exact cut (see the module docstring), on the replay's state."""

    classes: dict[ClassKey, deque[Queued]]
    user_classes: dict[tuple[str, str], list[ClassKey]]
    owns: dict[tuple[str, str], _Own]
    _grouping: dict[str, list[_Own]] | None
    _touched: list[_Own]
    _last: _Last | None
    changed: set[tuple[str, str]]
    held_changed: set[tuple[str, str]]
    _last_res: Reservation | None
    run_no: dict[str, int]
    _ranks: tuple[AccountTree | None, dict[tuple[str, str], int]]
    sizes: dict[int, int]
    cluster: Cluster
    exact: bool
    calls: int
    free: dict[str, list[int]]
    free_total: int
    n_pending: int
    by_id: dict[str, SimJob]
    shares: ShareBuilder

    def _fair_now_state(self) -> None:
        """The cut's state, kept from call to call (the replay marks in `changed` and
        `held_changed` the users whose queue or GPUs held change, and drops a user's `owns`
        and the `_grouping` when a user comes or goes)."""
        self.owns = {}  # each user's own order and bound
        self._ranks = (None, {})  # each user's place among its tenant's, by account tree
        self._grouping = None  # the users by tenant
        self.changed, self.held_changed = set(), set()
        self._last = None  # what the kept bounds are of
        self._touched = []  # the users with jobs shown in the last call
        self._last_res = None  # the last call's reservation

    def _views(self, shown: Mapping[ClassKey, int]) -> list[PendingJob]:
        raise NotImplementedError  # the replay's

    def _most_free(self) -> int:
        raise NotImplementedError  # the replay's

    def _fair_now_call(self, snap: Snapshot) -> tuple[Decisions, dict[ClassKey, int]]:
        """One policy call under fair now with an exact cut (see the module docstring): the
        decisions, and how many jobs of each class were shown."""
        if self.n_pending <= _SMALL:  # the whole queue: cheaper than choosing
            whole = {key: len(q) for key, q in self.classes.items()}
            decisions = schedule(replace(snap, pending=tuple(self._views(whole))),
                                 max_estimates=0, explain=False)
            self.calls += 1
            self._last_res = decisions.reservation
            return decisions, whole
        # The policy's own split (it does not read the pending jobs): the same floats.
        standing = self.shares.engine.keep(snap)
        inputs = snap.shares
        assert inputs is not None and inputs.table is not None
        bound = _Bound(inputs, inputs.table, snap.now, self.cluster.gpus_per_node, standing)
        tenants, heap = self._users(standing, bound)
        rest: list[_Entry] | None = heap
        picked = self._pick(tenants, heap, bound)
        while True:
            shown: dict[ClassKey, int] = {}
            for tenant in picked:
                _close(tenants[tenant], shown)
            decisions = schedule(replace(snap, pending=tuple(self._views(shown))),
                                 max_estimates=0, explain=False)
            self.calls += 1
            more = self._hidden_matter(tenants, shown, decisions, snap, bound,
                                       rest) if self.exact else None
            if not more:
                self._touched = [own for tenant in picked for own in tenants[tenant]]
                self._last_res = decisions.reservation
                return decisions, shown
            picked |= more
            rest = None

    def _users(self, standing: Standing, bound: _Bound
               ) -> tuple[dict[str, list[_Own]], list[_Entry]]:
        """Each tenant's users with jobs queued, none shown yet, each user's queue in fair
        now's own order (kept from call to call, made again when the user queues or starts a
        job); and a heap of the users by the most their first job can rank (`_Bound`; each
        kept from call to call while what it is made of stays: the user's and its tenant's
        GPUs held and fair GPUs, its queue, the fair-share table, until a horizon)."""
        for own in self._touched:
            own.n = own.cum = own.run = own.at = 0
        self._touched = []
        tree = standing.tree
        if self._ranks[0] is not tree:  # fair now merges a tenant's users in this order
            self._ranks = (tree, {key: i for keys in tree.child_users.values()
                                  for i, key in enumerate(keys)})
            self._grouping = None
        tenants = self._grouping
        last = self._last
        if tenants is None:
            ranks = self._ranks[1]
            tenants = {}
            for owner in self.user_classes:
                user = self.owns.get(owner)
                if user is None:
                    user = self.owns[owner] = _Own(owner)
                user.rank = ranks[owner]
                tenants.setdefault(owner[0], []).append(user)
            self._grouping = tenants
            last = None
        bound.rivals(len(tenants) > 1)
        held, entitled = standing.held, standing.entitled
        load, fair = standing.account_load, standing.account_entitled
        full = last is None or bound.now > last.until or last.rivals != bound.tenants
        new_table = full or last is None or last.table is not bound.table
        if full:
            dirty: set[str] = set(tenants)
            last = self._last = _Last(bound.table, bound.horizon, bound.tenants)
        else:
            assert last is not None
            # A user's fair GPUs change only with its tenant's, or a demand in its tenant.
            dirty = {key for key, _ in load.items() ^ last.load.items()}
            dirty.update(key for key, _ in fair.items() ^ last.fair.items())
            dirty.update(owner[0] for owner in self.changed)
            dirty.update(owner[0] for owner in self.held_changed)
            if last.table is not bound.table:  # new usage: few users' past factors change
                last.table = bound.table
                for tenant, users in tenants.items():
                    if tenant not in dirty and any(bound.past(own) != own.past
                                                   for own in users):
                        dirty.add(tenant)
        last.load, last.fair = load, fair
        for owner in self.changed:
            if owner in self.owns:
                self.owns[owner].stale = True
        self.changed, self.held_changed = set(), set()
        entries = last.entries
        floors = bound.floor
        for tenant in dirty:
            mine = tenants.get(tenant)
            if mine is None:
                continue
            floor = floors.get(tenant, math.inf) if floors else 0.0
            for own in mine:
                if own.stale:
                    own.rebuild(self._runs(self.user_classes[own.owner]), bound)
                own.held = held.get(own.owner, 0.0)
                own.share = entitled.get(own.owner, 0.0)
                past = own.past
                if new_table or past < 0:  # (its past part changes only with the table)
                    past = bound.past(own)
                    if past != own.past:
                        own.past, own.flat = past, _flat(past, 1.0 - bound.p)
                seen = (own.held, own.share, floor, past)
                if full or own.first is None or seen != own.seen:
                    own.first, own.seen = bound.first(own), seen
                # (the closer bound counts its tenant's other jobs: it is made anew)
                entries[own] = (own.first, own.index, False, own, mine)
        heap = list(entries.values())
        heapq.heapify(heap)
        return tenants, heap

    def _refined(self, entry: _Entry, bound: _Bound) -> _Entry:
        """A heap entry's bound, closer: its tenant's jobs below it counted (for a user none
        of whose jobs is shown, kept for the next calls until its tenant changes)."""
        most, i, _, own, users = entry
        if own.n == 0:
            closer = (max(bound.of(own, None, users, bound.horizon), most), i, True, own, users)
            if self._last is not None:
                self._last.entries[own] = closer
            return closer
        return (max(bound.of(own, None, users), most), i, True, own, users)

    def _runs(self, keys: list[ClassKey]) -> list[tuple[int, Sequence[Queued], list[ClassKey]]]:
        """A user's classes as runs of one GPU count in its own order (fewest GPUs first;
        classes of one size, other GPU types, nodes, CPUs or memory, interleaved)."""
        keys.sort(key=_by_gpus)
        runs: list[tuple[int, Sequence[Queued], list[ClassKey]]] = []
        i = 0
        while i < len(keys):
            gpus = keys[i][2]
            j = i + 1
            while j < len(keys) and keys[j][2] == gpus:
                j += 1
            if j == i + 1:
                runs.append((gpus, self.classes[keys[i]], [keys[i]]))
            else:
                group = keys[i:j]
                runs.append((gpus, list(heapq.merge(*(self.classes[k] for k in group),
                                                    key=rank_of)), group))
            i = j
        return runs

    def _pick(self, tenants: Mapping[str, list[_Own]], heap: list[_Entry], bound: _Bound
              ) -> set[str]:
        """Mark the jobs to show first (`_Own.n`): users' next jobs, best bound first, until
        the jobs that fit a node's free GPUs ask for every free GPU; and a job of a second
        tenant (with two or more queued, fair now ranks tenants against each other only when
        the snapshot holds jobs of two). The heap keeps the rest, whose bounds bound every
        job left out. Returns the tenants with jobs marked."""
        free, most, covered = self.free_total, self._most_free(), 0
        picked: set[str] = set()
        mixed = len(tenants) < 2
        blockers = 0  # jobs picked that no node has the GPUs free for
        parked: list[_Entry] = []  # users whose next job is such a job, once enough are
        while heap and (covered < free or not mixed):
            if covered >= free and parked:
                for entry in parked:
                    heapq.heappush(heap, entry)
                parked = []
            entry = heapq.heappop(heap)
            if covered >= free:  # only a second tenant is missing: the best of another's
                aside = []
                while entry[3].owner[0] in picked:
                    aside.append(entry)
                    entry = heapq.heappop(heap)
                for other in aside:
                    heapq.heappush(heap, other)
            elif not entry[2]:  # its bound counting its tenant's jobs below it
                heapq.heappush(heap, self._refined(entry, bound))
                continue
            most_of, i, _, own, users = entry
            job = own.runs[own.run][1][own.at][1]
            if job.gpus // job.nodes <= most:
                covered += job.gpus
            elif covered < free:
                # It cannot start; only the first such job walked takes the reservation (and
                # the user's later jobs ask as many GPUs or more): the first few are shown.
                if blockers >= _BLOCKERS:
                    parked.append(entry)
                    continue
                blockers += 1
            picked.add(own.owner[0])
            mixed = mixed or len(picked) > 1
            own.advance()
            if own.n < own.total:
                # its next jobs rank below this one (the policy caps each user's totals): its
                # bound, made closer when it comes up again (`_refined`)
                heapq.heappush(heap, (most_of, i, False, own, users))
        for entry in parked:
            heapq.heappush(heap, entry)
        self._pick_backfill(heap, picked, bound)
        return picked

    def _pick_backfill(self, heap: list[_Entry], picked: set[str], bound: _Bound) -> None:
        """Mark too the jobs that may backfill before the last call's reservation, if it
        still stands (the next call most often has the same): best (closer) bound first, a
        user's first job that ends by its start and fits the GPUs free on its node, until
        those GPUs are asked for (not past `_NEAR` jobs down a user's own order)."""
        res, now = self._last_res, bound.now
        if res is None or res.rest or res.start <= now or res.job_id in self.run_no:
            return
        hole = len(self.free[res.node])
        window = res.start - now
        seen: list[_Entry] = []
        while hole > 0 and heap:
            entry = heapq.heappop(heap)
            if not entry[2]:
                heapq.heappush(heap, self._refined(entry, bound))
                continue
            seen.append(entry)
            own = entry[3]
            found = own.backfill(window, hole)
            if found is None or found[0] - own.n >= _NEAR:
                continue
            own.seek(found[0] + 1)
            picked.add(own.owner[0])
            hole -= found[1]
        for entry in seen:
            if entry[3].n < entry[3].total:
                heapq.heappush(heap, entry)

    def _hidden_matter(self, tenants: Mapping[str, list[_Own]], shown: Mapping[ClassKey, int],
                       decisions: Decisions, snap: Snapshot, bound: _Bound,
                       rest: list[_Entry] | None) -> set[str]:
        """Whether a job left out could have changed the call's decisions; if so, more jobs
        of the users concerned are marked to be shown (`_Own.n`), and their tenants are
        returned (none: the decisions are the whole queue's).

        Every shown job has the level, band and total the whole queue gives it (each user's
        shown jobs are the first of its own order, and each tenant's every job at or below
        the highest user-level shown), so the policy walked the shown jobs in their order on
        the whole queue. A user's jobs left out come after its last shown one in that order
        (the policy keeps each total below the one before it in the user's own order) and
        after every job whose key beats the most they can have (`_Bound`). They change
        nothing if the walk stopped before them (every free GPU taken), or if the
        reservation was taken before them and none of them fits in the GPUs still free then,
        nor, ending by the reservation's start, on the reserved GPUs. `rest`: the users not
        yet examined, by bound (None: every user is examined)."""
        ranking = self.shares.engine.last
        assert ranking is not None
        totals, within = ranking.totals, ranking.within or set()
        now, by_id = snap.now, self.by_id

        def key_of(job_id: str) -> _Key:
            job = by_id[job_id]
            return (job_id not in within, -totals[job_id], job.submit, len(job_id), job_id)

        starts = decisions.starts
        start_keys = [key_of(st.job_id) for st in starts]
        stopped = sum(by_id[st.job_id].gpus for st in starts) == self.free_total
        res = decisions.reservation
        res_key = key_of(res.job_id) if res is not None else None
        barrier = start_keys[-1] if stopped else res_key
        pools: dict[int, _Pool] = {}
        if rest is not None and self._none_matter(rest, bound, starts, start_keys, stopped, res,
                                                  res_key, pools):
            return set()
        # The bounds the heap holds still bound each user's jobs left out (more shown since
        # only moves its first left out later, whose total is below the one before it);
        # where the walk took every free GPU, those below its last start need no look.
        users_left: list[tuple[_Own, tuple[bool, float] | None, list[_Own]]]
        if rest is not None:
            users_left = [(entry[3], entry[0], entry[4]) for entry in rest
                          if not (stopped and _before(start_keys[-1], entry[0], None))]
        else:
            users_left = [(own, None, users) for users in tenants.values() for own in users]
        failing: list[tuple[int, _Own, str]] = []  # (jobs to show, the user, its tenant)
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
        near = [f for f in failing if f[0] - f[1].n <= _NEAR]
        more: set[str] = set()
        for need, own, tenant in near or [min(failing, key=lambda f: f[0] - f[1].n)]:
            own.seek(need)
            if barrier is not None:
                while own.n < own.total and (barrier[0], barrier[1]) >= bound.of(own, None):
                    own.advance()
            more.add(tenant)
        return more

    def _none_matter(self, rest: list[_Entry], bound: _Bound, starts: Sequence[Start],
                     start_keys: Sequence[_Key], stopped: bool, res: Reservation | None,
                     res_key: _Key | None, pools: dict[int, _Pool]
                     ) -> bool:
        """Whether every job left out comes after the walk ended, or after the reservation
        and fits nowhere: `_hidden_matter` at once for all of them, on the best bound of
        the users `rest` (a heap), first as it is, then closer (`_refined`)."""
        for refine in (False, True):
            while rest:
                top = rest[0]
                if top[3].n >= top[3].total:
                    heapq.heappop(rest)  # shown whole since (`_close`)
                elif refine and not top[2]:
                    heapq.heapreplace(rest, self._refined(top, bound))
                else:
                    break
            if not rest:
                return True
            best = rest[0][0]  # the most any job left out can have
            if stopped and _before(start_keys[-1], best, None):
                return True  # the walk ended before all of them
            if res is not None and res_key is not None and _before(res_key, best, None):
                j = sum(1 for key in start_keys if _before(key, best, None))
                if j not in pools:
                    pools[j] = self._pool_after(starts[:j], res)
                return min(self.sizes) > pools[j].counted[-1]  # none of them fits anywhere
        return False

    def _left_out_matter(self, own: _Own, most: tuple[bool, float], last: _Key | None,
                         shown: Mapping[ClassKey, int], decisions: Decisions,
                         start_keys: Sequence[_Key], stopped: bool, res_key: _Key | None,
                         pools: dict[int, _Pool], now: float, bound: _Bound) -> int:
        """Whether the user's jobs left out, which rank at best `most` and after `last`,
        could change the call's decisions (see `_hidden_matter`): 0 if not, else how many of
        its first jobs to show (its next one; or up to the first that could start)."""
        starts, res = decisions.starts, decisions.reservation
        # The starts and the reservation surely before its jobs left out.
        j = 0
        while j < len(starts) and _before(start_keys[j], most, last):
            j += 1
        if stopped and j == len(starts):
            return 0  # the walk ended before them
        if res is None or res_key is None or not _before(res_key, most, last):
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
                            and _before(start_keys[-1], bound.job_at(own, place), None)):
                        continue  # the walk ends before it (and the others of its class)
                    need = place + 1 if not need else min(need, place + 1)
            at += len(jobs)
        return need

    def _pool_after(self, starts: Sequence[Start], res: Reservation) -> _Pool:
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
        return _Pool(sorted(outside), sorted(counted), on_reserved)


class _Pool:
    """Each node's free GPUs after some starts, the reservation taken: outside it, and
    counting it (each sorted), and on the reserved node."""

    __slots__ = ("outside", "counted", "on_reserved")

    def __init__(self, outside: list[int], counted: list[int], on_reserved: int) -> None:
        self.outside, self.counted, self.on_reserved = outside, counted, on_reserved

    def could_start(self, key: ClassKey, job: SimJob, res: Reservation, now: float) -> bool:
        """Whether `job` (of class `key`), walked after the reservation was taken, could
        start with at most these free GPUs (`backfill.place`, on GPU counts: CPUs and
        memory could only stop it)."""
        per_node, nodes = key[2] // key[4], key[4]
        outside, counted = self.outside, self.counted
        if len(outside) - bisect.bisect_left(outside, per_node) >= nodes:
            return True  # it may fit outside the reservation
        if now + job.time_limit > res.start:
            return False  # it would delay the reserved job
        if nodes == 1 and not res.rest:  # on the reserved node, its reserved GPUs counted
            return self.on_reserved >= per_node
        return len(counted) - bisect.bisect_left(counted, per_node) >= nodes




class _Last:
    """What the users' bounds kept from the last call are of (`ExactCut._users`), and the
    heap entries made of them."""

    def __init__(self, table: FairShareTable, until: float, rivals: bool) -> None:
        self.table, self.until, self.rivals = table, until, rivals
        self.load: Mapping[str, float] = {}
        self.fair: Mapping[str, float] = {}
        self.entries: dict[_Own, _Entry] = {}


def _close(users: Sequence[_Own], shown: dict[ClassKey, int]) -> None:
    """Show, of every user of one tenant, each job whose user-level is at most the highest
    of a job shown: the jobs at a lower level, which fair now counts in a job's tenant-level,
    are all shown then. Not above a user's `flat` level: there its job's factor is the same
    whatever its tenant-level. Adds each class's count to `shown`."""
    top = -math.inf
    for own in users:
        if own.n and own.share > 0:
            level = min(own.level(own.n - 1), own.flat)
            if level > top:
                top = level
    for own in users:
        # (its first job's level is held / share: none of its jobs is at most `top` above)
        if top > -math.inf and own.share > 0 and own.held / own.share <= top:
            n = own.upto(top)
            if n > own.n:
                own.seek(n)
        if own.n:
            own.count(shown)


def _before(key: _Key, most: tuple[bool, float], last: _Key | None) -> bool:
    """Whether a job of policy order `key` is walked before a user's jobs left out: those
    rank at best `most` (not in the band, -total), and after `last`, its last job shown."""
    return (key[0], key[1]) < most or (last is not None and key <= last)


def _by_gpus(key: ClassKey) -> tuple[int, str, int, int, int]:
    return (key[2], key[3] or "", key[4], key[5], key[6])


class _Own:
    """One user's queue in fair now's own order (fewest GPUs, then shortest time limit, then
    oldest: `fairnow.own_order`), as runs of one GPU count; its GPUs held and fair GPUs now,
    and its place among its tenant's users; and `n`: how many of its first jobs are shown
    (with `cum`, their GPUs, and where the next one is: run `run`, place `at`)."""

    __slots__ = ("owner", "runs", "total", "held", "share", "rank", "n", "cum", "run", "at",
                 "stale", "submit", "size", "past", "smallest", "first", "index", "flat",
                 "seen")

    def __init__(self, owner: tuple[str, str]) -> None:
        self.owner = owner
        self.runs: list[tuple[int, Sequence[Queued], list[ClassKey]]] = []
        self.total = 0
        self.stale = True  # its queue changed: `rebuild` before use
        self.held = self.share = 0.0
        self.rank = 0  # its place among its tenant's users (fair now's order of ties)
        self.n = self.cum = self.run = self.at = 0
        # its first job's submit time and size term, and its past part (`_Bound.past`)
        self.submit = self.size = 0.0
        self.past = -1.0
        self.smallest = 0  # the fewest GPUs per node a job of its asks for
        self.first: tuple[bool, float] | None = None  # its first job's bound (`_Bound`)
        self.index = next(_numbers)  # a tie-break in heaps
        self.flat = _FLAT  # the level from which its jobs' factor is its past part (`_flat`)
        self.seen: tuple[float, ...] = ()  # what `first` is of

    def rebuild(self, runs: list[tuple[int, Sequence[Queued], list[ClassKey]]],
                bound: _Bound) -> None:
        self.runs, self.stale = runs, False
        self.total = sum(len(jobs) for _, jobs, _ in runs)
        first = runs[0][1][0][1]
        self.submit = first.submit
        self.size = bound.size * min(1.0, first.gpus / bound.largest)
        self.first = None
        self.smallest = min(key[2] // key[4] for _, _, keys in runs for key in keys)

    def seek(self, n: int) -> None:
        """Show its first `n` jobs."""
        self.n = n
        cum = 0
        for r, (gpus, jobs, _) in enumerate(self.runs):
            if n < len(jobs):
                self.cum, self.run, self.at = cum + gpus * n, r, n
                return
            n -= len(jobs)
            cum += gpus * len(jobs)
        self.cum, self.run, self.at = cum, len(self.runs), 0

    def advance(self) -> None:
        """Show one job more (`seek(n + 1)`, where its first not shown is)."""
        gpus, jobs, _ = self.runs[self.run]
        self.n += 1
        self.cum += gpus
        self.at += 1
        if self.at == len(jobs):
            self.run += 1
            self.at = 0

    def classes(self) -> list[ClassKey]:
        return [key for _, _, keys in self.runs for key in keys]

    def job(self, i: int | None = None) -> SimJob:
        """Its i-th job in its own order (None: its first not shown)."""
        if i is None:
            return self.runs[self.run][1][self.at][1]
        for _, jobs, _ in self.runs:
            if i < len(jobs):
                return jobs[i][1]
            i -= len(jobs)
        raise IndexError(i)

    def backfill(self, window: float, room: int) -> tuple[int, int] | None:
        """Its first job not shown that ends within `window` and needs at most `room` GPUs
        on a node: (its place in its own order, its GPUs per node), or None."""
        at = 0
        for r, (_, jobs, _) in enumerate(self.runs):
            start = self.at if r == self.run else 0
            if r >= self.run:
                for k in range(start, len(jobs)):
                    job = jobs[k][1]
                    if job.time_limit > window:
                        break  # a run is in time-limit order
                    if job.gpus // job.nodes <= room:
                        return at + k, job.gpus // job.nodes
            at += len(jobs)
        return None

    def locate(self, i: int) -> tuple[SimJob, int]:
        """Its i-th job in its own order, and the GPUs of its jobs before it."""
        cum = 0
        for gpus, jobs, _ in self.runs:
            if i < len(jobs):
                return jobs[i][1], cum + gpus * i
            i -= len(jobs)
            cum += gpus * len(jobs)
        raise IndexError(i)

    def level(self, i: int) -> float:
        """The user-level of its i-th job, (held + GPUs of its jobs before) / fair GPUs,
        the same float as the policy's (whole numbers summed, one division)."""
        if self.share <= 0:
            return math.inf
        before = 0
        for gpus, jobs, _ in self.runs:
            if i < len(jobs):
                return (self.held + (before + gpus * i)) / self.share
            i -= len(jobs)
            before += gpus * len(jobs)
        raise IndexError(i)

    def upto(self, top: float) -> int:
        """How many of its jobs have a user-level of at most `top` (a prefix)."""
        if self.share <= 0:
            return 0
        if top == math.inf:
            return self.total
        n = before = 0
        held, share = self.held, self.share
        for gpus, jobs, _ in self.runs:
            size = len(jobs)
            if gpus == 0:
                k = size if (held + before) / share <= top else 0
            else:
                k = min(size, max(0, int((top * share - held - before) // gpus) + 1))
                while k < size and (held + (before + gpus * k)) / share <= top:
                    k += 1
                while k > 0 and (held + (before + gpus * (k - 1))) / share > top:
                    k -= 1
            n += k
            if k < size:
                return n
            before += gpus * size
        return n

    def below(self, top: float, tied: bool) -> int:
        """The GPUs of its jobs whose user-level is below `top` (`tied`: or at it): fair now
        counts them in the tenant-level of another user's job at level `top` (those tied
        with it where this user comes first in its tenant)."""
        held, share = self.held, self.share
        if share <= 0:
            return 0
        level = held / share  # its first job's
        if not (level < top or (tied and level == top)):
            return 0
        cum = 0
        for gpus, jobs, _ in self.runs:
            size = len(jobs)
            if top == math.inf or gpus == 0:
                level = (held + cum) / share
                k = size if level < top or (tied and level == top) else 0
            else:
                k = min(size, max(0, math.ceil((top * share - held - cum) / gpus)))
                while k < size:  # (a level under `top`, or at it where `tied`)
                    level = (held + (cum + gpus * k)) / share
                    if not (level < top or (tied and level == top)):
                        break
                    k += 1
                while k > 0:
                    level = (held + (cum + gpus * (k - 1))) / share
                    if level < top or (tied and level == top):
                        break
                    k -= 1
            cum += gpus * k
            if k < size:
                return cum
        return cum

    def count(self, shown: dict[ClassKey, int]) -> None:
        """Add how many jobs of each of its classes its first `n` are."""
        left = self.n
        for _, jobs, keys in self.runs:
            if left <= 0:
                return
            if len(keys) == 1:
                shown[keys[0]] = min(left, len(jobs))
            else:
                for key in keys:
                    shown[key] = 0
                for _, job, _ in itertools.islice(jobs, min(left, len(jobs))):
                    shown[class_key(job)] += 1
            left -= len(jobs)


class _Bound:
    """The best place in the policy's order (not in the band, -total) a user's first job
    not shown, and every job after it, can have: its fair-share factor is highest at the
    lowest x it can have, x being at least its user-level and, where fair now ranks tenants
    against each other (`rivals`), its tenant-level counting its tenant's GPUs held and its
    own jobs before it (and, closer, its tenant's other jobs below it: `of` with them); its
    total is below that of the user's last job shown. The same sum as the policy's
    (`priority.Weighing.totals`), each term at least the policy's."""

    def __init__(self, inputs: ShareInputs, table: FairShareTable, now: float,
                 largest: int, standing: Standing) -> None:
        w = inputs.weights
        self.now, self.max_age, self.largest = now, w.max_age_s, max(1, largest)
        self.horizon = now + _HORIZON
        self.age, self.size, self.fairshare = w.age, w.size, w.fairshare
        self.qos = w.qos * min(1.0, max(0.0, inputs.qos_factors.get("normal", 0.0)))
        self.p, self.known, self.table = inputs.past_weight, table.known, table
        self.load, self.entitled = standing.account_load, standing.account_entitled
        self.tenants = False
        self.floor: dict[str, float] = {}  # each tenant's GPUs held / fair GPUs

    def rivals(self, tenants: bool) -> None:
        """Whether fair now ranks tenants against each other (two or more have jobs)."""
        self.tenants = tenants
        if tenants:
            self.floor = {t: (self.load.get(t, 0.0) / e if e > 0 else math.inf)
                          for t, e in self.entitled.items()}

    def past(self, own: _Own) -> float:
        """The user's past part of fair now's factor, as the policy computes it."""
        key = own.owner
        return self.p * (self.known[key] if key in self.known else self.table.factor(*key))

    def first(self, own: _Own) -> tuple[bool, float]:
        """The bound of the user's first job, none shown, until the horizon, its tenant's
        other jobs not counted (cheaper)."""
        x = own.held / own.share if own.share > 0 else math.inf
        if self.tenants:
            floor = self.floor.get(own.owner[0], math.inf)
            if floor > x:
                x = floor
        return self._most(own, x, own.runs[0][1][0][1], self.horizon)

    def of(self, own: _Own, last: _Key | None, rivals: Sequence[_Own] = (),
           at: float | None = None) -> tuple[bool, float]:
        """The bound of the user's first job not shown; `last`: its last job shown's key;
        `rivals`: its tenant's users, whose jobs below its user-level then count in its
        tenant-level too (closer, and dearer to compute); `at`: a bound until then (its age
        then), not only now."""
        cum = own.cum
        x = (own.held + cum) / own.share if own.share > 0 else math.inf
        if self.tenants:
            tenant = own.owner[0]
            entitled = self.entitled.get(tenant, 0.0)
            if entitled <= 0:
                x = math.inf
            else:
                ahead, rank = cum, own.rank
                for other in rivals:  # their jobs below it, and tied with it before it
                    share = other.share
                    if other is not own and share > 0:
                        first = other.held / share  # (its first job's level)
                        if first < x or (first == x and other.rank < rank):
                            ahead += other.below(x, other.rank < rank)
                x = max(x, (self.load.get(tenant, 0.0) + ahead) / entitled)
        most = self._most(own, x, own.runs[own.run][1][own.at][1], at)
        if last is not None:
            return (most[0] or last[0], max(most[1], last[1]))
        return most

    def job_at(self, own: _Own, i: int) -> tuple[bool, float]:
        """The bound of the user's i-th job, left out, and those after it: below that of its
        job before it, if that is left out too."""
        most = self._level_bound(own, *own.locate(i))
        if i - 1 >= own.n:
            most = max(most, self._level_bound(own, *own.locate(i - 1)))
        return most

    def _level_bound(self, own: _Own, job: SimJob, cum: int) -> tuple[bool, float]:
        x = (own.held + cum) / own.share if own.share > 0 else math.inf
        if self.tenants:
            tenant = own.owner[0]
            entitled = self.entitled.get(tenant, 0.0)
            x = max(x, (self.load.get(tenant, 0.0) + cum) / entitled if entitled > 0
                    else math.inf)
        return self._most(own, x, job)

    def _most(self, own: _Own, x: float, job: SimJob, at: float | None = None
              ) -> tuple[bool, float]:
        """(not in the band, -total) of `job` of the user, at level `x` (aged until `at`)."""
        if x == math.inf:
            fs = 0.0
        else:
            key = own.owner
            known = self.known
            past = known[key] if key in known else self.table.factor(*key)
            fs = (1.0 - self.p) * 2.0 ** -x + self.p * past
            fs = 1.0 if fs > 1.0 else 0.0 if fs < 0.0 else fs
        waited = (self.now if at is None else at) - job.submit
        aged = (0.0 if waited <= 0.0 else 1.0 if waited >= self.max_age
                else waited / self.max_age)
        gpus = job.gpus / self.largest
        total = (self.age * aged + self.size * (gpus if gpus < 1.0 else 1.0) + self.qos
                 + self.fairshare * fs) + 1e-6
        return (x >= 1.0, -total)
