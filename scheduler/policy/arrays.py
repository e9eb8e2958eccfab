"""Job arrays (Slurm's `--array`): the index set and throttle a user asked for, and the compact
range text the store keeps and the queue shows. Pure: no I/O.

An array is one record in the store with its remaining indices; the coordinator turns indices
into tasks (jobs named `<array id>_<index>`) a few at a time, so a 1,000-task array costs one
record until its tasks are about to run, while fair share, budgets and placement see each task
as a job of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_INDEX = 9_999_999  # Slurm's default max_array_size is 1,001; any lab's index fits here
_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


class ArraySpecError(ValueError):
    """An --array value that cannot be read; the message says what to write instead."""


@dataclass(frozen=True)
class ArraySpec:
    """Which task indices, in order, and how many may run at once (0: no limit)."""

    indices: tuple[int, ...]
    throttle: int = 0

    @property
    def text(self) -> str:
        """As `labq queue` shows it: `0-99%8`."""
        return format_ranges(self.indices) + (f"%{self.throttle}" if self.throttle else "")


def parse_array(text: str, max_size: int) -> ArraySpec:
    """Slurm's forms: `0-99`, `1,3,5-7`, `0-20:2` (step), each with an optional `%N` throttle;
    a single `7` is the one task 7, as in Slurm. At most `max_size` tasks."""
    shown = text if len(text) <= 40 else text[:40] + "..."
    body, _, throttle_text = text.strip().partition("%")
    throttle = 0
    if throttle_text:
        if not throttle_text.isdigit() or int(throttle_text) < 1:
            raise ArraySpecError(f"--array {shown}: the throttle after % must be a whole number "
                                 "of at least 1, e.g. 0-99%8")
        throttle = int(throttle_text)
    indices: set[int] = set()
    for item in body.split(","):
        match = _ITEM.match(item.strip())
        if not match:
            raise ArraySpecError(f"--array {shown}: write indices as 0-99, 1,3,5-7 or 0-20:2, "
                                 "with %N to run at most N at once")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        step = int(match.group(3)) if match.group(3) is not None else 1
        if last < first or step < 1:
            raise ArraySpecError(f"--array {shown}: a range goes up (0-9), its step is at least "
                                 "1 (0-20:2)")
        if last > MAX_INDEX:
            raise ArraySpecError(f"--array {shown}: indices go up to {MAX_INDEX:,}")
        if (last - first) // step + 1 + len(indices) > max_size:
            raise ArraySpecError(f"--array {shown}: more than {max_size:,} tasks "
                                 "(max_array_size)")
        indices.update(range(first, last + 1, step))
    if len(indices) > max_size:
        raise ArraySpecError(f"--array {shown}: {len(indices):,} tasks; the limit is "
                             f"{max_size:,} (max_array_size)")
    return ArraySpec(tuple(sorted(indices)), throttle)


def format_ranges(indices: tuple[int, ...] | list[int]) -> str:
    """Sorted indices as compact text: `[1, 3, 5, 6, 7]` -> `1,3,5-7`."""
    parts: list[str] = []
    ordered = sorted(indices)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parse_ranges(text: str) -> list[int]:
    """The inverse of `format_ranges` (stored text, already checked)."""
    out: list[int] = []
    for item in filter(None, text.split(",")):
        first, _, last = item.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def task_id(array_id: str, index: int) -> str:
    return f"{array_id}_{index}"


def split_task_id(job_id: str) -> tuple[str, int] | None:
    """`17_5` -> ("17", 5); anything else None."""
    array_id, sep, index = job_id.partition("_")
    if sep and array_id.isdigit() and index.isdigit():
        return array_id, int(index)
    return None
