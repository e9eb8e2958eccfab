"""The queue in the order the cycle walks it, into which a caller that shows the cycle only
part of its queue adds jobs it left out, as the walk goes (`cycle.decide`'s `more`).

The simulator shows each class of alike jobs (one user's, of one size) only as deep as can
matter; a job deeper in a class may still backfill under the reservation where a class-mate
ahead of it could not (a shorter time limit). Which ones can is known only once the walk
has met that class-mate and the reservation is made: then the caller adds them, and the walk
meets each in its place, as if it had been in the snapshot from the start. The jobs added
must rank after the job being walked (a class's later jobs do); their totals are the
ranking's (`fairengine.Ranking.totals_of`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping, Sequence

from scheduler.policy.backfill import Reservation
from scheduler.policy.ranking import WalkKey, order_keys
from scheduler.policy.snapshot import PendingJob

# The jobs left out that the walk should meet too, asked for each job the reservation delays
# (it fits, but would delay the reserved job): each must rank after that job.
More = Callable[[PendingJob, Reservation], Sequence[PendingJob]]


class Walk:
    """`ranking.ordered(pending, totals, first)` as an iterator, with `add`."""

    def __init__(self, pending: Sequence[PendingJob], totals: Mapping[str, float],
                 first: set[str] | None) -> None:
        self._jobs = list(pending)
        self._keys = order_keys(pending, totals, first)
        self._totals, self._first = totals, first
        self._added: list[WalkKey] = []  # a heap of the keys of the jobs added, not yet met

    def __iter__(self) -> Iterator[PendingJob]:
        jobs, added = self._jobs, self._added
        for key in self._keys:
            while added and added[0] < key:
                yield jobs[heapq.heappop(added)[-1]]
            yield jobs[key[-1]]
        while added:
            yield jobs[heapq.heappop(added)[-1]]

    def add(self, after: PendingJob, jobs: Sequence[PendingJob], totals: Sequence[float]
            ) -> None:
        """Jobs the snapshot left out, and their totals, to be met in their places: each
        must rank after `after`, the job being walked (ValueError if one does not)."""
        ids = [job.id for job in jobs]
        keys = order_keys(jobs, dict(zip(ids, totals, strict=True)), self._first,
                          len(self._jobs))
        (at,) = order_keys((after,), self._totals, self._first)
        if keys and keys[0][:-1] < at[:-1]:  # (the position only breaks a tie of ids)
            raise ValueError(f"job {keys[0][5]} ranks before job {after.id}, which the walk "
                             "has met")
        self._jobs += jobs
        for key in keys:
            heapq.heappush(self._added, key)
