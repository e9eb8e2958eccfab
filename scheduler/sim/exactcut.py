"""The simulator's exact class cut: the replay shows the policy only some waiting jobs per
class; after each policy call these checks find where the cut could have changed a decision,
so the call is made again with more jobs shown. Under fair now, a job's priority depends on
its user's jobs ahead of it and its tenant's jobs at a lower level; under the backfill
policies, a job deeper in a class may backfill under the reservation. A mixin of
`scheduler.sim.engine._Replay`, whose state it reads (declared below)."""

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
from scheduler.policy.fairnow import FAIR_NOW, Standing
from scheduler.policy.fairshare import FairShareTable
from scheduler.policy.snapshot import PendingJob, ShareInputs, Snapshot
from scheduler.sim.drfviews import DrfViews
from scheduler.sim.trace import SimJob

if TYPE_CHECKING:
    from scheduler.sim.engine import Cluster
    from scheduler.sim.policies import ShareBuilder, SimPolicy

ClassKey = tuple[str, str, int, str | None, int, int, int]  # (account, user, GPUs, type,
# nodes, CPUs, memory)
ClassRank = tuple[float, float, int, str]
_Queued = tuple[ClassRank, SimJob, PendingJob]  # a queued job, and the view the policy sees
_Key = tuple[bool, float, float, int, str]  # a job's place in the policy's order (`ranking`)


def _class_key(job: SimJob) -> ClassKey:
    return (job.account, job.user, job.gpus, job.gpu_type, job.nodes, job.cpus, job.mem)


