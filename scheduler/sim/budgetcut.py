"""The exact class cut under budgets, where a class is in submit order (``labq-fairtree``: fair
now's cut, `scheduler.sim.fairnowcut`, checks its calls' decisions and needs nothing more). A
mixin of `scheduler.sim.engine._Replay`, whose state it reads (declared below).

A job held by its budget is skipped by the policy's walk: it neither starts nor takes the
reservation, and the jobs behind it in its class (cheaper: a shorter time limit) may start or
take the reservation in its stead. So the engine's cut (as many as the free GPUs could start
and one more) is not enough for a class whose tenant has a budget (a gated class); it is
chosen here, and the call made again with more shown until the jobs left out cannot matter:

- A job whose cost (GPUs x billing weight x time limit, as the policy's `BudgetGate` counts
  it) exceeds what its budget had left before the call is held wherever the walk meets it
  (what is left only shrinks in a call): it is never shown.
- A shown job that costs no more than its budget has left after the call's starts was not
  held (surely free). A class's jobs left out change nothing if one such job of its shown
  ones did not start (the later ones, of the same size, find no room outside the
  reservation and cannot take it), unless they may backfill before the reservation's start
  on the reserved nodes: then one such job with a time limit that ends by it must not have
  started either, or those after the first one that did not start and that ended by it must
  have filled the reserved nodes' free GPUs (a class on one node each).
- Else more are shown: the class's next jobs not surely held, until as many surely free as
  the free GPUs could start and one more; or its next jobs that may backfill.

The classes of tenants without a budget keep the engine's cut (a job of theirs is never held;
if the first jobs of a class that the free GPUs could start all start, they take every free
GPU and the walk ends) and its deeper-backfill jobs, told to each call's walk.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from scheduler.policy.cycle import Decisions
from scheduler.policy.fairengine import FairShare
from scheduler.policy.snapshot import PendingJob, ShareInputs, Snapshot
from scheduler.sim.classes import ClassKey, Queued
from scheduler.sim.trace import SimJob

if TYPE_CHECKING:
    from scheduler.sim.cluster import Cluster
    from scheduler.sim.policies import SimPolicy

Scope = tuple[str, str]
_REL = 1e-9  # float noise in a budget's sums, relative to the amounts summed


def _limit(cost: float, per_second: float) -> float:
    """The longest time limit whose cost (`per_second` x limit) is `cost` or less."""
    if per_second:
        return cost / per_second
    return math.inf if cost >= 0 else -math.inf


@dataclass
class _Gated:
    """A gated class's jobs shown in one event's calls: positions in its queue `q` (which does
    not change meanwhile). `pre`: every job not surely held before `cursor` (`seen` of them);
    `extra`: jobs at or after it shown as they may backfill. Costs are compared as time
    limits (a cost over a class's GPUs x billing weight; the tolerances cover the division)."""

    q: deque[Queued]
    limits: list[int]  # the class's time limits, sorted
    per_second: float  # what a second of time limit costs: GPUs x billing weight
    top: float  # a job with a longer time limit is held wherever the walk meets it
    passing: int  # jobs not surely held
    base: int  # surely free jobs to show at least: as many as could start, and one more
    scopes: list[Scope]
    cursor: int = 0
    seen: int = 0
    pre: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)

    def grow(self, want: int, free: float) -> bool:
        """Show the next jobs not surely held until `want` more of them have a time limit of
        `free` or less (surely free); whether any was added (if not, none is left out)."""
        q, added = self.q, False
        while want > 0 and self.seen < self.passing and self.cursor < len(q):
            p = self.cursor
            self.cursor += 1
            limit = q[p][1].time_limit
            if limit > self.top:
                continue
            self.seen += 1
            self.pre.append(p)
            if p in self.extra:  # shown already (it may backfill)
                self.extra.remove(p)
                continue
            added = True
            if limit <= free:
                want -= 1
        return added

    def left_out(self) -> int:
        return self.passing - self.seen - len(self.extra)


