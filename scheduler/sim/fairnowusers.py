"""Fair now's exact cut (`scheduler.sim.fairnowcut`), its parts that stand apart from the
cut's choice: each user's queue as the cut walks it (`UserJobs`: its jobs in its own order, their
user-levels, how many of them lie below a level), the bound on how high a user's next job can
rank (`Bound`), the levels shown jobs must be closed over (`close_levels`, `flat_level`), and
what the GPUs free after a call's starts could still start (`FreeAfter`)."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from scheduler.policy.backfill import Reservation
from scheduler.policy.fairnow import Standing
from scheduler.policy.fairshare import FairShareTable
from scheduler.policy.snapshot import ShareInputs
from scheduler.sim.classes import ClassKey, Queued, class_key
from scheduler.sim.trace import SimJob

if TYPE_CHECKING:
    pass

RankKey = tuple[bool, float, float, int, str]  # a job's place in the policy's order (`ranking`)
# From this x on, 2 ** -x is 0.0 in floating point (below the least subnormal, 2 ** -1074):
# fair now's factor of a job is then its past part alone, whatever its tenant-level.
FLAT_LEVEL = 1100.0


def flat_level(past: float, now_weight: float) -> float:
    """The level from which fair now's factor, now_weight * 2 ** -x + past, is `past` to the
    last bit (the first term under a quarter of past's last bit; at least 1, the band's
    edge): a job's total is then the same whatever its tenant-level. `FLAT_LEVEL` for no past."""
    if now_weight <= 0:
        return 1.0
    if past <= 0:
        return FLAT_LEVEL
    return max(1.0, math.ceil(math.log2(4 * now_weight / math.ulp(past))) + 1.0)
TIE_BREAK = itertools.count()
BOUND_HORIZON_S = 900.0  # seconds a user's bound is kept for (its jobs age 0.15 % of a week)
# A user in `_pick`'s heap: the best its next job can rank, a tie-break, whether that bound
# counts its tenant's jobs below it, the user, its tenant's users.
HeapEntry = tuple[tuple[bool, float], int, bool, "UserJobs", list["UserJobs"]]


class FreeAfter:
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




class LastCall:
    """What the users' bounds kept from the last call are of (`ExactCut._users`), and the
    heap entries made of them."""

    def __init__(self, table: FairShareTable, until: float, rivals: bool) -> None:
        self.table, self.until, self.rivals = table, until, rivals
        self.load: Mapping[str, float] = {}
        self.fair: Mapping[str, float] = {}
        self.entries: dict[UserJobs, HeapEntry] = {}


def close_levels(users: Sequence[UserJobs], shown: dict[ClassKey, int]) -> None:
    """Show, of every user of one tenant, each job whose user-level is at most the highest
    of a job shown: the jobs at a lower level, which fair now counts in a job's tenant-level,
    are all shown then. Not above a user's `flat` level: there its job's factor is the same
    whatever its tenant-level. Adds each class's count to `shown`."""
    top = -math.inf
    for own in users:
        if own.n and own.share > 0:
            level = min(own.last_level(), own.flat)
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


def ranks_before(key: RankKey, most: tuple[bool, float], last: RankKey | None) -> bool:
    """Whether a job of policy order `key` is walked before a user's jobs left out: those
    rank at best `most` (not in the band, -total), and after `last`, its last job shown."""
    return (key[0], key[1]) < most or (last is not None and key <= last)


def by_gpus(key: ClassKey) -> tuple[int, str, int, int, int]:
    return (key[2], key[3] or "", key[4], key[5], key[6])


class UserJobs:
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
        # its first job's submit time and size term, and its past part (`Bound.past`)
        self.submit = self.size = 0.0
        self.past = -1.0
        self.smallest = 0  # the fewest GPUs per node a job of its asks for
        self.first: tuple[bool, float] | None = None  # its first job's bound (`Bound`)
        self.index = next(TIE_BREAK)  # a tie-break in heaps
        self.flat = FLAT_LEVEL  # from this level its jobs' factor is their past part
        self.seen: tuple[float, ...] = ()  # what `first` is of

    def rebuild(self, runs: list[tuple[int, Sequence[Queued], list[ClassKey]]],
                bound: Bound) -> None:
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
        for r, (_, jobs, keys) in enumerate(self.runs):
            start = self.at if r == self.run else 0
            if r >= self.run:
                if len(keys) == 1:  # one class: one GPUs per node, the first job decides
                    key = keys[0]
                    per_node = key[2] // key[4]
                    if per_node <= room and start < len(jobs):
                        if jobs[start][1].time_limit > window:
                            at += len(jobs)
                            continue
                        return at + start, per_node
                    at += len(jobs)
                    continue
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

    def last_level(self) -> float:
        """`level(n - 1)` (n > 0, a share), from the GPUs of its first n jobs."""
        runs = self.runs
        gpus = runs[self.run][0] if self.at else runs[self.run - 1][0]
        return (self.held + (self.cum - gpus)) / self.share

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