class ExactCut(DrfViews):
    """The exact cut's checks (see the module docstring), on the replay's state."""

    classes: dict[ClassKey, deque[_Queued]]
    user_classes: dict[tuple[str, str], list[ClassKey]]
    cluster: Cluster
    cut: bool
    exact: bool
    calls: int
    free: dict[str, list[int]]
    free_total: int
    node_index: dict[str, int]
    limits: dict[ClassKey, list[int]]
    by_id: dict[str, SimJob]
    policy: SimPolicy
    shares: ShareBuilder

    def _views(self, shown: Mapping[ClassKey, int]) -> list[PendingJob]:
        raise NotImplementedError  # the replay's

    def _deeper_backfill(self, decisions: Decisions, shown: Mapping[ClassKey, int],
                         now: float) -> list[PendingJob]:
        """The jobs left out that could backfill under the reservation, where a class is in
        submit order (every policy but fair now, whose classes are in time-limit order): a job
        deeper in a class whose class-mate ahead was shown and did not start (so the
        reservation's job ranks before it, and the reservation stays the same with it shown),
        whose GPUs per node the reserved node has free and whose time limit ends by the
        reservation's start. None most of the time."""
        reservation = decisions.reservation
        if (reservation is None or not self.cut or self.policy.algorithm == FAIR_NOW
                or not self.policy.backfill):
            return []
        window = reservation.start - now
        # Outside the reservation it could not fit where its class-mate ahead did not: only
        # the reserved nodes' GPUs (free before this call) are left to it.
        room = max(len(self.free[name]) for name, _ in reservation.parts)
        started: dict[ClassKey, int] = {}
        for start in decisions.starts:
            key = _class_key(self.by_id[start.job_id])
            started[key] = started.get(key, 0) + 1
        found: list[PendingJob] = []
        for key, n in shown.items():
            q, limits = self.classes[key], self.limits[key]
            per_node = key[2] // key[4]
            if (n >= len(q) or started.get(key, 0) >= n or limits[0] > window
                    or per_node > room):
                continue
            fitting = bisect.bisect_right(limits, window)
            fitting -= sum(1 for i in range(n) if q[i][1].time_limit <= window)
            if fitting <= 0:
                continue
            # Walked in class order, each that starts takes its GPUs per node on a reserved
            # node (it found no room outside the reservation): no more than those nodes' free
            # GPUs hold can start, and the jobs after them find no room.
            wanted = min(fitting, sum(len(self.free[name]) // per_node
                                      for name, _ in reservation.parts))
            deeper = list(itertools.islice(
                (item for item in itertools.islice(q, n, None) if item[1].time_limit <= window),
                wanted))
            if self.policy.drf:
                found += self._drf_jobs(key[0], [job for _, job, _ in deeper])
            else:
                found += [view for _, _, view in deeper]
        return found


    # -------------------------------------------------------------- fair now
    def _fair_now_call(self, snap: Snapshot) -> tuple[Decisions, dict[ClassKey, int]]:
        """One policy call under fair now with an exact cut (see the module docstring): the
        decisions, and how many jobs of each class were shown."""
        engine = self.shares.engine
        # The policy's own split (the same floats it ranks by; it does not read `pending`).
        standing = engine.standing(snap)
        tenants = self._own_queues(standing)
        free = self.free_total
        for users in tenants.values():
            for own in users:
                own.n = own.first(free)
        while True:
            shown: dict[ClassKey, int] = {}
            for users in tenants.values():
                top = max((own.level(own.n - 1) for own in users if own.n and own.share > 0),
                          default=-math.inf)
                for own in users:
                    if top > -math.inf:
                        own.n = max(own.n, own.upto(top))
                    own.count(shown)
            decisions = schedule(replace(snap, pending=tuple(self._views(shown))),
                                 max_estimates=0, explain=False)
            self.calls += 1
            if not self.exact or not self._hidden_matter(tenants, shown, decisions, snap):
                return decisions, shown

    def _own_queues(self, standing: Standing) -> dict[str, list[_Own]]:
        """Each tenant's users with jobs queued, each user's queue in fair now's own order."""
        held, entitled = standing.held, standing.entitled
        tenants: dict[str, list[_Own]] = {}
        classes = self.classes
        for owner, keys in self.user_classes.items():
            if len(keys) > 1:
                keys.sort(key=_by_gpus)
            runs: list[tuple[int, Sequence[_Queued], list[ClassKey]]] = []
            i = 0
            while i < len(keys):
                gpus = keys[i][2]
                j = i + 1
                while j < len(keys) and keys[j][2] == gpus:
                    j += 1
                if j == i + 1:
                    runs.append((gpus, classes[keys[i]], [keys[i]]))
                else:  # classes of one size (GPU type, nodes, CPUs, memory): interleaved
                    group = keys[i:j]
                    runs.append((gpus, list(heapq.merge(*(classes[k] for k in group),
                                                        key=_rank_of)), group))
                i = j
            tenants.setdefault(owner[0], []).append(
                _Own(owner, held.get(owner, 0.0), entitled.get(owner, 0.0), runs))
        return tenants

    def _hidden_matter(self, tenants: Mapping[str, list[_Own]], shown: Mapping[ClassKey, int],
                       decisions: Decisions, snap: Snapshot) -> bool:
        """Whether a job left out could have changed the call's decisions; if so, more jobs
        of the users concerned are marked to be shown (`_Own.n`).

        Every shown job has the level, band and total the whole queue gives it (each user's
        shown jobs are the first of its own order, and each tenant's every job at or below
        the highest user-level shown), so the policy walked the shown jobs in their order on
        the whole queue. A user's jobs left out come after its last shown one in that order
        (the policy keeps each total below the one before it in the user's own order) and
        after every job whose key beats the most their fair-share factor can be (their
        level is at least their user-level). They change nothing if the walk stopped before
        them (every free GPU taken), or if the reservation was taken before them and none of
        them fits in the GPUs still free then, nor, ending by the reservation's start, on
        the reserved GPUs."""
        ranking = self.shares.engine.last
        inputs = snap.shares
        assert ranking is not None and inputs is not None
        totals, within = ranking.totals, ranking.within or set()
        table = ranking.table
        assert table is not None
        now = snap.now
        by_id = self.by_id

        def key_of(job_id: str) -> _Key:
            job = by_id[job_id]
            return (job_id not in within, -totals[job_id], job.submit, len(job_id), job_id)

        starts = decisions.starts
        start_keys = [key_of(st.job_id) for st in starts]
        stopped = sum(by_id[st.job_id].gpus for st in starts) == self.free_total
        res = decisions.reservation
        res_key = key_of(res.job_id) if res is not None else None
        barrier = start_keys[-1] if stopped else res_key
        bound = _Bound(inputs, table, now, self.cluster.gpus_per_node)
        pools: dict[int, tuple[list[int], list[int]]] = {}
        again = False
        for users in tenants.values():
            for own in users:
                if own.n >= own.total:
                    continue
                last = key_of(own.job(own.n - 1).id) if own.n else None
                most = bound.of(own, own.n, last)
                # The starts and the reservation surely before its jobs left out.
                j = 0
                while j < len(starts) and _before(start_keys[j], most, last):
                    j += 1
                if stopped and j == len(starts):
                    continue  # the walk ended before them
                if res_key is not None and _before(res_key, most, last):
                    assert res is not None
                    if j not in pools:
                        pools[j] = self._pool_after(starts[:j], res)
                    outside, counted = pools[j]
                    if not any(self._could_start(key, self.classes[key][shown[key]][1],
                                                 outside, counted, res, now)
                               for key in own.classes() if shown[key] < len(self.classes[key])):
                        continue
                # Show more of this user: at least its next job, and those whose key could
                # beat the call's last start (if it took every free GPU) or the reservation.
                n = own.n + max(1, own.n)
                if barrier is not None:
                    while n < own.total and (barrier[0], barrier[1]) >= bound.of(own, n, None):
                        n += 1
                own.n = min(own.total, n)
                again = True
        return again

    def _pool_after(self, starts: Sequence[Start], res: Reservation
                    ) -> tuple[list[int], list[int]]:
        """Each node's free GPUs after `starts`: outside the reservation, and counting it."""
        taken: dict[str, set[int]] = {}
        for st in starts:
            for node, indices in st.parts:
                taken.setdefault(node, set()).update(indices)
        reserved = {node: set(indices) for node, indices in res.parts}
        outside, counted = [], []
        for name, free in self.free.items():
            left = [i for i in free if i not in taken[name]] if name in taken else free
            counted.append(len(left))
            if name in reserved:
                outside.append(sum(1 for i in left if i not in reserved[name]))
            else:
                outside.append(len(left))
        return outside, counted

    def _could_start(self, key: ClassKey, job: SimJob, outside: Sequence[int],
                     counted: Sequence[int], res: Reservation, now: float) -> bool:
        """Whether `job` (of class `key`), walked after the reservation was taken, could
        start with at most these free GPUs per node (`backfill.place`, on GPU counts: CPUs
        and memory could only stop it)."""
        per_node, nodes = key[2] // key[4], key[4]
        if sum(1 for n in outside if n >= per_node) >= nodes:
            return True  # it may fit outside the reservation
        if now + job.time_limit > res.start:
            return False  # it would delay the reserved job
        if nodes == 1 and not res.rest:  # on the reserved node, its reserved GPUs counted
            return counted[self.node_index[res.node]] >= per_node
        return sum(1 for n in counted if n >= per_node) >= nodes


