"""The simulator's exact class cut: the replay shows the policy only some waiting jobs per
class; after each policy call these checks find where the cut could have changed a decision,
so the call is made again with more jobs shown. Under fair now, a job's priority depends on
its user's jobs ahead of it and its tenant's jobs at a lower level; under the backfill
policies, a job deeper in a class may backfill under the reservation. A mixin of
`scheduler.sim.engine._Replay`, whose state it reads (declared below)."""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from scheduler.policy.cycle import Decisions
from scheduler.policy.fairnow import FAIR_NOW, waterfill
from scheduler.policy.snapshot import PendingJob
from scheduler.sim.drfviews import DrfViews
from scheduler.sim.trace import SimJob

if TYPE_CHECKING:
    from scheduler.sim.engine import Cluster
    from scheduler.sim.policies import SimPolicy

ClassKey = tuple[str, str, int, str | None, int, int, int]  # (account, user, GPUs, type,
# nodes, CPUs, memory)
_LEVEL_MARGIN = 1e-9  # relative: fair now's levels here and in the policy differ by float noise
ClassRank = tuple[float, float, int, str]
_Queued = tuple[ClassRank, SimJob, PendingJob]  # a queued job, and the view the policy sees


def _class_key(job: SimJob) -> ClassKey:
    return (job.account, job.user, job.gpus, job.gpu_type, job.nodes, job.cpus, job.mem)


