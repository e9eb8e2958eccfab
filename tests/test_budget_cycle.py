"""Budgets and scavengers inside the scheduling cycle."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy import Limits, NodeView, PendingJob, RunningJob, Snapshot, schedule
from scheduler.policy.budget import Budget, BudgetState

H = 3600.0
CHEAP = NodeView("cheap", "RTX3090", 4, (0, 1, 2, 3), billing_weight=1.0)
DEAR = NodeView("dear", "A100-80GB", 4, (0, 1, 2, 3), billing_weight=3.0)


def budgets(limit_h: float, spent_h: float = 0.0, committed_h: float = 0.0) -> BudgetState:
    return BudgetState((Budget("account", "lab", limit_h * H, 0.0, 1e12),),
                       {("account", "lab"): spent_h * H}, {("account", "lab"): committed_h * H})


def job(job_id: str, gpus: int = 1, hours: float = 1.0, qos: str = "normal",
        gpu_type: str | None = None) -> PendingJob:
    return PendingJob(job_id, "alice", "lab", gpus, float(job_id), gpu_type, qos, int(hours * H))


def test_jobs_start_while_the_budget_lasts_and_the_rest_are_held() -> None:
    decisions = schedule(Snapshot((CHEAP,), (job("1"), job("2"), job("3")), 10.0,
                                  budgets=budgets(5, spent_h=2, committed_h=1)))
    assert [s.job_id for s in decisions.starts] == ["1", "2"]  # 2 + 1 + 1 + 1 = 5: fits
    assert decisions.reasons["3"][0].code == "BudgetExhausted"
    assert "0.00 of 5.00 billed GPU-hours left" in decisions.reasons["3"][0].detail


def test_cost_uses_the_billing_weight_of_the_node_the_job_gets() -> None:
    # 2 GPU-hours on the A100 node cost 6 billed hours: over a 5-hour budget; on RTX, 2.
    only_dear = schedule(Snapshot((DEAR,), (job("1", gpus=2),), 10.0, budgets=budgets(5)))
    assert only_dear.starts == [] and only_dear.reasons["1"][0].code == "BudgetExhausted"
    both = schedule(Snapshot((DEAR, CHEAP), (job("1", gpus=2, gpu_type="RTX3090"),), 10.0,
                             budgets=budgets(5)))
    assert [s.node for s in both.starts] == ["cheap"]


def test_scavenger_jobs_run_outside_budgets_and_are_preempted_for_normal_work() -> None:
    exhausted = budgets(1, spent_h=1)
    scav = schedule(Snapshot((CHEAP,), (job("1", qos="scavenger"),), 10.0, budgets=exhausted))
    assert [s.job_id for s in scav.starts] == ["1"]
    full = NodeView("cheap", "RTX3090", 4, ())
    running = (RunningJob("s1", "bob", "lab", 2, "cheap", (0, 1), 1e9, "scavenger"),
               RunningJob("s2", "bob", "lab", 2, "cheap", (2, 3), 2e9, "scavenger"))
    decisions = schedule(Snapshot((full,), (job("5", gpus=2),), 10.0, running))
    [plan] = decisions.preemptions
    assert plan.for_job == "5" and plan.victims == ("s2",)  # the youngest
    assert [r.code for r in decisions.reasons["5"]][-1] == "Preempting"


@settings(max_examples=200, deadline=None)
@given(limit=st.floats(0, 40), spent=st.floats(0, 20), committed=st.floats(0, 20),
       jobs=st.lists(st.tuples(st.integers(1, 4), st.floats(0.1, 8)), min_size=1, max_size=10))
def test_admission_never_exceeds_a_budget(limit: float, spent: float, committed: float,
                                          jobs: list[tuple[int, float]]) -> None:
    pending = tuple(job(str(i), gpus, hours) for i, (gpus, hours) in enumerate(jobs))
    nodes = (CHEAP, DEAR)
    decisions = schedule(Snapshot(nodes, pending, 10.0, limits=Limits(),
                                  budgets=budgets(limit, spent, committed)))
    weight = {n.name: n.billing_weight for n in nodes}
    by_id = {j.id: j for j in pending}
    admitted = sum(by_id[s.job_id].gpus * by_id[s.job_id].time_limit_s * weight[s.node]
                   for s in decisions.starts)
    if admitted:
        assert spent * H + committed * H + admitted <= limit * H + 1e-6
    for job_id, reasons in decisions.reasons.items():
        assert reasons, job_id
