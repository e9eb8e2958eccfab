"""Placing a job of K nodes: G GPUs on each of K distinct nodes, best fit; backfill reserves
and estimates the same way; fair share, caps and budgets count its K x G GPUs."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy import Limits, NodeView, PendingJob, RunningJob, Snapshot, schedule
from scheduler.policy.budget import Budget, BudgetState
from scheduler.policy.placement import FreePool, best_fit

A100 = "NVIDIA A100-SXM4-80GB"
RTX = "NVIDIA GeForce RTX 3090"
NOW = 1_000_000.0
INF = math.inf


def node(name: str, total: int, free: tuple[int, ...] | None = None, model: str = A100,
         up: bool = True) -> NodeView:
    return NodeView(name, model, total, tuple(range(total)) if free is None else free, up)


def job(job_id: str, per_node: int = 1, nodes: int = 1, limit: int = 3600,
        gpu_type: str | None = None, user: str = "alice") -> PendingJob:
    return PendingJob(job_id, user, "lab", per_node * nodes, float(job_id), gpu_type,
                      "normal", limit, nodes)


def run(job_id: str, where: str, indices: tuple[int, ...], ends_in: float = INF,
        rest: tuple[tuple[str, tuple[int, ...]], ...] = ()) -> RunningJob:
    gpus = len(indices) + sum(len(i) for _, i in rest)
    return RunningJob(job_id, "zed", "lab", gpus, where, indices, NOW + ends_in, rest=rest)


def snap(nodes: list[NodeView], jobs: list[PendingJob],
         running: list[RunningJob] | None = None, **more: object) -> Snapshot:
    return Snapshot(tuple(nodes), tuple(jobs), NOW, tuple(running or ()), **more)  # type: ignore[arg-type]


def test_a_two_node_job_gets_its_gpus_on_two_distinct_nodes_best_fit() -> None:
    nodes = [node("a", 4), node("b", 4, (2, 3)), node("c", 4, (1, 2, 3)), node("d", 4, (3,))]
    decisions = schedule(snap(nodes, [job("1", per_node=2, nodes=2)]))
    (start,) = decisions.starts
    # the nodes left with the fewest free GPUs that still have 2: b (2 free), then c (3)
    assert start.parts == (("b", (2, 3)), ("c", (1, 2)))
    assert (start.node, start.indices) == ("b", (2, 3))


def test_a_job_of_more_nodes_than_fit_waits_saying_how_many_have_its_gpus() -> None:
    nodes = [node("a", 4), node("b", 4, (3,)), node("c", 2)]
    decisions = schedule(snap(nodes, [job("1", per_node=4, nodes=2)]))
    assert not decisions.starts
    (reason,) = decisions.reasons["1"]
    assert reason.code == "Resources"
    assert "needs 4 GPUs (any type) on each of 2 nodes" in reason.detail
    assert "1 node(s) have that many free now" in reason.detail
    decisions = schedule(snap(nodes, [job("1", per_node=4, nodes=3)]))
    assert "2 node(s) that are up have that many usable GPUs" in decisions.reasons["1"][0].detail
    decisions = schedule(snap(nodes, [job("1", per_node=2, nodes=4)]))
    assert "3 node(s) that are up" in decisions.reasons["1"][0].detail


def test_the_gpu_type_and_down_nodes_are_honoured_on_every_node() -> None:
    nodes = [node("a", 2), node("b", 2, model=RTX), node("c", 2, up=False), node("d", 2)]
    (start,) = schedule(snap(nodes, [job("1", per_node=2, nodes=2, gpu_type="a100")])).starts
    assert {n for n, _ in start.parts} == {"a", "d"}
    assert not schedule(snap(nodes, [job("1", per_node=2, nodes=3, gpu_type="a100")])).starts


def test_later_jobs_see_every_node_of_a_multi_node_start_taken() -> None:
    nodes = [node("a", 2), node("b", 2), node("c", 2)]
    decisions = schedule(snap(nodes, [job("1", per_node=2, nodes=2), job("2", per_node=2),
                                      job("3", per_node=1)]))
    started = {s.job_id: s.parts for s in decisions.starts}
    used = [n for parts in started.values() for n, _ in parts]
    assert sorted(started) == ["1", "2"] and sorted(used) == ["a", "b", "c"]
    assert decisions.reasons["3"][0].code == "Resources"


def test_a_blocked_multi_node_job_reserves_on_each_of_its_nodes_and_backfill_respects_it(
) -> None:
    # a and b are busy for an hour, c for two: the 2-node job can start in an hour, on a and b
    nodes = [node("a", 2, ()), node("b", 2, ()), node("c", 2, ()), node("d", 2, (0, 1))]
    running = [run("r1", "a", (0, 1), 3600), run("r2", "b", (0, 1), 3600),
               run("r3", "c", (0, 1), 7200)]
    pending = [job("1", per_node=2, nodes=3), job("2", per_node=2, limit=7200),
               job("3", per_node=2, limit=600)]
    decisions = schedule(snap(nodes, pending, running))
    res = decisions.reservation
    assert res is not None and res.job_id == "1"
    # d is free now, a and b at NOW + 1h: the three nodes free up by NOW + 1h
    assert res.start == NOW + 3600 and {n for n, _ in res.parts} == {"a", "b", "d"}
    assert decisions.estimates["1"] == NOW + 3600
    # job 2 (2h) would hold d past the reservation's start; job 3 (10 min) ends before it
    assert [s.job_id for s in decisions.starts] == ["3"]
    assert decisions.starts[0].parts == (("d", (0, 1)),)
    assert decisions.reasons["2"][0].code == "Reservation"
    assert "on a, b, d" in decisions.reasons["2"][0].detail or \
        "on d, a, b" in decisions.reasons["2"][0].detail


def test_a_running_multi_node_job_holds_gpus_on_all_its_nodes_in_the_timeline() -> None:
    nodes = [node("a", 2, ()), node("b", 2, ()), node("c", 2, ())]
    running = [run("r", "a", (0, 1), 600, rest=(("b", (0, 1)),)),
               run("s", "c", (0, 1), 1800)]
    decisions = schedule(snap(nodes, [job("1", per_node=2, nodes=2)], running))
    assert decisions.reservation is not None
    assert decisions.reservation.start == NOW + 600
    assert {n for n, _ in decisions.reservation.parts} == {"a", "b"}


def test_caps_count_every_gpu_of_a_multi_node_job() -> None:
    nodes = [node("a", 4), node("b", 4), node("c", 4)]
    limits = Limits(user_gpus={"alice": 6})
    decisions = schedule(snap(nodes, [job("1", per_node=4, nodes=2)], limits=limits))
    assert not decisions.starts
    assert decisions.reasons["1"][0].code == "UserGpuLimit"
    running = [run("r", "a", (0, 1), 600, rest=(("b", (0, 1)),))]
    decisions = schedule(snap(nodes, [job("2", per_node=3)], running,
                              limits=Limits(account_gpus={"lab": 6})))
    assert decisions.reasons["2"][0].code == "AccountGpuLimit"  # 4 held + 3 > 6


def test_a_budget_counts_every_gpu_of_a_multi_node_job() -> None:
    nodes = [node("a", 4), node("b", 4)]
    # 2 nodes x 2 GPUs x 1 h = 4 GPU-hours: a budget of 3 GPU-hours does not cover it
    budgets = BudgetState((Budget("account", "lab", 3 * 3600.0, 0.0, 10**9),))
    decisions = schedule(snap(nodes, [job("1", per_node=2, nodes=2)], budgets=budgets))
    assert not decisions.starts and decisions.reasons["1"][0].code.startswith("Budget")
    budgets = BudgetState((Budget("account", "lab", 4 * 3600.0, 0.0, 10**9),))
    assert schedule(snap(nodes, [job("1", per_node=2, nodes=2)], budgets=budgets)).starts


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=6), st.integers(1, 4),
       st.integers(1, 3))
def test_the_pool_places_a_multi_node_job_as_the_plain_best_fit(
        free_counts: list[int], per_node: int, count: int) -> None:
    nodes = [node(f"n{i}", 4, tuple(range(4 - f, 4))) for i, f in enumerate(free_counts)]
    pool = FreePool(nodes)
    wanted = job("1", per_node=per_node, nodes=count)
    got = pool.best_fit(per_node, None, count)
    assert got == best_fit(wanted, nodes)
    if got is not None:
        assert len({n for n, _ in got.parts}) == count
        assert all(len(i) == per_node for _, i in got.parts)
        pool.take(got)
        assert pool.left == sum(free_counts) - per_node * count