class BudgetCut:
    """The exact cut under budgets (see the module docstring), on the replay's state."""

    classes: dict[ClassKey, deque[Queued]]
    limits: dict[ClassKey, list[int]]
    free: dict[str, list[int]]
    free_total: int
    by_id: dict[str, SimJob]
    cluster: Cluster
    policy: SimPolicy
    calls: int
    _scopes: dict[tuple[str, str], list[Scope]] | None = None  # each user's budgets' scopes

    def _counts(self) -> dict[ClassKey, int]:
        raise NotImplementedError  # the replay's

    def _most_free(self) -> int:
        raise NotImplementedError  # the replay's

    def _views(self, shown: Mapping[ClassKey, int]) -> list[PendingJob]:
        raise NotImplementedError  # the replay's

    def _drf_jobs(self, tenant: str, jobs: list[SimJob]) -> list[PendingJob]:
        raise NotImplementedError  # `DrfViews`'

    def _submit_order_call(self, snap: Snapshot, shown: Mapping[ClassKey, int]) -> Decisions:
        raise NotImplementedError  # `ExactCut`'s

    def _budget_call(self, snap: Snapshot) -> tuple[Decisions, dict[ClassKey, int]]:
        """One policy call under budgets with an exact cut: the decisions, and how many jobs
        of each class were shown (for a gated class more than it holds: the engine's call
        again for a class whose shown jobs all started is not needed for it)."""
        state = snap.budgets
        assert state is not None
        now = snap.now
        left0: dict[Scope, float] = {}
        size: dict[Scope, float] = {}  # the amounts summed, for the float noise
        for b in state.budgets:
            scope = (b.scope, b.name)
            spent, committed = state.spent.get(scope, 0.0), state.committed.get(scope, 0.0)
            left0[scope] = b.limit - spent - committed
            size[scope] = abs(b.limit) + abs(spent) + abs(committed)
        engine = (snap.shares.engine if snap.shares is not None else None) or FairShare()
        covering = engine.tree(snap.shares or ShareInputs()).covering
        # (the replay's tree and budgets do not change: kept from call to call)
        cache = self._scopes
        if cache is None:
            cache = self._scopes = {}

        def scopes_of(user: str, account: str) -> list[Scope]:
            found = cache.get((user, account))
            if found is None:  # the policy's: its user's, its account's and those above
                found = [s for s in [("user", user), *(("account", a) for a in covering(account))]
                         if s in left0]
                cache[(user, account)] = found
            return found

        counts = self._counts()
        free, most = self.free_total, self._most_free()
        weight = self.cluster.billing_weight
        # The most a call can commit under a budget: every free GPU, for its longest limit.
        budgeted: dict[ClassKey, list[Scope]] = {}
        longest: dict[Scope, int] = {}
        for key in counts:
            scopes = scopes_of(key[1], key[0])
            if scopes:
                budgeted[key] = scopes
                for s in scopes:
                    longest[s] = max(longest.get(s, 0), self.limits[key][-1])
        safe = {s: left0[s] - free * most_s * weight - _REL * size[s] - 1e-6
                for s, most_s in longest.items()}
        gated: dict[ClassKey, _Gated] = {}
        for key, scopes in budgeted.items():
            gpus, limits = key[2], self.limits[key]
            per_second = gpus * weight
            if per_second * limits[-1] <= (safe[scopes[0]] if len(scopes) == 1 else
                                           min(safe[s] for s in scopes)):
                continue  # none of its jobs can be held in this call: the engine's cut
            top = _limit(min(left0[s] + _REL * size[s] for s in scopes), per_second)
            passing = bisect.bisect_right(limits, top)
            if gpus // key[4] > most:  # cannot start: only its first may take the
                base = 1  # reservation
            elif gpus:
                base = free // gpus + 1
            else:
                base = passing
            g = gated[key] = _Gated(self.classes[key], limits, per_second, top, passing, base,
                                    scopes)
            g.grow(base, top)
        plain = {key: n for key, n in counts.items() if key not in gated}
        while True:
            pending = self._views(plain)
            for key, g in gated.items():
                items = [g.q[p] for p in sorted(g.pre + g.extra)]
                pending += (self._drf_jobs(key[0], [job for _, job, _ in items])
                            if self.policy.drf else [view for _, _, view in items])
            # (the plain classes' jobs that may backfill are told to the walk there)
            decisions = self._submit_order_call(replace(snap, pending=tuple(pending)), plain)
            if not (gated and self._gated_more(gated, decisions, now, left0, size, scopes_of)):
                shown = dict(plain)
                shown.update((key, len(g.q) + 1) for key, g in gated.items())
                return decisions, shown

    def _gated_more(self, gated: Mapping[ClassKey, _Gated], decisions: Decisions, now: float,
                    left0: Mapping[Scope, float], size: Mapping[Scope, float],
                    scopes_of: Callable[[str, str], list[Scope]]) -> bool:
        """Whether a gated class's jobs left out could have changed the call's decisions (see
        the module docstring); if so, more of them are shown."""
        started: set[str] = set()
        charged: dict[Scope, float] = {}
        weight = self.cluster.billing_weight
        for st in decisions.starts:
            started.add(st.job_id)
            job = self.by_id[st.job_id]
            cost = (job.gpus * job.time_limit * weight if not st.rest else
                    job.time_limit * sum(len(indices) * weight for _, indices in st.parts))
            for scope in scopes_of(job.user, job.account):
                charged[scope] = charged.get(scope, 0.0) + cost
        res = decisions.reservation
        more = False
        for key, g in gated.items():
            if g.left_out() <= 0:
                continue
            # a job of this time limit or less was not held where the walk met it
            free = _limit(min(left0[s] - charged.get(s, 0.0)
                              - _REL * (size[s] + charged.get(s, 0.0)) - 1e-6
                              for s in g.scopes), g.per_second)
            q = g.q
            first = next((p for p in g.pre
                          if q[p][1].time_limit <= free and q[p][1].id not in started), None)
            if first is None:  # none of the jobs behind may be kept from starting
                more = g.grow(g.base, free) or more
                continue
            if res is None:
                continue
            per_node = key[2] // key[4]
            if per_node > max(len(self.free[name]) for name, _ in res.parts):
                continue  # no room on the reserved nodes either
            window = res.start - now
            fitting = min(bisect.bisect_right(g.limits, window), g.passing)
            shown = [p for p in sorted(g.pre + g.extra) if q[p][1].time_limit <= window]
            if len(shown) >= fitting:
                continue  # every job that may backfill is shown
            chosen = set(shown)
            at = next(p for p in range(g.cursor, len(q)) if p not in chosen
                      and q[p][1].time_limit <= window and q[p][1].time_limit <= g.top)
            before = [p for p in shown if p < at and q[p][1].time_limit <= free]
            if any(q[p][1].id not in started for p in before):
                continue  # one that ends by the reservation found no room: none after does
            want = 1
            if key[4] == 1:  # those after `first` started on the reserved nodes
                room = sum(len(self.free[name]) // per_node for name, _ in res.parts)
                want = room - sum(1 for p in before if p > first)
                if want <= 0:
                    continue
            more = self._grow_backfill(g, at, window, want, free) or more
        return more

    @staticmethod
    def _grow_backfill(g: _Gated, at: int, window: float, want: int, free: float) -> bool:
        """Show the class's jobs from `at` on that may backfill (not surely held, ending by
        the reservation's start) until `want` of them are surely free (a time limit of
        `free` or less)."""
        q, added = g.q, False
        chosen = set(g.pre) | set(g.extra)
        for p in range(at, len(q)):
            if want <= 0:
                break
            limit = q[p][1].time_limit
            if p in chosen or limit > window or limit > g.top:
                continue
            g.extra.append(p)
            added = True
            if limit <= free:
                want -= 1
        return added
