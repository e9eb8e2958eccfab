"""The pure scheduling policy: placement, queue order, reasons, and its invariants."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model import Reason
from scheduler.policy import Decisions, NodeView, PendingJob, Snapshot, Start, schedule
from scheduler.policy import cycle as policy_cycle
from scheduler.policy.budget import Budget, BudgetState
from scheduler.policy.fairengine import FairShare
from scheduler.policy.fairshare import CLASSIC, FAIR_TREE, Account, Assoc
from scheduler.policy.placement import best_fit
from scheduler.policy.ranking import order_queue
from scheduler.policy.snapshot import Limits, RunningJob, ShareInputs
from scheduler.policy.walk import More

A100 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"
RTX = "NVIDIA GeForce RTX 3090"


# ------------------------------------------------------------------------------ builders


def node(
    name: str, total: int, model: str = A100, free: tuple[int, ...] | None = None,
    up: bool = True,
) -> NodeView:
    return NodeView(
        name=name, gpu_model=model, gpus_total=total,
        free=tuple(range(total)) if free is None else tuple(sorted(free)), up=up,
    )


def job(
    job_id: str, gpus: int = 1, at: float | None = None, gpu_type: str | None = None,
    qos: str = "normal", user: str = "alice",
) -> PendingJob:
    return PendingJob(
        id=job_id, user=user, account="lab", gpus=gpus,
        submitted_at=float(job_id) if at is None else at, gpu_type=gpu_type, qos=qos,
    )


def snap(nodes: list[NodeView], jobs: list[PendingJob], now: float = 1000.0) -> Snapshot:
    return Snapshot(nodes=tuple(nodes), pending=tuple(jobs), now=now)


def codes(decisions: Decisions, job_id: str) -> list[str]:
    return [r.code for r in decisions.reasons.get(job_id, [])]


# ------------------------------------------------------------------------------ table of cases


@dataclass
class Case:
    """A snapshot, and what must come out: starts (exact), and reason codes per waiting job."""

    nodes: list[NodeView]
    jobs: list[PendingJob]
    starts: list[Start]
    reasons: dict[str, list[str]] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "best fit picks the node left with fewest free GPUs": Case(
        nodes=[node("big", 8), node("mid", 4, free=(1, 2, 3)), node("small", 2)],
        jobs=[job("1", 2)],
        starts=[Start("1", "small", (0, 1))],
    ),
    "best fit skips nodes with too few free GPUs": Case(
        nodes=[node("a", 4, free=(3,)), node("b", 4, free=(0, 2, 3))],
        jobs=[job("1", 2)],
        starts=[Start("1", "b", (0, 2))],
    ),
    "ties on free count break by node name": Case(
        nodes=[node("zeta", 4), node("alpha", 4)],
        jobs=[job("1", 1)],
        starts=[Start("1", "alpha", (0,))],
    ),
    "lowest free indices are used": Case(
        nodes=[node("n", 8, free=(2, 5, 6, 7))],
        jobs=[job("1", 3)],
        starts=[Start("1", "n", (2, 5, 6))],
    ),
    "GPU type by family: a100 fits A100-80GB": Case(
        nodes=[node("rtx", 1, RTX), node("amp", 4, "A100-80GB")],
        jobs=[job("1", 1, gpu_type="a100")],
        starts=[Start("1", "amp", (0,))],
    ),
    "GPU type honoured even if another node fits better": Case(
        nodes=[node("h", 8, H100), node("a", 1, A100)],
        jobs=[job("1", 1, gpu_type="H100")],
        starts=[Start("1", "h", (0,))],
    ),
    "GPU type by exact model name": Case(
        nodes=[node("h", 2, H100), node("a", 2, A100)],
        jobs=[job("1", 1, gpu_type=A100)],
        starts=[Start("1", "a", (0,))],
    ),
    "more GPUs than any node: Resources": Case(
        nodes=[node("a", 4), node("b", 8)],
        jobs=[job("1", 9)],
        starts=[],
        reasons={"1": ["Resources"]},
    ),
    "unknown type: GpuTypeUnavailable": Case(
        nodes=[node("a", 4, A100)],
        jobs=[job("1", 1, gpu_type="B200")],
        starts=[],
        reasons={"1": ["GpuTypeUnavailable"]},
    ),
    "down nodes get nothing": Case(
        nodes=[node("down", 8, up=False), node("up", 2, free=(1,))],
        jobs=[job("1", 2), job("2", 1), job("3", 1)],
        starts=[Start("2", "up", (1,))],
        reasons={"1": ["Resources"], "3": ["Resources", "Priority"]},
    ),
    "only node of the type is down: GpuTypeUnavailable": Case(
        nodes=[node("h", 8, H100, up=False), node("a", 8, A100)],
        jobs=[job("1", 1, gpu_type="h100")],
        starts=[],
        reasons={"1": ["GpuTypeUnavailable"]},
    ),
    "FIFO within QOS: earlier submit starts first": Case(
        nodes=[node("n", 2)],
        jobs=[job("3", 2, at=30.0), job("1", 2, at=10.0), job("2", 2, at=20.0)],
        starts=[Start("1", "n", (0, 1))],
        reasons={"2": ["Resources"], "3": ["Resources", "Priority"]},
    ),
    "same submit time: lower numeric id first (10 after 9)": Case(
        nodes=[node("n", 1)],
        jobs=[job("10", 1, at=5.0), job("9", 1, at=5.0)],
        starts=[Start("9", "n", (0,))],
        reasons={"10": ["Resources"]},
    ),
    "scavenger after normal even if submitted earlier": Case(
        nodes=[node("n", 1)],
        jobs=[job("1", 1, at=1.0, qos="scavenger"), job("2", 1, at=50.0)],
        starts=[Start("2", "n", (0,))],
        reasons={"1": ["Resources"]},
    ),
    "a small job behind a blocked big one still starts": Case(
        nodes=[node("n", 4, free=(0, 1))],
        jobs=[job("1", 4), job("2", 2)],
        starts=[Start("2", "n", (0, 1))],
        reasons={"1": ["Resources"]},
    ),
    "several jobs fill several nodes without overlap": Case(
        nodes=[node("a", 2), node("b", 4)],
        jobs=[job("1", 2), job("2", 2), job("3", 2), job("4", 1)],
        starts=[Start("1", "a", (0, 1)), Start("2", "b", (0, 1)), Start("3", "b", (2, 3))],
        reasons={"4": ["Resources"]},
    ),
    "no nodes at all": Case(
        nodes=[],
        jobs=[job("1", 1)],
        starts=[],
        reasons={"1": ["Resources"]},
    ),
    "empty queue decides nothing": Case(nodes=[node("n", 4)], jobs=[], starts=[]),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_schedule_case(case: Case) -> None:
    decisions = schedule(snap(case.nodes, case.jobs))
    assert decisions.starts == case.starts
    assert {k: [r.code for r in v] for k, v in decisions.reasons.items()} == case.reasons


def test_jobs_behind_a_blocked_job_are_told_their_place() -> None:
    decisions = schedule(snap([node("n", 1, free=())], [job("1"), job("2"), job("3")]))
    assert decisions.starts == []
    assert codes(decisions, "1") == ["Resources"]
    assert decisions.reasons["2"][-1] == Reason("Priority", "1 job(s) ahead in line also wait")
    assert decisions.reasons["3"][-1] == Reason("Priority", "2 job(s) ahead in line also wait")


def test_a_place_far_back_is_rounded_so_the_head_starting_rewrites_few_reasons() -> None:
    jobs = [job(str(i)) for i in range(1, 2001)]
    before = schedule(snap([node("n", 1, free=())], jobs)).reasons
    after = schedule(snap([node("n", 1, free=())], jobs[1:])).reasons  # the head started
    assert after["2"] == [Reason("Resources", after["2"][0].detail)]  # the new head
    assert after["101"][-1].detail == "99 job(s) ahead in line also wait"  # exact near it
    assert after["1500"][-1].detail == "about 1,500 jobs ahead in line also wait"
    assert before["1500"][-1].detail == "about 1,500 jobs ahead in line also wait"
    changed = [j for j in after if after[j] != before[j]]
    # of 1,999 (every one, told exactly): the 100 nearest the head, one in ten of the next
    # 900 (told in tens), one in a hundred of the rest
    assert len(changed) <= 100 + 90 + 10
    assert all(after[j][-1].detail.startswith("about") for j in ("110", "1000", "2000"))


def test_started_jobs_do_not_count_as_ahead_in_line() -> None:
    decisions = schedule(snap([node("n", 2)], [job("1"), job("2", 4), job("3"), job("4", 4)]))
    assert [s.job_id for s in decisions.starts] == ["1", "3"]
    assert codes(decisions, "2") == ["Resources"]
    assert decisions.reasons["4"][-1].detail == "1 job(s) ahead in line also wait"


def test_resources_reason_says_how_many_are_free() -> None:
    decisions = schedule(snap([node("n", 4, free=(0,)), node("m", 4, free=(1, 2))], [job("1", 3)]))
    (reason,) = decisions.reasons["1"]
    assert reason.code == "Resources"
    assert "needs 3 GPUs" in reason.detail and "at most 2 free now" in reason.detail


def test_resources_reason_counts_only_free_gpus_of_the_requested_type() -> None:
    nodes = [node("rtx", 8, RTX), node("a", 4, A100, free=(3,))]
    (reason,) = schedule(snap(nodes, [job("1", 2, gpu_type="a100")])).reasons["1"]
    assert "at most 1 free now" in reason.detail


def test_unknown_type_reason_names_the_type() -> None:
    (reason,) = schedule(snap([node("a", 4)], [job("1", gpu_type="v100")])).reasons["1"]
    assert reason == Reason("GpuTypeUnavailable", "no node has GPUs of type v100")


def test_untyped_job_with_no_nodes_is_not_told_type_none() -> None:
    (reason,) = schedule(snap([], [job("1")])).reasons["1"]
    assert "None" not in reason.detail


def test_too_big_reason_says_no_up_node_has_that_many() -> None:
    (reason,) = schedule(snap([node("a", 4), node("b", 16, up=False)], [job("1", 8)])).reasons["1"]
    assert reason.code == "Resources"
    assert "no node that is up has that many" in reason.detail


def test_schedule_does_not_mutate_the_snapshot() -> None:
    nodes = [node("a", 4)]
    snapshot = snap(nodes, [job("1", 2)])
    schedule(snapshot)
    assert snapshot.nodes[0].free == (0, 1, 2, 3)


def test_order_queue_sorts_by_qos_then_time_then_id() -> None:
    jobs = (job("5", at=1.0, qos="scavenger"), job("12", at=3.0), job("2", at=3.0),
            job("7", at=2.0))
    assert [j.id for j in order_queue(jobs)] == ["7", "2", "12", "5"]


def test_best_fit_returns_none_when_nothing_fits() -> None:
    assert best_fit(job("1", 3), [node("a", 2), node("b", 8, up=False)]) is None


# ------------------------------------------------------------------------------ properties

MODELS = (A100, H100, RTX)
TYPES = (None, None, "a100", "H100", "rtx3090", "b200")
MODELS_OF_TYPE = {"a100": {A100}, "H100": {H100}, "rtx3090": {RTX}, "b200": set()}


@st.composite
def nodes_strategy(draw: st.DrawFn) -> list[NodeView]:
    count = draw(st.integers(min_value=0, max_value=5))
    result = []
    for i in range(count):
        total = draw(st.integers(min_value=1, max_value=8))
        free = draw(st.sets(st.integers(min_value=0, max_value=total - 1)))
        result.append(node(f"n{i}", total, draw(st.sampled_from(MODELS)), tuple(sorted(free)),
                           up=draw(st.booleans())))
    return result


@st.composite
def jobs_strategy(draw: st.DrawFn) -> list[PendingJob]:
    count = draw(st.integers(min_value=0, max_value=15))
    return [
        job(str(i + 1), gpus=draw(st.integers(min_value=1, max_value=9)),
            at=float(draw(st.integers(min_value=0, max_value=5))),
            gpu_type=draw(st.sampled_from(TYPES)),
            qos=draw(st.sampled_from(("normal", "scavenger"))))
        for i in range(count)
    ]


snapshots = st.builds(snap, nodes_strategy(), jobs_strategy())


@settings(max_examples=300, deadline=None)
@given(snapshots)
def test_no_gpu_is_given_twice_nor_more_than_free(snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)
    taken: set[tuple[str, int]] = set()
    per_node: dict[str, int] = {}
    for start in decisions.starts:
        for idx in start.indices:
            assert (start.node, idx) not in taken
            taken.add((start.node, idx))
        per_node[start.node] = per_node.get(start.node, 0) + len(start.indices)
    free = {n.name: len(n.free) for n in snapshot.nodes}
    for name, used in per_node.items():
        assert used <= free[name]


@settings(max_examples=300, deadline=None)
@given(snapshots)
def test_every_start_fits_its_job_and_node(snapshot: Snapshot) -> None:
    nodes = {n.name: n for n in snapshot.nodes}
    jobs = {j.id: j for j in snapshot.pending}
    for start in schedule(snapshot).starts:
        target, wanted = nodes[start.node], jobs[start.job_id]
        assert target.up
        assert set(start.indices) <= set(target.free)
        assert len(start.indices) == len(set(start.indices)) == wanted.gpus
        if wanted.gpu_type is not None:
            assert target.gpu_model in MODELS_OF_TYPE[wanted.gpu_type]


@settings(max_examples=300, deadline=None)
@given(snapshots)
def test_every_job_is_started_once_or_has_a_reason(snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)
    started = [s.job_id for s in decisions.starts]
    assert len(started) == len(set(started))
    for pending in snapshot.pending:
        has_reasons = bool(decisions.reasons.get(pending.id))
        assert (pending.id in started) != has_reasons, pending.id
    assert set(decisions.reasons) <= {j.id for j in snapshot.pending}


@settings(max_examples=300, deadline=None)
@given(snapshots)
def test_work_conservation_no_waiting_job_fits_what_is_left(snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)
    left = {n.name: set(n.free) for n in snapshot.nodes}
    for start in decisions.starts:
        left[start.node] -= set(start.indices)
    remaining = tuple(
        NodeView(n.name, n.gpu_model, n.gpus_total, tuple(sorted(left[n.name])), n.up)
        for n in snapshot.nodes
    )
    for pending in snapshot.pending:
        if pending.id in decisions.reasons:
            assert best_fit(pending, remaining) is None, pending.id


@settings(max_examples=200, deadline=None)
@given(snapshots)
def test_schedule_is_deterministic_and_order_independent(snapshot: Snapshot) -> None:
    first = schedule(snapshot)
    shuffled = Snapshot(
        tuple(reversed(snapshot.nodes)), tuple(reversed(snapshot.pending)), snapshot.now
    )
    second = schedule(shuffled)
    assert first.starts == second.starts
    assert first.reasons == second.reasons


def _random_snapshot(rng: random.Random) -> Snapshot:
    """A random snapshot with the features that change decisions: typed and down nodes,
    running normal and scavenger jobs, caps, fair share (or none) and an account budget."""
    nodes = []
    for i in range(rng.randint(1, 4)):
        total = rng.choice([2, 4, 8])
        free = tuple(sorted(rng.sample(range(total), rng.randint(0, total))))
        nodes.append(NodeView(f"n{i}", rng.choice(["A100", "V100"]), total, free,
                              rng.random() > 0.1, rng.choice([1.0, 2.0])))
    users = [(f"u{k}", f"acc{k % 3}") for k in range(5)]
    pending = []
    for j in range(rng.randint(0, 25)):
        u, a = rng.choice(users)
        pending.append(PendingJob(str(j + 1), u, a, rng.choice([1, 1, 2, 4, 8]),
                                  rng.uniform(0, 1000), rng.choice([None, "A100", "V100"]),
                                  rng.choice(["normal", "normal", "scavenger"]),
                                  rng.choice([600, 3600, 7200])))
    running = []
    for j in range(rng.randint(0, 6)):
        u, a = rng.choice(users)
        n = rng.choice(nodes)
        running.append(RunningJob(f"r{j}", u, a, rng.choice([1, 2]), n.name,
                                  tuple(rng.sample(range(n.gpus_total), 1)),
                                  rng.uniform(1000, 9000), rng.choice(["normal", "scavenger"]),
                                  1.0))
    limits = Limits(user_gpus={u: rng.randint(1, 8) for u, _ in users if rng.random() < 0.3},
                    account_gpus={a: rng.randint(2, 12) for _, a in users if rng.random() < 0.3})
    algorithm = rng.choice([FAIR_TREE, CLASSIC, None])
    shares = None
    if algorithm:
        usage = {(a, u): rng.uniform(0, 1e5) for u, a in users if rng.random() < 0.7}
        shares = ShareInputs(tuple(Account(f"acc{k}", "root", rng.choice([1.0, 2.0, 3.0]))
                                   for k in range(3)),
                             tuple(Assoc(u, a, 1.0) for u, a in users), usage, algorithm)
    budgets = None
    if rng.random() < 0.5:
        budgets = BudgetState((Budget("account", "acc0", rng.uniform(0, 4e4), 0.0, math.inf,
                                      "month"),), {}, {})
    return Snapshot(tuple(nodes), tuple(pending), 500.0, tuple(running), limits, shares,
                    budgets)


def test_explain_false_gives_the_same_starts_and_preemptions() -> None:
    # The simulator calls schedule(..., explain=False), which stops walking the queue early;
    # it must decide exactly what the coordinator's explain=True call decides.
    rng = random.Random(1)
    with_work = 0
    for _ in range(3000):
        snapshot = _random_snapshot(rng)
        full = schedule(snapshot)
        quick = schedule(snapshot, max_estimates=0, explain=False)
        assert quick.starts == full.starts
        assert [(p.for_job, p.node, tuple(p.victims)) for p in quick.preemptions] == [
            (p.for_job, p.node, tuple(p.victims)) for p in full.preemptions]
        with_work += bool(full.starts) and bool(full.preemptions or len(full.reasons) > 1)
    assert with_work > 100  # the generator makes snapshots where the early stop matters


def test_schedule_pauses_the_garbage_collector_and_restores_its_state(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    snap = Snapshot((NodeView("n1", A100, 1, (0,)),), (PendingJob("1", "u", "lab", 1, 0.0),),
                    now=1.0)
    seen: list[bool] = []
    original = policy_cycle.decide

    def spy(snapshot: Snapshot, max_estimates: int, explain: bool,
            fairshare: FairShare | None, more: More | None) -> Decisions:
        seen.append(gc.isenabled())
        return original(snapshot, max_estimates, explain, fairshare, more)

    monkeypatch.setattr(policy_cycle, "decide", spy)
    try:
        assert gc.isenabled()
        assert schedule(snap).starts  # it still decides
        assert gc.isenabled()  # enabled again after the cycle
        gc.disable()
        schedule(snap)
        assert not gc.isenabled()  # a caller's own pause is kept
    finally:
        gc.enable()
    assert seen == [False, False]  # paused while deciding
