"""The cycle orders the queue by fair-share priority: light users before heavy ones."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy import NodeView, PendingJob, Snapshot, schedule
from scheduler.policy.fairengine import rank
from scheduler.policy.fairshare import Account, Assoc
from scheduler.policy.snapshot import ShareInputs


def inputs(usage: dict[tuple[str, str], float]) -> ShareInputs:
    return ShareInputs(
        accounts=(Account("lab", "root", 1.0),),
        assocs=(Assoc("heavy", "lab"), Assoc("light", "lab")),
        usage=usage,
    )


def test_new_user_runs_before_a_heavy_user_who_queued_first() -> None:
    node = NodeView("n1", "A100-80GB", 2, (0,))  # one GPU free
    pending = (PendingJob("1", "heavy", "lab", 1, 100.0), PendingJob("2", "light", "lab", 1, 200.0))
    snapshot = Snapshot((node,), pending, 300.0, shares=inputs({("lab", "heavy"): 5000.0}))
    decisions = schedule(snapshot)
    ranked = rank(snapshot).breakdown
    assert [s.job_id for s in decisions.starts] == ["2"]
    assert ranked["2"].total > ranked["1"].total
    assert ranked["2"].factors["fairshare"] == 1.0
    assert [r.code for r in decisions.reasons["1"]] == ["Resources"]


def test_without_usage_the_older_job_goes_first() -> None:
    node = NodeView("n1", "A100-80GB", 2, (0,))
    pending = (PendingJob("1", "heavy", "lab", 1, 100.0), PendingJob("2", "light", "lab", 1, 200.0))
    decisions = schedule(Snapshot((node,), pending, 86400.0, shares=inputs({})))
    assert [s.job_id for s in decisions.starts] == ["1"]


jobs_strategy = st.lists(
    st.tuples(st.sampled_from(["heavy", "light", "mid"]), st.integers(1, 4),
              st.floats(0, 1000)),
    min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(jobs=jobs_strategy, free=st.integers(0, 8),
       heavy=st.floats(0, 1e6), mid=st.floats(0, 1e6))
def test_priority_order_is_respected_among_jobs_that_fit(
    jobs: list[tuple[str, int, float]], free: int, heavy: float, mid: float
) -> None:
    """A job that started never had a higher-priority job, that would have fit in the GPUs it
    took, left waiting: on one node, every job still waiting that outranks a started one needs
    more GPUs than were free when its turn came."""
    node = NodeView("n1", "A100-80GB", 8, tuple(range(8 - free, 8)))
    pending = tuple(PendingJob(str(i), user, "lab", gpus, at)
                    for i, (user, gpus, at) in enumerate(jobs))
    shares = ShareInputs(accounts=(Account("lab", "root"),),
                         assocs=tuple(Assoc(u, "lab") for u in ("heavy", "light", "mid")),
                         usage={("lab", "heavy"): heavy, ("lab", "mid"): mid})
    snapshot = Snapshot((node,), pending, 2000.0, shares=shares)
    decisions = schedule(snapshot)
    prio = {j: p.total for j, p in rank(snapshot).breakdown.items()}
    started = {s.job_id for s in decisions.starts}
    used = sum(len(s.indices) for s in decisions.starts)
    assert used <= free
    for waiting in (j for j in pending if j.id not in started):
        for run in (j for j in pending if j.id in started):
            if prio[waiting.id] > prio[run.id]:
                # It was considered first and did not fit in what was free then.
                assert waiting.gpus > free - sum(
                    j.gpus for j in pending if j.id in started and prio[j.id] >= prio[waiting.id])


@settings(max_examples=100, deadline=None)
@given(jobs=jobs_strategy, heavy=st.floats(0, 1e6), now=st.floats(0, 2e6))
def test_fast_totals_equal_the_full_priorities(jobs: list[tuple[str, int, float]], heavy: float,
                                               now: float) -> None:
    pending = tuple(PendingJob(str(i), u, "lab", g, at) for i, (u, g, at) in enumerate(jobs))
    snapshot = Snapshot((NodeView("n1", "A100-80GB", 8, ()),), pending, now,
                        shares=inputs({("lab", "heavy"): heavy}))
    ranking = rank(snapshot)
    full, fast = ranking.breakdown, ranking.totals
    assert fast.keys() == full.keys()
    for job_id, total in fast.items():  # the same sum (`priority.Weighing.totals`)
        assert total == full[job_id].total
