"""The policy and unhealthy GPUs: a GPU the agent reports unhealthy is never free, not even
when the job on it ends, so no reservation, backfill estimate or preemption counts on it."""

from __future__ import annotations

from scheduler.policy import NodeView, PendingJob, RunningJob, Snapshot, schedule

NOW = 1_000_000.0


def node(free: tuple[int, ...], unhealthy: tuple[int, ...] = ()) -> NodeView:
    return NodeView("n1", "A100", 4, free, unhealthy=unhealthy)


def test_a_job_ending_on_an_unhealthy_gpu_frees_nothing_for_a_reservation() -> None:
    """GPU 3 is unhealthy and held by R (ends in 100 s); GPUs 0-2 are free. A 4-GPU job can
    never run here, so it reserves nothing, and a small job behind it starts at once."""
    running = (RunningJob("r", "u", "a", 1, "n1", (3,), NOW + 100),)
    big = PendingJob("big", "u", "a", 4, NOW - 50, time_limit_s=3600)
    small = PendingJob("small", "v", "a", 1, NOW - 10, time_limit_s=3600)
    decisions = schedule(Snapshot((node((0, 1, 2), unhealthy=(3,)),), (big, small), NOW,
                                  running))
    assert decisions.reservation is None
    assert [s.job_id for s in decisions.starts] == ["small"]
    [reason] = decisions.reasons["big"]
    assert "unhealthy" in reason.detail
    assert "big" not in decisions.estimates


def test_the_same_cluster_healthy_reserves_for_the_big_job() -> None:
    """Control: with GPU 3 healthy, R's end frees it and the big job reserves the node."""
    running = (RunningJob("r", "u", "a", 1, "n1", (3,), NOW + 100),)
    big = PendingJob("big", "u", "a", 4, NOW - 50, time_limit_s=3600)
    small = PendingJob("small", "v", "a", 1, NOW - 10, time_limit_s=3600)
    decisions = schedule(Snapshot((node((0, 1, 2)),), (big, small), NOW, running))
    assert decisions.reservation is not None and decisions.reservation.job_id == "big"
    assert decisions.starts == []


def test_no_scavenger_is_preempted_for_gpus_that_would_stay_unusable() -> None:
    """A scavenger job holds GPUs 2 and 3, and GPU 3 is unhealthy: preempting it frees one
    usable GPU, so a normal 4-GPU job cannot fit and nothing is preempted; a 3-GPU job can."""
    scav = (RunningJob("s", "x", "a", 2, "n1", (2, 3), NOW + 9999, qos="scavenger"),)
    four = PendingJob("four", "u", "a", 4, NOW - 5)
    decisions = schedule(Snapshot((node((0, 1), unhealthy=(3,)),), (four,), NOW, scav))
    assert decisions.preemptions == []
    three = PendingJob("three", "u", "a", 3, NOW - 5)
    decisions = schedule(Snapshot((node((0, 1), unhealthy=(3,)),), (three,), NOW, scav))
    assert [p.victims for p in decisions.preemptions] == [("s",)]
