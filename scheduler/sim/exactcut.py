"""The simulator's exact class cut where a class is in submit order (every backfill policy
but fair now, whose cut is `scheduler.sim.fairnowcut`): the replay shows the policy only some
waiting jobs per class; a job deeper in a class may backfill under the reservation where its
class-mates ahead cannot, and `_deeper_backfill` finds those for a second call. A mixin of
`scheduler.sim.engine._Replay`, whose state it reads (declared below)."""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from scheduler.policy.cycle import Decisions
from scheduler.policy.fairnow import FAIR_NOW
from scheduler.policy.snapshot import PendingJob
from scheduler.sim.classes import ClassKey, Queued, class_key
from scheduler.sim.drfviews import DrfViews
from scheduler.sim.fairnowcut import FairNowCut
from scheduler.sim.trace import SimJob

if TYPE_CHECKING:
    from scheduler.sim.policies import SimPolicy


class ExactCut(FairNowCut, DrfViews):
    """The exact cut's checks (see the module docstrings), on the replay's state."""

    classes: dict[ClassKey, deque[Queued]]
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
            key = class_key(self.by_id[start.job_id])
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