class ExactCut(DrfViews):
    """The exact cut's checks (see the module docstring), on the replay's state."""

    classes: dict[ClassKey, deque[_Queued]]
    cluster: Cluster
    held: dict[str, int]
    queued: dict[tuple[str, str], int]
    tenant_shares: dict[str, float]
    user_held: dict[tuple[str, str], int]
    ahead: dict[str, Fenwick]
    _tenant_entitled: dict[str, float]
    _entitled_now: dict[tuple[str, str], float] | None
    cut: bool
    free: dict[str, list[int]]
    limits: dict[ClassKey, list[int]]
    by_id: dict[str, SimJob]
    policy: SimPolicy

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


    def _entitled(self) -> dict[tuple[str, str], float]:
        """Each active user's fair GPUs now, as fair now splits them on the replay's flat tree
        (tenants by their shares, then users with 1 share each; max-min among those with
        demand, capped at it): the same `waterfill` as `scheduler.policy.fairnow`."""
        if self._entitled_now is not None:
            return self._entitled_now
        demand: dict[tuple[str, str], float] = {}
        for owner, gpus in self.user_held.items():
            if gpus:
                demand[owner] = float(gpus)
        for owner, gpus in self.queued.items():
            demand[owner] = demand.get(owner, 0.0) + gpus
        users_of: dict[str, list[tuple[str, str]]] = {}
        for owner in demand:
            users_of.setdefault(owner[0], []).append(owner)
        tenants = list(users_of)
        got = waterfill(float(self.cluster.gpus),
                        [(self.tenant_shares.get(t, 1.0), sum(demand[o] for o in users_of[t]))
                         for t in tenants])
        entitled: dict[tuple[str, str], float] = {}
        self._tenant_entitled = dict(zip(tenants, got, strict=True))
        for tenant, fair in zip(tenants, got, strict=True):
            owners = users_of[tenant]
            entitled.update(zip(owners, waterfill(fair, [(1.0, demand[o]) for o in owners]),
                                strict=True))
        self._entitled_now = entitled
        return entitled

    def _fair_now_exact(self, shown: Mapping[ClassKey, int], decisions: Decisions
                        ) -> dict[str, float] | None:
        """Whether fair now decided on the cut as it would on the whole queue.

        Each shown job's levels (user: (held + GPUs of its user's jobs ahead) / entitled;
        tenant: (held + GPUs of the tenant's jobs at a lower user-level) / entitled) are
        computed here twice, on the shown jobs and on the whole queue. A job whose levels
        differ is harmless if the whole queue only lowers its priority (its levels are no
        lower there) and it neither started nor took the reservation: moved later in the
        queue it still does nothing. Returns None if so, else per tenant with a job that is
        not harmless the highest such job's user-level (infinite: show the tenant's whole
        queue), for `_fair_now_closure`."""
        started = {st.job_id for st in decisions.starts}
        held_by = decisions.reservation.job_id if decisions.reservation is not None else None
        entitled = self._entitled()
        tenants: dict[str, list[tuple[str, str]]] = {}
        runs: dict[tuple[str, str], list[tuple[ClassKey, float, float]]] = {}
        for key in self.classes:
            owner = (key[0], key[1])
            if owner not in runs:
                tenants.setdefault(key[0], []).append(owner)
            runs.setdefault(owner, []).append((key, 0.0, 0.0))
        for run in runs.values():
            run.sort(key=lambda r: r[0][2])
            before = before_shown = 0.0
            for i, (key, _, _) in enumerate(run):
                if i and run[i - 1][0][2] == key[2]:
                    return {t: math.inf for t in tenants}  # own order interleaves them
                run[i] = (key, before, before_shown)
                before += key[2] * len(self.classes[key])
                before_shown += key[2] * shown[key]
        bad: dict[str, float] = {}
        for tenant, owners in tenants.items():
            owners.sort()
            if self._tenant_entitled.get(tenant, 0.0) <= 0:
                bad[tenant] = math.inf
                continue
            jobs: list[tuple[float, float, int, int, int, str]] = []  # levels, for the tenant
            # The first job left out in the tenant's merged order: (its level, its user's rank).
            first_out = (math.inf, len(owners))
            for rank, owner in enumerate(owners):
                held, share = float(self.user_held.get(owner, 0)), entitled.get(owner, 0.0)
                if share <= 0:
                    bad[tenant] = math.inf
                    continue
                out = False
                for key, before, before_shown in runs[owner]:
                    gpus = key[2]
                    q = self.classes[key]
                    for i in range(shown[key]):
                        jobs.append(((held + before + gpus * i) / share,
                                     (held + before_shown + gpus * i) / share,
                                     rank, i, gpus, q[i][1].id))
                    if not out and shown[key] < len(q):
                        out = True  # levels grow along the user's order: its first left out
                        first_out = min(first_out,
                                        ((held + before + gpus * shown[key]) / share, rank))
            if tenant in bad:
                continue
            # The most its tenant-level can be on the cut: every shown GPU of the tenant ahead.
            most = ((self.held.get(tenant, 0) + sum(job[4] for job in jobs))
                    / self._tenant_entitled[tenant])
            for level, level_shown, rank, _, _, job_id in jobs:
                if level == level_shown and (level, rank) < first_out:
                    # Every job before it in the tenant's merged order is shown, at its
                    # level on the whole queue; a shown job after one left out is after it.
                    continue
                if level == level_shown and self._ahead_same(
                        owners, runs, shown, entitled, level, level_shown, rank):
                    continue
                if level < level_shown or job_id in started or job_id == held_by:
                    bad[tenant] = max(bad.get(tenant, -math.inf), level)
                    continue
                if level >= most:
                    continue  # its x on the whole queue is at least its x on the cut
                if not (self._ahead(owners, runs, entitled, level, rank, shown=None)
                        < self._ahead(owners, runs, entitled, level_shown, rank, shown)):
                    continue
                bad[tenant] = max(bad.get(tenant, -math.inf), level)
        return bad or None

    def _ahead_same(self, owners: Sequence[tuple[str, str]],
                    runs: Mapping[tuple[str, str], list[tuple[ClassKey, float, float]]],
                    shown: Mapping[ClassKey, int], entitled: Mapping[tuple[str, str], float],
                    level: float, level_shown: float, rank: int) -> bool:
        return (self._ahead(owners, runs, entitled, level, rank, shown=None)
                == self._ahead(owners, runs, entitled, level_shown, rank, shown))

    def _ahead(self, owners: Sequence[tuple[str, str]],
               runs: Mapping[tuple[str, str], list[tuple[ClassKey, float, float]]],
               entitled: Mapping[tuple[str, str], float], level: float, rank: int,
               shown: Mapping[ClassKey, int] | None) -> float:
        """GPUs of the tenant's jobs (all, or the shown ones) before a job of user-level
        `level` of the `rank`-th user in the tenant's merged order (by level, ties to the
        user listed first)."""
        total = 0.0
        for other, owner in enumerate(owners):
            held, share = float(self.user_held.get(owner, 0)), entitled[owner]
            for key, before, before_shown in runs[owner]:
                gpus, size = key[2], len(self.classes[key])
                base = held + (before if shown is None else before_shown)
                n = size if shown is None else shown[key]
                # the jobs i < n of the class whose level is below (or tied, listed first)
                lo, hi = 0, n
                while lo < hi:
                    mid = (lo + hi) // 2
                    at = (base + gpus * mid) / share
                    if at < level or (at == level and other < rank):
                        lo = mid + 1
                    else:
                        hi = mid
                total += gpus * lo
                if lo < n:
                    break  # levels only grow along a user's own order
        return total

    def _fair_now_closure(self, wanted: Mapping[ClassKey, int],
                          bounds: Mapping[str, float]) -> dict[ClassKey, int]:
        """`wanted`, with every job of each tenant of `bounds` whose user-level ((held + GPUs
        of its user's jobs ahead) / entitled) is at most the tenant's bound (with a margin far
        above float noise; infinite: all of its jobs). Fair now then computes the levels of
        those jobs as on the whole queue: the jobs ahead of them, at either level, are all
        shown. Levels only grow along a user's own order, so this is a prefix of each class."""
        entitled = self._entitled()
        classes_of: dict[tuple[str, str], list[ClassKey]] = {}
        for key in self.classes:
            if key[0] in bounds:
                classes_of.setdefault((key[0], key[1]), []).append(key)
        shown = dict(wanted)
        for owner, keys in classes_of.items():
            bound = bounds[owner[0]]
            held, share = float(self.user_held.get(owner, 0)), entitled.get(owner, 0.0)
            if math.isinf(bound) or share <= 0:
                for key in keys:
                    shown[key] = len(self.classes[key])
                continue
            bound = bound * (1 + _LEVEL_MARGIN) + _LEVEL_MARGIN
            keys.sort(key=lambda k: (k[2], k[3] or "", k[4]))
            if any(keys[i][2] == keys[i - 1][2] for i in range(1, len(keys))):
                for key in keys:  # two classes of one size: own order interleaves them
                    shown[key] = len(self.classes[key])
                continue
            before = 0.0
            for key in keys:
                gpus, size = key[2], len(self.classes[key])
                room = bound * share - held - before  # GPUs ahead a shown job may have
                if room < 0:
                    break
                n = min(size, int(room // gpus) + 1)
                while n < size and (held + before + gpus * n) / share <= bound:
                    n += 1
                while n and (held + before + gpus * (n - 1)) / share > bound:
                    n -= 1
                shown[key] = max(shown[key], n)
                before += gpus * size
        return shown

    # -------------------------------------------------------------- cycle


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
