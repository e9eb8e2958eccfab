"""Checks shared by the simulator tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class RunLike(Protocol):
    node: str
    indices: tuple[int, ...]
    start: float
    end: float


def assert_no_gpu_shared(runs: Iterable[RunLike]) -> None:
    """No GPU is given to two runs at once."""
    busy: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in runs:
        for i in r.indices:
            busy.setdefault((r.node, i), []).append((r.start, r.end))
    for spans in busy.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
