"""A class's jobs in class order with a min-tree over their time limits: the first of them from
a given one on whose time limit ends by a time (`FirstFit.first`), in O(log n). The
submit-ordered cut looks for the first job deeper in a class that could backfill before the
reservation (`scheduler.sim.exactcut`); walking the class for it cost seconds on the Philly
table, where a user's short jobs often queue behind thousands of long ones."""

from __future__ import annotations

import math
from collections.abc import Iterable

from scheduler.sim.classes import Queued

_SLOTS = 16  # the fewest slots a tree is made with


class FirstFit:
    """The jobs of one class, each in a slot in class order (a job that leaves keeps its slot,
    empty; new jobs take the next slots); a tree of the slots' time limits (the least of each
    pair above them). The slots are made again, the empty ones dropped, when they run out."""

    __slots__ = ("items", "at", "tree", "size", "used")

    def __init__(self, items: Iterable[Queued] = ()) -> None:
        self._build(list(items))

    def _build(self, items: list[Queued]) -> None:
        size = _SLOTS
        while size < 2 * len(items):
            size *= 2
        tree = [math.inf] * (2 * size)
        for i, item in enumerate(items):
            tree[size + i] = item[1].time_limit
        for i in range(size - 1, 0, -1):
            tree[i] = min(tree[2 * i], tree[2 * i + 1])
        self.items: list[Queued | None] = [*items, *([None] * (size - len(items)))]
        self.at = {item[1].id: i for i, item in enumerate(items)}
        self.tree, self.size, self.used = tree, size, len(items)

    def append(self, item: Queued) -> None:
        """A job after every other of the class."""
        if self.used == self.size:
            self._build([*(it for it in self.items if it is not None), item])
            return
        i = self.used
        self.used += 1
        self.items[i] = item
        self.at[item[1].id] = i
        self._set(i, item[1].time_limit)

    def rebuild(self, items: Iterable[Queued]) -> None:
        """The class's jobs anew (a job put back between others)."""
        self._build(list(items))

    def remove(self, job_id: str) -> None:
        i = self.at.pop(job_id)
        self.items[i] = None
        self._set(i, math.inf)

    def _set(self, i: int, limit: float) -> None:
        tree = self.tree
        i += self.size
        tree[i] = limit
        i >>= 1
        while i:
            least = min(tree[2 * i], tree[2 * i + 1])
            if tree[i] == least:
                break
            tree[i] = least
            i >>= 1

    def first(self, job_id: str, window: float) -> Queued | None:
        """The first job from `job_id`'s slot on (it included) whose time limit is `window` or
        less (None: none)."""
        return self._first(self.at[job_id], window)

    def after(self, job_id: str, window: float) -> Queued | None:
        """`first`, from the slot after `job_id`'s."""
        i = self.at[job_id] + 1
        return self._first(i, window) if i < self.size else None

    def _first(self, slot: int, window: float) -> Queued | None:
        tree, size = self.tree, self.size
        i = slot + size
        while True:
            if tree[i] <= window:
                while i < size:  # down to its first such slot
                    i = 2 * i if tree[2 * i] <= window else 2 * i + 1
                return self.items[i - size]
            while i & 1:  # to the next subtree on the right
                i >>= 1
            if not i:
                return None
            i += 1
