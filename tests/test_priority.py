"""Job priority: the weighted sum of fair-share, age, size and QOS factors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy.priority import (
    DEFAULT_QOS_FACTORS,
    Priority,
    PriorityWeights,
    job_priority,
)

DAY = 86400.0
NOW = 1_000_000.0


def prio(**kw: object) -> Priority:
    args: dict[str, object] = dict(fairshare=0.5, submitted_at=NOW, gpus=1, qos="normal",
                                   now=NOW, largest_node_gpus=8)
    args.update(kw)
    return job_priority(**args)  # type: ignore[arg-type]


def test_defaults_and_a_worked_example() -> None:
    # fairshare .25 * 10000 = 2500; age 3.5 days / 7 days = .5 * 1000 = 500;
    # size 4 / 8 = .5 * 1000 = 500; qos normal .5 * 2000 = 1000. Total 4500.
    p = prio(fairshare=0.25, submitted_at=NOW - 3.5 * DAY, gpus=4)
    assert p.factors == {"fairshare": 0.25, "age": 0.5, "size": 0.5, "qos": 0.5}
    assert p.weighted == {"fairshare": 2500.0, "age": 500.0, "size": 500.0, "qos": 1000.0}
    assert p.total == 4500.0
    assert PriorityWeights() == PriorityWeights(10000.0, 1000.0, 1000.0, 2000.0, 7 * DAY)
    assert dict(DEFAULT_QOS_FACTORS) == {"normal": 0.5, "scavenger": 0.0}


@pytest.mark.parametrize("waited,expected", [
    (0.0, 0.0), (DAY, 1 / 7), (7 * DAY, 1.0), (30 * DAY, 1.0),  # capped at max age
    (-DAY, 0.0),  # submitted "in the future" (clock skew): no age, never negative
])
def test_age_factor(waited: float, expected: float) -> None:
    assert prio(submitted_at=NOW - waited).factors["age"] == pytest.approx(expected)


def test_age_with_custom_and_degenerate_max_age() -> None:
    assert prio(submitted_at=NOW - 60, weights=PriorityWeights(max_age_s=120)
                ).factors["age"] == 0.5
    zero = PriorityWeights(max_age_s=0)
    assert prio(submitted_at=NOW - 1, weights=zero).factors["age"] == 1.0
    assert prio(submitted_at=NOW, weights=zero).factors["age"] == 0.0


@pytest.mark.parametrize("gpus,largest,expected", [
    (1, 8, 0.125), (8, 8, 1.0), (16, 8, 1.0),  # more than a node holds: capped
    (2, 0, 1.0),  # no node registered yet: counts as a 1-GPU node, capped
    (0, 8, 0.0), (-3, 8, 0.0),
])
def test_size_factor_favours_large_jobs(gpus: int, largest: int, expected: float) -> None:
    assert prio(gpus=gpus, largest_node_gpus=largest).factors["size"] == pytest.approx(expected)


@pytest.mark.parametrize("qos,expected", [("normal", 0.5), ("scavenger", 0.0), ("vip", 0.0)])
def test_qos_factor_and_unknown_qos(qos: str, expected: float) -> None:
    assert prio(qos=qos).factors["qos"] == expected


def test_custom_qos_map_is_clamped() -> None:
    factors = {"high": 1.0, "weird": 7.0, "neg": -1.0}
    assert prio(qos="high", qos_factors=factors).weighted["qos"] == 2000.0
    assert prio(qos="weird", qos_factors=factors).factors["qos"] == 1.0
    assert prio(qos="neg", qos_factors=factors).factors["qos"] == 0.0
    assert prio(qos="normal", qos_factors=factors).factors["qos"] == 0.0  # not in this map


@pytest.mark.parametrize("given_fs,expected", [
    (1.5, 1.0), (-0.2, 0.0), (math.nan, 0.0), (0.7, 0.7)])
def test_fairshare_is_clamped(given_fs: float, expected: float) -> None:
    assert prio(fairshare=given_fs).factors["fairshare"] == expected


def test_weights_scale_each_factor() -> None:
    w = PriorityWeights(fairshare=1.0, age=2.0, size=3.0, qos=4.0, max_age_s=100.0)
    p = prio(fairshare=1.0, submitted_at=NOW - 50, gpus=8, qos="normal", weights=w)
    assert p.weighted == {"fairshare": 1.0, "age": 1.0, "size": 3.0, "qos": 2.0}
    assert p.total == 7.0
    off = PriorityWeights(fairshare=0, age=0, size=0, qos=0)
    assert prio(fairshare=1.0, weights=off).total == 0.0


def test_default_weights_let_fair_share_dominate() -> None:
    # A heavy user's old, large job vs a light user's fresh, small one: fair share wins.
    old_big = prio(fairshare=0.1, submitted_at=NOW - 7 * DAY, gpus=8)
    new_small = prio(fairshare=0.5, gpus=1)
    assert new_small.total > old_big.total


@settings(max_examples=100, deadline=None)
@given(fs=st.floats(-1, 2, allow_nan=False), waited=st.floats(-DAY, 30 * DAY),
       gpus=st.integers(-2, 20), largest=st.integers(-1, 16),
       qos=st.sampled_from(["normal", "scavenger", "other"]))
def test_property_factors_in_unit_interval_and_total_is_sum(
        fs: float, waited: float, gpus: int, largest: int, qos: str) -> None:
    p = prio(fairshare=fs, submitted_at=NOW - waited, gpus=gpus, largest_node_gpus=largest,
             qos=qos)
    assert set(p.factors) == set(p.weighted) == {"fairshare", "age", "size", "qos"}
    assert all(0.0 <= v <= 1.0 for v in p.factors.values())
    assert p.total == pytest.approx(sum(p.weighted.values()))
    w = PriorityWeights()
    assert p.weighted["fairshare"] == p.factors["fairshare"] * w.fairshare


@settings(max_examples=100, deadline=None)
@given(a=st.floats(-DAY, 30 * DAY), b=st.floats(-DAY, 30 * DAY), fs=st.floats(0, 1))
def test_property_monotone_in_age(a: float, b: float, fs: float) -> None:
    shorter, longer = sorted((a, b))
    p_short = prio(fairshare=fs, submitted_at=NOW - shorter)
    p_long = prio(fairshare=fs, submitted_at=NOW - longer)
    assert p_long.factors["age"] >= p_short.factors["age"]
    assert p_long.total >= p_short.total


@settings(max_examples=100, deadline=None)
@given(a=st.floats(-1, 2), b=st.floats(-1, 2), waited=st.floats(0, 30 * DAY))
def test_property_monotone_in_fairshare(a: float, b: float, waited: float) -> None:
    low, high = sorted((a, b))
    p_low = prio(fairshare=low, submitted_at=NOW - waited)
    p_high = prio(fairshare=high, submitted_at=NOW - waited)
    assert p_high.total >= p_low.total
    if 0 <= low < high <= 1:  # strictly, in the term itself (a tiny gain vanishes in total)
        assert p_high.weighted["fairshare"] > p_low.weighted["fairshare"]
