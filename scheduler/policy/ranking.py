"""The order the cycle walks the queue in: normal QOS before scavenger, the jobs within their
share now first (fair_now), then the highest priority (the totals of a `fairengine.Ranking`),
then the oldest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scheduler.policy.priority import Priority
from scheduler.policy.snapshot import PendingJob

QOS_RANK = {"normal": 0, "scavenger": 1}


def order_queue(
    pending: tuple[PendingJob, ...], ranked: Mapping[str, Priority | float] | None = None,
    first: set[str] | None = None,
) -> list[PendingJob]:
    """Priority order: normal QOS before scavenger, then (fair_now) the jobs in `first`
    (within their share now), then highest priority, then oldest.

    Without priorities (no fair-share inputs), first come, first served within a QOS.
    """
    totals = {k: (v.total if isinstance(v, Priority) else v) for k, v in (ranked or {}).items()}
    return ordered(pending, totals, first)


def ordered(pending: Sequence[PendingJob], totals: Mapping[str, float],
            first: set[str] | None) -> list[PendingJob]:
    """`order_queue` on totals that are numbers already (the cycle's own): the sort keys
    (`order_keys`) are built in one comprehension rather than a key function called per job."""
    return [pending[k[-1]] for k in order_keys(pending, totals, first)]


WalkKey = tuple[int, bool, float, float, int, str, int]  # a job's place in the cycle's walk


def order_keys(pending: Sequence[PendingJob], totals: Mapping[str, float],
               first: set[str] | None, start: int = 0) -> list[WalkKey]:
    """The sort keys of `ordered`, sorted: (QOS rank, not in `first`, -total, submitted,
    len(id), id, position + `start`). Ids are numbers as strings: shorter first, then by
    text, is numeric order; the position breaks the tie of an id given twice."""
    rank, total = QOS_RANK.get, totals.get
    if first is None:
        keys = [(rank(j.qos, 0), False, -total(j.id, 0.0), j.submitted_at, len(j.id), j.id,
                 i) for i, j in enumerate(pending, start)]
    else:
        keys = [(rank(j.qos, 0), j.id not in first, -total(j.id, 0.0), j.submitted_at,
                 len(j.id), j.id, i) for i, j in enumerate(pending, start)]
    keys.sort()
    return keys