def _before(key: _Key, most: tuple[bool, float], last: _Key | None) -> bool:
    """Whether a job of policy order `key` is walked before a user's jobs left out: those
    rank at best `most` (band, -total), and after `last`, its last job shown."""
    return (key[0], key[1]) < most or (last is not None and key <= last)


def _by_gpus(key: ClassKey) -> tuple[int, str, int, int, int]:
    return (key[2], key[3] or "", key[4], key[5], key[6])


def _rank_of(item: _Queued) -> ClassRank:
    return item[0]


class _Own:
    """One user's queue in fair now's own order (fewest GPUs, then shortest time limit, then
    oldest: `fairnow.own_order`), as runs of one GPU count, with the user's GPUs held and
    fair GPUs now, and `n`: how many of its first jobs are shown."""

    __slots__ = ("owner", "held", "share", "runs", "total", "n")

    def __init__(self, owner: tuple[str, str], held: float, share: float,
                 runs: list[tuple[int, Sequence[_Queued], list[ClassKey]]]) -> None:
        self.owner, self.held, self.share, self.runs = owner, held, share, runs
        self.total = sum(len(jobs) for _, jobs, _ in runs)
        self.n = 0

    def classes(self) -> list[ClassKey]:
        return [key for _, _, keys in self.runs for key in keys]

    def job(self, i: int) -> SimJob:
        """Its i-th job in its own order."""
        for _, jobs, _ in self.runs:
            if i < len(jobs):
                return jobs[i][1]
            i -= len(jobs)
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

    def first(self, free: int) -> int:
        """How many of its first jobs `free` GPUs could all start, and one more."""
        n = used = 0
        for gpus, jobs, _ in self.runs:
            k = len(jobs) if gpus == 0 else min(len(jobs), (free - used) // gpus)
            n += k
            if k < len(jobs):
                return n + 1
            used += gpus * k
        return n

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

    def count(self, shown: dict[ClassKey, int]) -> None:
        """Add how many jobs of each of its classes its first `n` are."""
        left = self.n
        for _, jobs, keys in self.runs:
            if len(keys) == 1:
                shown[keys[0]] = min(left, len(jobs))
            else:
                for key in keys:
                    shown[key] = 0
                for _, job, _ in itertools.islice(jobs, min(left, len(jobs))):
                    shown[_class_key(job)] += 1
            left = max(0, left - len(jobs))


class _Bound:
    """The most a user's job could rank (band, total) given its user-level: its fair-share
    factor is highest at the lowest x it can have (x is at least its user-level)."""

    def __init__(self, inputs: ShareInputs, table: FairShareTable, now: float,
                 largest: int) -> None:
        w = inputs.weights
        self.table, self.p, self.now = table, inputs.past_weight, now
        self.w, self.largest = w, max(1, largest)
        self.qos = w.qos * min(1.0, max(0.0, inputs.qos_factors.get("normal", 0.0)))

    def of(self, own: _Own, i: int, last: _Key | None) -> tuple[bool, float]:
        """(not in the band, -total) at best for the user's i-th job and those after it;
        `last`: the key of the job before it, which bounds it too."""
        w, job = self.w, own.job(i)
        x = own.level(i)
        key = own.owner
        known = self.table.known
        past = self.p * (known[key] if key in known else self.table.factor(*key))
        fs = (1.0 - self.p) * 2.0 ** -x + past if x != math.inf else 0.0
        waited = self.now - job.submit
        aged = (0.0 if waited <= 0.0 else 1.0 if waited >= w.max_age_s
                else waited / w.max_age_s)
        total = (w.age * aged + w.size * min(1.0, job.gpus / self.largest) + self.qos
                 + w.fairshare * min(1.0, max(0.0, fs))) + 1e-6
        band = x < 1.0
        if last is not None:
            band = band and not last[0]
            total = min(total, -last[1])
        return (not band, -total)


class Fenwick:
    """Prefix sums over positions 1..n with point updates, both O(log n)."""

    def __init__(self, n: int) -> None:
        self.tree = [0] * (n + 1)

    def add(self, i: int, delta: int) -> None:
        tree = self.tree
        while i < len(tree):
            tree[i] += delta
            i += i & -i

    def prefix(self, i: int) -> int:
        """The sum over positions 1..i."""
        tree, total = self.tree, 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total
