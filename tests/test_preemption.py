"""Scavenger jobs are preempted for normal jobs that need their GPUs, and only then."""

from __future__ import annotations

from scheduler.policy.preemption import Preemption, plan_preemptions
from scheduler.policy.snapshot import NodeView, PendingJob, RunningJob

NODES = (NodeView("n1", "A100-80GB", 4, ()), NodeView("n2", "A100-80GB", 4, ()))


def scav(job_id: str, node: str, gpus: int, ends: float) -> RunningJob:
    return RunningJob(job_id, "s", "lab", gpus, node, (), ends, "scavenger")


def test_preempts_the_fewest_youngest_scavengers_on_the_best_node() -> None:
    running = [scav("a", "n1", 2, 100), scav("b", "n1", 2, 200), scav("c", "n2", 4, 300),
               RunningJob("d", "u", "lab", 0, "n2", (), 50)]
    plans = plan_preemptions([PendingJob("9", "u", "lab", 2, 0.0)], NODES,
                             {"n1": 0, "n2": 0}, running)
    assert plans == [Preemption("9", "n1", ("b",))]  # 2 GPUs on n1 beat 4 on n2; b is younger


def test_no_preemption_for_scavenger_jobs_or_when_nothing_is_enough() -> None:
    running = [scav("a", "n1", 1, 100)]
    assert plan_preemptions([PendingJob("9", "u", "lab", 4, 0.0, qos="scavenger")], NODES,
                            {"n1": 0, "n2": 0}, running) == []
    assert plan_preemptions([PendingJob("9", "u", "lab", 4, 0.0)], NODES,
                            {"n1": 2, "n2": 0}, running) == []  # 2 free + 1 scavenger < 4


def test_each_scavenger_is_taken_once_and_free_gpus_count() -> None:
    running = [scav("a", "n1", 2, 100), scav("b", "n2", 2, 100)]
    jobs = [PendingJob("8", "u", "lab", 3, 0.0), PendingJob("9", "v", "lab", 3, 1.0)]
    plans = plan_preemptions(jobs, NODES, {"n1": 1, "n2": 1}, running)
    assert plans == [Preemption("8", "n1", ("a",)), Preemption("9", "n2", ("b",))]


def test_normal_running_jobs_are_never_victims() -> None:
    running = [RunningJob("a", "u", "lab", 4, "n1", (), 100)]
    assert plan_preemptions([PendingJob("9", "v", "lab", 2, 0.0)], NODES[:1], {"n1": 0},
                            running) == []