class Bound:
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
        self.horizon = now + BOUND_HORIZON_S
        self.age, self.size, self.fairshare = w.age, w.size, w.fairshare
        self.qos = w.qos * min(1.0, max(0.0, inputs.qos_factors.get("normal", 0.0)))
        self.p, self.known, self.table = inputs.past_weight, table.known, table
        self.now_weight = 1.0 - self.p
        self.load, self.entitled = standing.account_load, standing.account_entitled
        self.tenants = False
        self.floor: dict[str, float] = {}  # each tenant's GPUs held / fair GPUs

    def rivals(self, tenants: bool) -> None:
        """Whether fair now ranks tenants against each other (two or more have jobs)."""
        self.tenants = tenants
        if tenants:
            self.floor = {t: (self.load.get(t, 0.0) / e if e > 0 else math.inf)
                          for t, e in self.entitled.items()}

    def past(self, own: UserJobs) -> float:
        """The user's past part of fair now's factor, as the policy computes it."""
        key = own.owner
        return self.p * (self.known[key] if key in self.known else self.table.factor(*key))

    def first(self, own: UserJobs) -> tuple[bool, float]:
        """The bound of the user's first job, none shown, until the horizon, its tenant's
        other jobs not counted (cheaper)."""
        x = own.held / own.share if own.share > 0 else math.inf
        if self.tenants:
            floor = self.floor.get(own.owner[0], math.inf)
            if floor > x:
                x = floor
        return self._most(own, x, own.runs[0][1][0][1], self.horizon)

    def of(self, own: UserJobs, last: RankKey | None, rivals: Sequence[UserJobs] = (),
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
                    if share > 0 and other is not own:
                        first = other.held / share  # (its first job's level)
                        if first < x:
                            ahead += other.below(x, other.rank < rank)
                        elif first == x and other.rank < rank:
                            ahead += other.below(x, True)
                tenant_x = (self.load.get(tenant, 0.0) + ahead) / entitled
                if tenant_x > x:
                    x = tenant_x
        most = self._most(own, x, own.runs[own.run][1][own.at][1], at)
        if last is not None:
            return (most[0] or last[0], max(most[1], last[1]))
        return most

    def job_at(self, own: UserJobs, i: int) -> tuple[bool, float]:
        """The bound of the user's i-th job, left out, and those after it: below that of its
        job before it, if that is left out too."""
        most = self._level_bound(own, *own.locate(i))
        if i - 1 >= own.n:
            most = max(most, self._level_bound(own, *own.locate(i - 1)))
        return most

    def _level_bound(self, own: UserJobs, job: SimJob, cum: int) -> tuple[bool, float]:
        x = (own.held + cum) / own.share if own.share > 0 else math.inf
        if self.tenants:
            tenant = own.owner[0]
            entitled = self.entitled.get(tenant, 0.0)
            x = max(x, (self.load.get(tenant, 0.0) + cum) / entitled if entitled > 0
                    else math.inf)
        return self._most(own, x, job)

    def _most(self, own: UserJobs, x: float, job: SimJob, at: float | None = None
              ) -> tuple[bool, float]:
        """(not in the band, -total) of `job` of the user, at level `x` (aged until `at`).
        The user's past part is `own.past` (`_users` keeps it `past(own)` on this table: the
        same product as the policy's)."""
        if x == math.inf:
            fs = 0.0
        else:
            fs = self.now_weight * 2.0 ** -x + own.past
            fs = 1.0 if fs > 1.0 else 0.0 if fs < 0.0 else fs
        waited = (self.now if at is None else at) - job.submit
        max_age = self.max_age
        aged = (0.0 if waited <= 0.0 else 1.0 if waited >= max_age else waited / max_age)
        gpus = job.gpus / self.largest
        total = (self.age * aged + self.size * (gpus if gpus < 1.0 else 1.0) + self.qos
                 + self.fairshare * fs) + 1e-6
        return (x >= 1.0, -total)
