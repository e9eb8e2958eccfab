"""Scavenger jobs are preempted for normal jobs that need their GPUs, and only then."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy.placement import fits_type
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


def test_a_job_across_nodes_frees_its_gpus_on_as_many_nodes_as_it_must() -> None:
    running = [scav("a", "n1", 2, 100), scav("b", "n1", 2, 200), scav("c", "n2", 4, 300)]
    two = PendingJob("9", "u", "lab", 4, 0.0, nodes=2)  # 2 GPUs on each of 2 nodes
    # nothing free: the youngest 2-GPU scavenger on n1, and n2's only one
    assert plan_preemptions([two], NODES, {"n1": 0, "n2": 0}, running) == [
        Preemption("9", "n1", ("b",)), Preemption("9", "n2", ("c",))]
    # n1 has its 2 GPUs free already: only n2 gives up its scavenger
    assert plan_preemptions([two], NODES, {"n1": 2, "n2": 0}, running) == [
        Preemption("9", "n2", ("c",))]
    # both fit: placement starts it, nobody is preempted
    assert plan_preemptions([two], NODES, {"n1": 2, "n2": 2}, running) == []
    # three nodes asked of two: nothing is preempted for a job that still could not start
    three = PendingJob("9", "u", "lab", 6, 0.0, nodes=3)
    assert plan_preemptions([three], NODES, {"n1": 0, "n2": 0}, running) == []
    # the next job across nodes counts what the first left: c freed 4 GPUs on n2 and the
    # first takes 2, so it needs only n1's last scavenger; a third finds nothing left
    after = [two, PendingJob("10", "v", "lab", 4, 1.0, nodes=2),
             PendingJob("11", "w", "lab", 4, 2.0, nodes=2)]
    assert plan_preemptions(after, NODES, {"n1": 0, "n2": 0}, running) == [
        Preemption("9", "n1", ("b",)), Preemption("9", "n2", ("c",)),
        Preemption("10", "n1", ("a",))]


def reference_plan_preemptions(blocked: list[PendingJob], nodes: tuple[NodeView, ...],
                               free_after: dict[str, int], running: list[RunningJob]
                               ) -> list[Preemption]:
    """`plan_preemptions` as first written (a scan of every victim per node and job), the
    reference the faster one (running sums, candidates per GPU type) is held to."""
    by_node: dict[str, list[RunningJob]] = {}
    for held in running:
        if held.qos == "scavenger":
            by_node.setdefault(held.node, []).append(held)
    for victims in by_node.values():
        victims.sort(key=lambda j: -j.ends_at)
    taken: set[str] = set()
    plans = []
    free = dict(free_after)
    candidates = sorted((n for n in nodes if n.up and n.name in by_node), key=lambda n: n.name)
    untaken = sum(len(v) for v in by_node.values())
    smallest_failed: dict[str | None, int] = {}
    for job in blocked:
        if untaken == 0:
            break
        if job.qos == "scavenger" or job.gpus >= smallest_failed.get(job.gpu_type,
                                                                       job.gpus + 1):
            continue
        best: tuple[int, str, list[RunningJob]] | None = None
        for node in candidates:
            if node.gpus_usable < job.gpus or not fits_type(job, node):
                continue
            need = job.gpus - free.get(node.name, 0)
            if need <= 0:
                continue
            chosen, got = [], 0
            for victim in by_node[node.name]:
                if got >= need:
                    break
                if victim.id not in taken:
                    chosen.append(victim)
                    got += sum(1 for i in victim.indices if i not in node.unhealthy) \
                        if victim.indices else victim.gpus
            if got >= need and (best is None or (got, node.name) < (best[0], best[1])):
                best = (got, node.name, chosen)
                if got == need:
                    break
        if best is None:
            smallest_failed[job.gpu_type] = job.gpus
            continue
        got, node_name, chosen = best
        taken.update(v.id for v in chosen)
        untaken -= len(chosen)
        free[node_name] = free.get(node_name, 0) + got - job.gpus
        plans.append(Preemption(job.id, node_name, tuple(v.id for v in chosen)))
    return plans


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_plans_are_the_references_on_random_clusters(seed: int) -> None:
    rng = random.Random(seed)
    nodes = tuple(NodeView(f"n{i}", rng.choice(("A100-80GB", "RTX3090")), 8, (),
                           up=rng.random() < 0.9,
                           unhealthy=tuple(rng.sample(range(8), rng.choice((0, 0, 1, 2)))))
                  for i in range(rng.randint(1, 8)))
    running, used = [], {n.name: 0 for n in nodes}
    for r in range(rng.randint(0, 30)):
        node = rng.choice(nodes)
        gpus = rng.choice((1, 1, 2, 4))
        if used[node.name] + gpus > 8:
            continue
        indices = tuple(range(used[node.name], used[node.name] + gpus))
        used[node.name] += gpus
        running.append(RunningJob(f"r{r}", "s", "lab", gpus, node.name,
                                  indices if rng.random() < 0.8 else (),
                                  float(rng.choice((10, 20, 30, 40))),
                                  rng.choice(("scavenger", "scavenger", "normal"))))
    free = {n.name: 8 - used[n.name] - rng.randint(0, 8 - used[n.name]) for n in nodes}
    blocked = [PendingJob(str(i), "u", "lab", rng.choice((1, 2, 3, 4, 8)), 0.0,
                          rng.choice((None, "A100", "RTX3090")),
                          rng.choice(("normal",) * 5 + ("scavenger",)))
               for i in range(rng.randint(0, 25))]
    assert plan_preemptions(blocked, nodes, free, running) == \
        reference_plan_preemptions(blocked, nodes, free, running)
