"""Backfill under a reservation for the top blocked job, and estimated start times."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy import Limits, NodeView, PendingJob, RunningJob, Snapshot, Start, schedule
from scheduler.policy.backfill import Reservation, Timeline, utc
from scheduler.policy.cycle import Decisions
from scheduler.policy.placement import FreePool, best_fit, fits_type
from scheduler.policy.ranking import order_queue

A100 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"
RTX = "NVIDIA GeForce RTX 3090"
NOW = 1_000_000.0
INF = math.inf


# ------------------------------------------------------------------------------ builders


def node(name: str, total: int, free: tuple[int, ...] | None = None, model: str = A100,
         up: bool = True) -> NodeView:
    return NodeView(name, model, total, tuple(range(total)) if free is None else free, up)


def run(job_id: str, where: str, indices: tuple[int, ...], ends_in: float = INF,
        user: str = "zed") -> RunningJob:
    """A running job holding `indices` on `where` until NOW + `ends_in`."""
    return RunningJob(job_id, user, "lab", len(indices), where, indices, NOW + ends_in)


def job(job_id: str, gpus: int = 1, limit: int = 3600, gpu_type: str | None = None,
        user: str = "alice") -> PendingJob:
    return PendingJob(job_id, user, "lab", gpus, float(job_id), gpu_type, "normal", limit)


def snap(nodes: list[NodeView], jobs: list[PendingJob], running: list[RunningJob] | None = None,
         limits: Limits | None = None) -> Snapshot:
    return Snapshot(tuple(nodes), tuple(jobs), NOW, tuple(running or ()), limits or Limits())


def codes(decisions: Decisions) -> dict[str, list[str]]:
    return {k: [r.code for r in v] for k, v in decisions.reasons.items()}


# ------------------------------------------------------------------------------ table of cases


@dataclass
class Case:
    """A snapshot and what must come out. Times are seconds after NOW."""

    nodes: list[NodeView]
    running: list[RunningJob]
    jobs: list[PendingJob]
    starts: list[Start]
    reservation: tuple[str, str, tuple[int, ...], float] | None  # job, node, GPUs, start
    reasons: dict[str, list[str]] = field(default_factory=dict)
    estimates: dict[str, float] | None = None  # None: not checked
    limits: Limits | None = None


CASES: dict[str, Case] = {
    "reservation: the GPUs that free up earliest, ties to the lowest index": Case(
        nodes=[node("a", 4, free=())],
        running=[run("r1", "a", (0, 1), 100), run("r2", "a", (2,), 50), run("r3", "a", (3,), 200)],
        jobs=[job("1", 2)],
        starts=[],
        reservation=("1", "a", (0, 2), 100),
        reasons={"1": ["Resources"]},
        estimates={"1": 100},
    ),
    "reservation: the node free first wins over a bigger one free later": Case(
        nodes=[node("big", 8, free=()), node("small", 4, free=(0,))],
        running=[run("r1", "big", tuple(range(8)), 50), run("r2", "small", (1, 2, 3), 500)],
        jobs=[job("1", 4)],
        starts=[],
        reservation=("1", "big", (0, 1, 2, 3), 50),
        reasons={"1": ["Resources"]},
    ),
    "reservation: same time, best fit (fewest GPUs free by then)": Case(
        nodes=[node("a", 4, free=()), node("b", 2, free=())],
        running=[run("r1", "a", (0, 1, 2, 3), 100), run("r2", "b", (0, 1), 100)],
        jobs=[job("1", 2)],
        starts=[],
        reservation=("1", "b", (0, 1), 100),
        reasons={"1": ["Resources"]},
    ),
    "reservation: same time and fit, the first name": Case(
        nodes=[node("zed", 2, free=()), node("amy", 2, free=())],
        running=[run("r1", "zed", (0, 1), 100), run("r2", "amy", (0, 1), 100)],
        jobs=[job("1", 2)],
        starts=[],
        reservation=("1", "amy", (0, 1), 100),
        reasons={"1": ["Resources"]},
    ),
    "a short lower job backfills onto reserved GPUs when it ends before T": Case(
        nodes=[node("a", 4, free=(2, 3))],
        running=[run("r1", "a", (0, 1), 7200)],
        jobs=[job("1", 4), job("2", 2, limit=3600)],
        starts=[Start("2", "a", (2, 3))],
        reservation=("1", "a", (0, 1, 2, 3), 7200),
        reasons={"1": ["Resources"]},
    ),
    "a lower job that ends exactly at T may use reserved GPUs": Case(
        nodes=[node("a", 4, free=(2, 3))],
        running=[run("r1", "a", (0, 1), 7200)],
        jobs=[job("1", 4), job("2", 1, limit=7200)],
        starts=[Start("2", "a", (2,))],
        reservation=("1", "a", (0, 1, 2, 3), 7200),
        reasons={"1": ["Resources"]},
    ),
    "a long lower job does not backfill and waits for the reservation": Case(
        nodes=[node("a", 4, free=(2, 3))],
        running=[run("r1", "a", (0, 1), 7200)],
        jobs=[job("1", 4, limit=3600), job("2", 2, limit=3 * 3600)],
        starts=[],
        reservation=("1", "a", (0, 1, 2, 3), 7200),
        reasons={"1": ["Resources"], "2": ["Reservation", "Priority"]},
        # job 1 holds a from 7200 to 10800; job 2 follows it.
        estimates={"1": 7200, "2": 10800},
    ),
    "a lower job on another node starts regardless of its length": Case(
        nodes=[node("a", 4, free=(2, 3)), node("b", 2)],
        running=[run("r1", "a", (0, 1), 7200)],
        jobs=[job("1", 4), job("2", 2, limit=10 * 3600), job("3", 2, limit=10 * 3600)],
        starts=[Start("2", "b", (0, 1))],
        reservation=("1", "a", (0, 1, 2, 3), 7200),
        reasons={"1": ["Resources"], "3": ["Reservation", "Priority"]},
    ),
    "a backfilled job prefers GPUs outside the reservation": Case(
        nodes=[node("a", 4, free=(2, 3)), node("b", 4, free=(3,))],
        running=[run("r1", "a", (0, 1), 7200), run("r2", "b", (0, 1, 2), 9000)],
        jobs=[job("1", 4), job("2", 1, limit=60)],
        starts=[Start("2", "b", (3,))],
        reservation=("1", "a", (0, 1, 2, 3), 7200),
        reasons={"1": ["Resources"]},
    ),
    "jobs started earlier in the cycle count in T": Case(
        nodes=[node("a", 4)],
        running=[],
        jobs=[job("1", 2, limit=3600), job("2", 4, limit=3600), job("3", 2, limit=7200)],
        starts=[Start("1", "a", (0, 1))],
        reservation=("2", "a", (0, 1, 2, 3), 3600),
        reasons={"2": ["Resources"], "3": ["Reservation", "Priority"]},
        estimates={"2": 3600, "3": 7200},
    ),
    "no reservation when no node of the type is big enough": Case(
        nodes=[node("a", 4, free=(0, 1), model=RTX), node("h", 8, model=H100)],
        running=[run("r1", "a", (2, 3), 100)],
        jobs=[job("1", 8, gpu_type="rtx3090"), job("2", 2, limit=10 * 3600, gpu_type="rtx3090")],
        starts=[Start("2", "a", (0, 1))],
        reservation=None,
        reasons={"1": ["Resources"]},
        estimates={},
    ),
    "no reservation when the GPUs are held for ever": Case(
        nodes=[node("a", 2, free=(0,))],
        running=[run("r1", "a", (1,))],  # no end
        jobs=[job("1", 2), job("2", 1, limit=10 * 3600)],
        starts=[Start("2", "a", (0,))],
        reservation=None,
        reasons={"1": ["Resources"]},
        estimates={},
    ),
    "a busy GPU no known job holds is never free": Case(
        nodes=[node("a", 2, free=(0,))],
        running=[],
        jobs=[job("1", 2)],
        starts=[],
        reservation=None,
        reasons={"1": ["Resources"]},
        estimates={},
    ),
    "a job that can never run does not take the reservation from the next": Case(
        nodes=[node("a", 4, free=(2, 3))],
        running=[run("r1", "a", (0, 1), 600)],
        jobs=[job("1", 16), job("2", 4), job("3", 2, limit=3600)],
        starts=[],
        reservation=("2", "a", (0, 1, 2, 3), 600),
        reasons={"1": ["Resources"], "2": ["Resources", "Priority"],
                 "3": ["Reservation", "Priority"]},
        estimates={"2": 600, "3": 4200},
    ),
    "a job held by a cap gets no reservation and no estimate": Case(
        nodes=[node("a", 4, free=(2, 3))],
        running=[run("r1", "a", (0, 1), 600, user="alice")],
        jobs=[job("1", 4, user="alice"), job("2", 4, user="bob")],
        starts=[],
        reservation=("2", "a", (0, 1, 2, 3), 600),
        reasons={"1": ["UserGpuLimit", "Resources"], "2": ["Resources"]},
        estimates={"2": 600},
        limits=Limits(user_gpus={"alice": 2}),
    ),
    "a down node is not reserved": Case(
        nodes=[node("a", 4, free=(), up=False), node("b", 4, free=())],
        running=[run("r1", "a", (0, 1, 2, 3), 10), run("r2", "b", (0, 1, 2, 3), 900)],
        jobs=[job("1", 4)],
        starts=[],
        reservation=("1", "b", (0, 1, 2, 3), 900),
        reasons={"1": ["Resources"]},
    ),
    "a running job past its end frees its GPUs now at the latest": Case(
        nodes=[node("a", 2, free=(0,))],
        running=[run("r1", "a", (1,), -30)],
        jobs=[job("1", 2), job("2", 1, limit=60)],
        starts=[],
        reservation=("1", "a", (0, 1), 0),
        reasons={"1": ["Resources"], "2": ["Reservation", "Priority"]},
        estimates={"1": 0, "2": 3600},
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_backfill_case(case: Case) -> None:
    decisions = schedule(snap(case.nodes, case.jobs, case.running, case.limits))
    assert decisions.starts == case.starts
    expected = None
    if case.reservation is not None:
        job_id, where, indices, start = case.reservation
        expected = Reservation(job_id, where, indices, NOW + start)
    assert decisions.reservation == expected
    assert codes(decisions) == case.reasons
    if case.estimates is not None:
        assert decisions.estimates == {k: NOW + v for k, v in case.estimates.items()}


def estimates_cluster() -> Snapshot:
    """a: 2 GPUs, free at +100 and +300; b: 4 GPUs, all free at +200."""
    nodes = [node("a", 2, free=()), node("b", 4, free=())]
    running = [run("r1", "a", (0,), 100), run("r2", "a", (1,), 300),
               run("r3", "b", (0, 1, 2, 3), 200)]
    jobs = [job("1", 4, limit=1000), job("2", 1, limit=1000), job("3", 2, limit=500),
            job("4", 1, limit=100), job("5", 4, limit=100)]
    return snap(nodes, jobs, running)


def test_estimates_match_hand_computed_times() -> None:
    decisions = schedule(estimates_cluster())
    # 1: b at +200 (reserved), b busy to +1200. 2: a GPU 0 at +100, busy to +1100.
    # 3: both of a: max(+1100, +300) = +1100, a busy to +1600. 4: b GPU 0 at +1200 (before
    # a's +1600), busy to +1300. 5: all of b: +1300.
    assert decisions.reservation == Reservation("1", "b", (0, 1, 2, 3), NOW + 200)
    assert decisions.estimates == {"1": NOW + 200, "2": NOW + 100, "3": NOW + 1100,
                                   "4": NOW + 1200, "5": NOW + 1300}


def test_estimates_are_bounded_by_max_estimates_but_keep_the_reserved_job() -> None:
    snapshot = estimates_cluster()
    assert set(schedule(snapshot, max_estimates=2).estimates) == {"1", "2"}
    assert schedule(snapshot, max_estimates=0).estimates == {"1": NOW + 200}


def test_jobs_beyond_max_estimates_are_still_decided() -> None:
    decisions = schedule(estimates_cluster(), max_estimates=1)
    assert set(decisions.reasons) == {"1", "2", "3", "4", "5"}


def test_reservation_reason_names_the_job_the_time_and_the_node() -> None:
    case = CASES["a long lower job does not backfill and waits for the reservation"]
    decisions = schedule(snap(case.nodes, case.jobs, case.running))
    reason = decisions.reasons["2"][0]
    assert reason.detail == f"would delay job 1, reserved to start at {utc(NOW + 7200)} on a"
    assert utc(NOW + 7200) == "1970-01-12T15:46:40Z"
    assert decisions.reasons["1"][0].detail.endswith(f"; GPUs reserved from {utc(NOW + 7200)} on a")


def test_started_jobs_have_no_estimate() -> None:
    case = CASES["a short lower job backfills onto reserved GPUs when it ends before T"]
    decisions = schedule(snap(case.nodes, case.jobs, case.running))
    assert set(decisions.estimates) == {"1"}


def test_a_running_job_without_indices_holds_the_lowest_busy_gpus() -> None:
    timeline = Timeline([node("a", 4, free=(1,))],
                        [RunningJob("r", "u", "lab", 2, "a", (), NOW + 50)], NOW)
    assert timeline.times["a"] == [NOW + 50, NOW, NOW + 50, INF]


def test_the_free_list_wins_over_a_running_job_that_claims_a_free_gpu() -> None:
    timeline = Timeline([node("a", 2, free=(0,))], [run("r", "a", (0, 1), 50)], NOW)
    assert timeline.times["a"] == [NOW, NOW + 50]


def test_pool_reserve_hides_reserved_gpus_from_best_fit_only() -> None:
    pool = FreePool([node("a", 4, free=(0, 1, 2)), node("b", 4, free=(0, 1))])
    pool.reserve("a", (1, 2, 3))
    placement = pool.best_fit(2, None)
    assert placement is not None and placement.node == "b"
    assert pool.best_fit(3, None) is None
    assert pool.fits(3, None) and not pool.fits(4, None)
    assert pool.most_free(None) == 3
    assert pool.free_on("a") == (0, 1, 2)
    single = pool.best_fit(1, None)
    assert single is not None and single.indices == (0,)  # a has 1 open GPU: the best fit
    with pytest.raises(ValueError):
        pool.reserve("b", (0,))


# ------------------------------------------------------------------------------ properties

MODELS = (A100, H100, RTX)
TYPES = (None, None, "a100", "H100", "rtx3090", "b200")
ENDS = (-10.0, 50.0, 100.0, 500.0, 1000.0, 3600.0, INF)
LIMITS = (50, 100, 500, 1000, 3600, 7200, 86400)
USERS = ("alice", "bob", "carol")


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[NodeView], list[RunningJob]]:
    """Nodes whose GPUs are free, held by a running job, or busy with no job we know of."""
    nodes, running = [], []
    for i in range(draw(st.integers(0, 4))):
        total = draw(st.integers(1, 8))
        states = draw(st.lists(st.sampled_from(("free", "free", "job", "job", "orphan")),
                               min_size=total, max_size=total))
        name = f"n{i}"
        up = draw(st.sampled_from((True, True, True, False)))
        nodes.append(node(name, total, tuple(g for g, s in enumerate(states) if s == "free"),
                          draw(st.sampled_from(MODELS)), up))
        held = [g for g, s in enumerate(states) if s == "job"]
        while held:
            size = draw(st.integers(1, len(held)))
            chunk, held = tuple(held[:size]), held[size:]
            running.append(run(f"r{i}.{chunk[0]}", name, chunk, draw(st.sampled_from(ENDS)),
                               user=draw(st.sampled_from(USERS))))
    return nodes, running


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    nodes, running = draw(clusters())
    jobs = [PendingJob(str(i + 1), draw(st.sampled_from(USERS)), "lab",
                       draw(st.integers(1, 9)), float(draw(st.integers(0, 5))),
                       draw(st.sampled_from(TYPES)), "normal", draw(st.sampled_from(LIMITS)))
            for i in range(draw(st.integers(0, 12)))]
    caps = draw(st.dictionaries(st.sampled_from(USERS), st.integers(0, 8), max_size=2))
    return snap(nodes, jobs, running, Limits(user_gpus=caps))


def free_times(snapshot: Snapshot, decisions: Decisions) -> dict[str, list[float]]:
    """Each UP GPU's free time after the cycle's starts, computed from scratch."""
    times = {n.name: [INF] * n.gpus_total for n in snapshot.nodes if n.up}
    for r in snapshot.running:
        for g in r.indices:
            if r.node in times:
                times[r.node][g] = max(r.ends_at, snapshot.now)
    for n in snapshot.nodes:
        for g in n.free:
            if n.up:
                times[n.name][g] = snapshot.now
    limits = {j.id: j.time_limit_s for j in snapshot.pending}
    for s in decisions.starts:
        for g in s.indices:
            times[s.node][g] = snapshot.now + limits[s.job_id]
    return times


def naive_slot(wanted: PendingJob, snapshot: Snapshot, times: dict[str, list[float]]
               ) -> tuple[float, str, tuple[int, ...]] | None:
    """The earliest (start, node, GPUs) for the job, by trying every node."""
    best: tuple[float, int, str, tuple[int, ...]] | None = None
    for n in snapshot.nodes:
        if n.name not in times or n.gpus_total < wanted.gpus or not fits_type(wanted, n):
            continue
        ranked = sorted(range(n.gpus_total), key=lambda g: (times[n.name][g], g))
        start = times[n.name][ranked[wanted.gpus - 1]]
        if start == INF:
            continue
        key = (start, sum(1 for t in times[n.name] if t <= start), n.name,
               tuple(sorted(ranked[: wanted.gpus])))
        if best is None or key < best:
            best = key
    return None if best is None else (best[0], best[2], best[3])


def capped(decisions: Decisions, job_id: str) -> bool:
    return any(r.code in ("UserGpuLimit", "AccountGpuLimit") for r in decisions.reasons[job_id])


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_no_gpu_is_allocated_twice_and_only_free_gpus(snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)
    free = {(n.name, g) for n in snapshot.nodes if n.up for g in n.free}
    taken = [(s.node, g) for s in decisions.starts for g in s.indices]
    assert len(taken) == len(set(taken))
    assert set(taken) <= free
    started = {s.job_id for s in decisions.starts}
    for pending in snapshot.pending:
        assert (pending.id in started) != bool(decisions.reasons.get(pending.id))


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_starting_the_decided_jobs_never_delays_the_reservation(snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)
    res = decisions.reservation
    if res is None:
        return
    jobs = {j.id: j for j in snapshot.pending}
    times = free_times(snapshot, decisions)
    # The reserved GPUs are all free by T, with every decided job started ...
    assert max(times[res.node][g] for g in res.indices) == res.start
    # ... and T is still the earliest the reserved job could start anywhere (the GPUs that
    # would be chosen now may differ: a backfilled job can end exactly when others do).
    slot = naive_slot(jobs[res.job_id], snapshot, times)
    assert slot is not None and slot[0] == res.start
    assert [r.code for r in decisions.reasons[res.job_id]][0] == "Resources"


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_the_reservation_goes_to_the_first_blocked_job_that_can_ever_start(
        snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)
    times = free_times(snapshot, decisions)
    started = {s.job_id for s in decisions.starts}
    first = next((j.id for j in order_queue(snapshot.pending)
                  if j.id not in started and not capped(decisions, j.id)
                  and naive_slot(j, snapshot, times) is not None), None)
    # A job held back by the reservation comes after the reserved one, so `first` is it.
    assert (decisions.reservation.job_id if decisions.reservation else None) == first


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_work_conservation_only_caps_and_the_reservation_leave_gpus_idle(
        snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)
    left = {n.name: set(n.free) for n in snapshot.nodes}
    for s in decisions.starts:
        left[s.node] -= set(s.indices)
    remaining = [NodeView(n.name, n.gpu_model, n.gpus_total, tuple(sorted(left[n.name])), n.up)
                 for n in snapshot.nodes]
    for pending in snapshot.pending:
        if pending.id in decisions.reasons and best_fit(pending, remaining) is not None:
            found = {r.code for r in decisions.reasons[pending.id]}
            assert found & {"UserGpuLimit", "AccountGpuLimit", "Reservation"}, pending.id


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_estimates_are_not_before_now_and_the_reserved_job_starts_at_t(
        snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)
    started = {s.job_id for s in decisions.starts}
    assert all(t >= snapshot.now for t in decisions.estimates.values())
    assert not set(decisions.estimates) & started
    assert not any(capped(decisions, j) for j in decisions.estimates)
    res = decisions.reservation
    assert bool(decisions.estimates) == (res is not None)
    if res is not None:
        assert decisions.estimates[res.job_id] == res.start


@settings(max_examples=300, deadline=None)
@given(snapshots(), st.integers(0, 12))
def test_estimates_match_a_naive_simulation(snapshot: Snapshot, limit: int) -> None:
    """Every waiting job in priority order takes the node where its GPUs free up first."""
    decisions = schedule(snapshot, max_estimates=limit)
    times = free_times(snapshot, decisions)
    jobs = {j.id: j for j in snapshot.pending}
    expected: dict[str, float] = {}
    res = decisions.reservation
    if res is not None:
        expected[res.job_id] = res.start
        for g in res.indices:
            times[res.node][g] = res.start + jobs[res.job_id].time_limit_s
    waiting = [j for j in order_queue(snapshot.pending)
               if j.id in decisions.reasons and not capped(decisions, j.id)]
    for wanted in waiting[:limit]:
        if wanted.id in expected:
            continue
        slot = naive_slot(wanted, snapshot, times)
        if slot is None:
            continue
        start, where, indices = slot
        expected[wanted.id] = start
        for g in indices:
            times[where][g] = start + wanted.time_limit_s
    assert decisions.estimates == expected


@settings(max_examples=200, deadline=None)
@given(snapshots())
def test_backfill_is_deterministic_and_order_independent(snapshot: Snapshot) -> None:
    first = schedule(snapshot)
    shuffled = Snapshot(tuple(reversed(snapshot.nodes)), tuple(reversed(snapshot.pending)),
                        snapshot.now, tuple(reversed(snapshot.running)), snapshot.limits)
    second = schedule(shuffled)
    assert (first.starts, first.reasons, first.reservation, first.estimates) == (
        second.starts, second.reasons, second.reservation, second.estimates)
