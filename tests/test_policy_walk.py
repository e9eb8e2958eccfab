"""The cycle's walk with jobs added as it goes (`decide`'s `more`, `scheduler.policy.walk`): a
caller that shows only part of its queue gets the decisions of the whole queue."""

from __future__ import annotations

import pytest

from scheduler.policy import NodeView, PendingJob, Snapshot, schedule
from scheduler.policy.backfill import Reservation
from scheduler.policy.fairshare import CLASSIC, Account, Assoc
from scheduler.policy.ranking import ordered
from scheduler.policy.snapshot import RunningJob, ShareInputs
from scheduler.policy.walk import Walk

A100 = "A100"


def _job(job_id: str, user: str, gpus: int, submitted: float, limit: int) -> PendingJob:
    return PendingJob(job_id, user, "lab", gpus, submitted, time_limit_s=limit)


def _snapshot(pending: tuple[PendingJob, ...], shares: ShareInputs | None = None) -> Snapshot:
    # n1: 2 of 4 GPUs free, the others until t=100; n2: all 4 busy until t=1000
    nodes = (NodeView("n1", A100, 4, (2, 3)), NodeView("n2", A100, 4, ()))
    running = (RunningJob("r1", "x", "lab", 2, "n1", (0, 1), 100.0),
               RunningJob("r2", "x", "lab", 4, "n2", (0, 1, 2, 3), 1000.0))
    return Snapshot(nodes, pending, 0.0, running, shares=shares)


BIG = _job("1", "a", 4, 0.0, 3600)  # waits for n1: reserved from t=100
LONG = _job("2", "u", 1, 1.0, 500)  # fits on n1's free GPUs, but would delay the reserved job
SHORT = [_job("3", "u", 1, 2.0, 50), _job("5", "u", 1, 3.0, 50), _job("6", "u", 1, 4.0, 40)]
OTHER = _job("4", "v", 1, 2.5, 50)  # another user's, between u's short jobs


@pytest.mark.parametrize("shares", [None, ShareInputs(
    (Account("lab", "root", 1.0),), (Assoc("u", "lab", 1.0), Assoc("v", "lab", 1.0),
                                     Assoc("a", "lab", 1.0), Assoc("x", "lab", 1.0)),
    {("lab", "u"): 5.0, ("lab", "v"): 50.0}, CLASSIC)])
def test_jobs_added_as_the_walk_goes_decide_as_the_whole_queue(
        shares: ShareInputs | None) -> None:
    whole = schedule(_snapshot((BIG, LONG, *SHORT, OTHER), shares), max_estimates=0,
                     explain=False)
    asked: list[tuple[str, Reservation]] = []

    def more(job: PendingJob, reservation: Reservation) -> list[PendingJob]:
        asked.append((job.id, reservation))
        return SHORT if job.id == LONG.id else []

    cut = schedule(_snapshot((BIG, LONG, OTHER), shares), max_estimates=0, explain=False,
                   more=more)
    assert [s.job_id for s in cut.starts] == [s.job_id for s in whole.starts]
    assert cut.starts == whole.starts
    assert cut.reservation == whole.reservation
    assert [job_id for job_id, _ in asked] == ["2"]  # only the job the reservation delayed
    assert asked[0][1] == whole.reservation
    if shares is None:  # by submit time: 3, then v's 4, then 5; 6 finds no room
        assert [s.job_id for s in cut.starts] == ["3", "4"]


def test_a_job_added_must_rank_after_the_job_walked() -> None:
    walk = Walk((LONG, OTHER), {}, None)
    met = iter(walk)
    assert next(met) is LONG
    walk.add(LONG, [SHORT[0]], [0.0])  # submitted after LONG: met next, before OTHER
    assert list(met) == [SHORT[0], OTHER]
    walk = Walk((SHORT[0], OTHER), {}, None)
    met = iter(walk)
    assert next(met) is SHORT[0]
    with pytest.raises(ValueError, match="ranks before"):
        walk.add(SHORT[0], [LONG], [0.0])


def test_the_walk_alone_is_the_queue_in_order() -> None:
    jobs = (OTHER, *SHORT, LONG, BIG)
    totals = {"3": 2.0, "6": 2.0, "1": -1.0}
    assert list(Walk(jobs, totals, None)) == ordered(jobs, totals, None)
    assert list(Walk(jobs, totals, {"5"})) == ordered(jobs, totals, {"5"})
