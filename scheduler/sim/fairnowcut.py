"""Fair now's exact class cut: which waiting jobs the replay shows the policy, and the check
that those it leaves out could not have changed the call's decisions (else the call is made
again with more shown). A mixin of `scheduler.sim.engine._Replay`, whose state it reads
(declared below).

Under fair now a job's priority depends on the jobs ahead of it: its user's own, and its
tenant's at a lower user-level (`scheduler.policy.fairnow`). So the cut shows, of each user,
the first jobs of its own order, and of each tenant every job at or below the highest
user-level shown (`close_levels`; not above the level where a job's factor no longer depends on
it, `flat_level`): every shown job then has the level, band and total the whole queue gives it,
and the policy walks the shown jobs in their order on the whole queue. Which jobs: the
users' next jobs, best bound first (`Bound`: the most a user's next job, and every later
one, can rank), until the jobs that fit a node's free GPUs ask for every free GPU, and those
that may backfill before the last call's reservation (`_pick`). The jobs left out rank below
their user's last shown job (the policy keeps each user's totals decreasing in its own order)
and below their bound; they change nothing if the walk ended before them (every free GPU
taken) or if the reservation was taken before them and none of them fits the GPUs still free,
nor, ending by the reservation's start, the reserved ones (`fairnowleftout`). Users' queues
and bounds are kept from call to call while what they are made of stays (`_users`)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from scheduler.policy.backfill import Reservation
from scheduler.policy.cycle import Decisions, schedule
from scheduler.policy.fairnow import Standing
from scheduler.policy.sharetree import AccountTree
from scheduler.policy.snapshot import PendingJob, Snapshot
from scheduler.sim.classes import ClassKey, Queued, rank_of
from scheduler.sim.fairnowleftout import NEAR_JOBS, LeftOutChecks

if TYPE_CHECKING:
    from scheduler.sim.engine import Cluster

from scheduler.sim.fairnowusers import (
    Bound,
    HeapEntry,
    LastCall,
    UserJobs,
    by_gpus,
    close_levels,
    flat_level,
)

_BLOCKERS = 2  # jobs picked first that no node has the GPUs free for (one may reserve)
_SMALL = 48  # waiting jobs the cut shows all of
# `Snapshot`'s fields, in order: `_with_pending` is `dataclasses.replace` written out (cheaper;
# tests/test_sim_cut_exact.py checks the two agree)
_SNAPSHOT_FIELDS = ("nodes", "pending", "now", "running", "limits", "shares", "budgets",
                    "queued_gpus")


def _with_pending(snap: Snapshot, pending: tuple[PendingJob, ...]) -> Snapshot:
    """`snap` with these pending jobs (`dataclasses.replace(snap, pending=pending)`)."""
    return Snapshot(snap.nodes, pending, snap.now, snap.running, snap.limits, snap.shares,
                    snap.budgets, snap.queued_gpus)



class FairNowCut(LeftOutChecks):
    """Fair now's exact cut (see the module docstring), on the replay's state (the
    attributes it shares with its checks are declared on `LeftOutChecks`)."""

    user_classes: dict[tuple[str, str], list[ClassKey]]
    owns: dict[tuple[str, str], UserJobs]
    _grouping: dict[str, list[UserJobs]] | None
    _touched: list[UserJobs]
    changed: set[tuple[str, str]]
    held_changed: set[tuple[str, str]]
    _last_res: Reservation | None
    run_no: dict[str, int]
    _ranks: tuple[AccountTree | None, dict[tuple[str, str], int]]
    cluster: Cluster
    exact: bool
    calls: int
    n_pending: int

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
            decisions = schedule(_with_pending(snap, tuple(self._views(whole))),
                                 max_estimates=0, explain=False)
            self.calls += 1
            self._last_res = decisions.reservation
            return decisions, whole
        # The policy's own split (it does not read the pending jobs): the same floats.
        standing = self.shares.engine.keep(snap)
        inputs = snap.shares
        assert inputs is not None and inputs.table is not None
        bound = Bound(inputs, inputs.table, snap.now, self.cluster.gpus_per_node, standing)
        tenants, heap = self._users(standing, bound)
        rest: list[HeapEntry] | None = heap
        picked = self._pick(tenants, heap, bound)
        while True:
            shown: dict[ClassKey, int] = {}
            for tenant in picked:
                close_levels(tenants[tenant], shown)
            decisions = schedule(_with_pending(snap, tuple(self._views(shown))),
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

    def _users(self, standing: Standing, bound: Bound
               ) -> tuple[dict[str, list[UserJobs]], list[HeapEntry]]:
        """Each tenant's users with jobs queued, none shown yet, each user's queue in fair
        now's own order (kept from call to call, made again when the user queues or starts a
        job); and a heap of the users by the most their first job can rank (`Bound`; each
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
                    user = self.owns[owner] = UserJobs(owner)
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
            last = self._last = LastCall(bound.table, bound.horizon, bound.tenants)
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
        first_of, past_of = bound.first, bound.past
        for tenant in dirty:
            mine = tenants.get(tenant)
            if mine is None:
                continue
            floor = floors.get(tenant, math.inf) if floors else 0.0
            for own in mine:
                owner = own.owner
                if own.stale:
                    own.rebuild(self._runs(self.user_classes[owner]), bound)
                own_held = own.held = held.get(owner, 0.0)
                own_share = own.share = entitled.get(owner, 0.0)
                past = own.past
                if new_table or past < 0:  # (its past part changes only with the table)
                    past = past_of(own)
                    if past != own.past:
                        own.past, own.flat = past, flat_level(past, 1.0 - bound.p)
                seen = (own_held, own_share, floor, past)
                first = own.first
                if full or first is None or seen != own.seen:
                    first = own.first = first_of(own)
                    own.seen = seen
                # (the closer bound counts its tenant's other jobs: it is made anew)
                entries[own] = (first, own.index, False, own, mine)
        heap = list(entries.values())
        heapq.heapify(heap)
        return tenants, heap

    def _runs(self, keys: list[ClassKey]) -> list[tuple[int, Sequence[Queued], list[ClassKey]]]:
        """A user's classes as runs of one GPU count in its own order (fewest GPUs first;
        classes of one size, other GPU types, nodes, CPUs or memory, interleaved)."""
        keys.sort(key=by_gpus)
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

    def _pick(self, tenants: Mapping[str, list[UserJobs]], heap: list[HeapEntry], bound: Bound
              ) -> set[str]:
        """Mark the jobs to show first (`UserJobs.n`): users' next jobs, best bound first, until
        the jobs that fit a node's free GPUs ask for every free GPU; and a job of a second
        tenant (with two or more queued, fair now ranks tenants against each other only when
        the snapshot holds jobs of two). The heap keeps the rest, whose bounds bound every
        job left out. Returns the tenants with jobs marked."""
        free, most, covered = self.free_total, self._most_free(), 0
        picked: set[str] = set()
        mixed = len(tenants) < 2
        blockers = 0  # jobs picked that no node has the GPUs free for
        parked: list[HeapEntry] = []  # users whose next job is such a job, once enough are
        while heap and (covered < free or not mixed):
            if covered >= free and parked:
                for entry in parked:
                    heapq.heappush(heap, entry)
                parked = []
            if covered < free and not heap[0][2]:  # its bound counting its tenant's jobs below
                heapq.heapreplace(heap, self._refined(heap[0], bound))  # (it is the first)
                continue
            entry = heapq.heappop(heap)
            if covered >= free:  # only a second tenant is missing: the best of another's
                aside = []
                while entry[3].owner[0] in picked:
                    aside.append(entry)
                    entry = heapq.heappop(heap)
                for other in aside:
                    heapq.heappush(heap, other)
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

    def _pick_backfill(self, heap: list[HeapEntry], picked: set[str], bound: Bound) -> None:
        """Mark too the jobs that may backfill before the last call's reservation, if it
        still stands (the next call most often has the same): best (closer) bound first, a
        user's first job that ends by its start and fits the GPUs free on its node, until
        those GPUs are asked for (not past `NEAR_JOBS` jobs down a user's own order)."""
        res, now = self._last_res, bound.now
        if res is None or res.rest or res.start <= now or res.job_id in self.run_no:
            return
        hole = len(self.free[res.node])
        window = res.start - now
        seen: list[HeapEntry] = []
        while hole > 0 and heap:
            if not heap[0][2]:
                heapq.heapreplace(heap, self._refined(heap[0], bound))
                continue
            entry = heapq.heappop(heap)
            seen.append(entry)
            own = entry[3]
            found = own.backfill(window, hole)
            if found is None or found[0] - own.n >= NEAR_JOBS:
                continue
            own.seek(found[0] + 1)
            picked.add(own.owner[0])
            hole -= found[1]
        for entry in seen:
            if entry[3].n < entry[3].total:
                heapq.heappush(heap, entry)
