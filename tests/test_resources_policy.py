"""CPUs and memory in the policy: what a job asks for (scheduler.resources), placement that
needs the GPUs and the CPUs and memory free on a node, backfill that does not hand them out
twice, and the reason a job waits naming the resource that is short."""

from __future__ import annotations

import pytest

from scheduler.cluster.views import node_view
from scheduler.model import Node, NodeState
from scheduler.policy import NodeView, PendingJob, RunningJob, Snapshot, schedule
from scheduler.policy.placement import FreePool, best_fit
from scheduler.resources import Demand, SizeError, format_mem, parse_mem

pytestmark = pytest.mark.unit


def node(name: str, gpus: int = 4, cpus: int = 8, mem: int = 32768,
         used: tuple[int, int] = (0, 0), free: tuple[int, ...] | None = None) -> NodeView:
    free = tuple(range(gpus)) if free is None else free
    return NodeView(name, "A100", gpus, free, cpus=cpus, mem=mem, cpus_free=cpus - used[0],
                    mem_free=mem - used[1])


def job(job_id: str, gpus: int = 1, at: float = 0.0, nodes: int = 1, **asked: int
        ) -> PendingJob:
    return PendingJob(job_id, "u", "a", gpus * nodes, float(at) or float(job_id), nodes=nodes,
                      demand=Demand(**asked))


def decide(nodes: list[NodeView], jobs: list[PendingJob], running: tuple[RunningJob, ...] = ()
           ) -> tuple[dict[str, str], dict[str, str]]:
    """(job id -> node it starts on, job id -> the details of the reasons it waits)."""
    got = schedule(Snapshot(tuple(nodes), tuple(jobs), 1000.0, running))
    return ({s.job_id: s.node for s in got.starts},
            {k: "; ".join(r.detail for r in v) for k, v in got.reasons.items()})


@pytest.mark.parametrize(("text", "mib"), [
    ("16G", 16384), ("512M", 512), ("2048", 2048), ("1.5G", 1536), ("1T", 1 << 20),
    ("4096K", 4), ("8GB", 8192), ("2GiB", 2048), (" 3g ", 3072)])
def test_memory_is_read_as_slurm_writes_it(text: str, mib: int) -> None:
    assert parse_mem(text) == mib


@pytest.mark.parametrize("text", ["", "lots", "-1G", "1X", "0", "100K", "1e9G", "G"])
def test_a_size_that_is_not_one_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(SizeError) as caught:
        parse_mem(text, "--mem")
    assert str(caught.value).startswith("--mem ") and "\n" not in str(caught.value)


def test_what_a_job_gets_on_a_node() -> None:
    # 1 GPU of 4, on 8 CPUs and 32 GiB: asked, per GPU, or the node's share
    assert Demand(cpus=3, mem=100).on(1, 4, 8, 32768) == (3, 100)
    assert Demand(cpus_per_gpu=3, mem_per_gpu=1000).on(2, 4, 8, 32768) == (6, 2000)
    assert Demand().on(1, 4, 8, 32768) == (2, 8192)
    assert Demand().on(3, 4, 2, 1000) == (1, 750)  # a share is rounded down...
    assert Demand().on(1, 4, 2, 1000) == (0, 250)  # ...so shares never block each other
    assert Demand().on(1, 4, 0, 0) == (0, 0)  # a node that reports nothing: nothing counted
    assert Demand(cpus=2).on(1, 4, 0, 0) == (2, 0)
    assert format_mem(16384) == "16G" and format_mem(1536) == "1.5G" and format_mem(512) == "512M"
    assert format_mem(100 << 20) == "100T" and format_mem(1536 << 10) == "1536G"
    assert Demand(cpus_per_gpu=2, mem=512).describe() == "2 CPUs per GPU, 512M memory"


def test_two_jobs_that_together_exceed_a_nodes_cpus_do_not_run_there_at_once() -> None:
    starts, reasons = decide([node("a", cpus=2)], [job("1", cpus=2), job("2", cpus=2)])
    assert starts == {"1": "a"}
    assert reasons["2"].startswith("needs 2 CPUs on one node: the nodes with its GPUs free "
                                   "have 0 CPUs free at most")


def test_a_job_goes_where_its_cpus_are_free_even_if_another_node_fits_its_gpus_better() -> None:
    # a has 1 GPU free (the best fit for 1 GPU) but no CPUs left; b has all 4 and its CPUs
    starts, _ = decide([node("a", free=(3,), used=(8, 0)), node("b")], [job("1", cpus=1)])
    assert starts == {"1": "b"}


def test_best_fit_looks_past_a_buckets_first_node_that_lacks_memory() -> None:
    nodes = [node("a", used=(0, 32768)), node("b", used=(0, 32000)), node("c")]
    pool = FreePool(nodes)
    placed = pool.best_fit(1, None, demand=Demand(mem=1024))
    assert placed is not None and placed.node == "c"
    assert best_fit(job("1", mem=1024), nodes) == placed
    assert pool.best_fit(1, None, demand=Demand(mem=64 << 10)) is None
    assert pool.best_fit(1, None) is not None  # GPUs alone: the first node


def test_a_job_asking_more_memory_than_any_node_has_waits_saying_so() -> None:
    starts, reasons = decide([node("a"), node("b", mem=65536)], [job("1", mem=100 << 10)])
    assert starts == {}
    assert reasons["1"] == ("needs 100G memory on one node: the nodes with its GPUs free have "
                            "64G memory free at most, 64G memory in all")


def test_jobs_asking_nothing_share_a_node_by_their_gpus() -> None:
    starts, _ = decide([node("a", cpus=8)], [job(str(i)) for i in range(1, 5)])
    assert len(starts) == 4  # 2 CPUs and 8 GiB each, of 8 and 32
    starts, reasons = decide([node("a", cpus=8)], [job("1", cpus=7), job("2"), job("3")])
    assert starts == {"1": "a"} and "needs 2 CPUs" in reasons["2"]


def test_a_job_across_nodes_needs_its_cpus_on_each() -> None:
    nodes = [node("a", cpus=4), node("b", cpus=4, used=(3, 0)), node("c", cpus=4)]
    got = schedule(Snapshot(tuple(nodes), (job("1", nodes=2, cpus=2),), 1000.0))
    assert [sorted(n for n, _ in s.parts) for s in got.starts] == [["a", "c"]]
    starts, reasons = decide(nodes[:2], [job("1", nodes=2, cpus=2)])
    assert starts == {} and "needs 2 CPUs on each of 2 nodes" in reasons["1"]


def test_nodes_that_report_no_cpus_or_memory_are_placed_by_gpus_alone() -> None:
    plain = NodeView("a", "A100", 4, (0, 1, 2, 3))
    starts, _ = decide([plain], [job("1", cpus=64, mem=1 << 20), job("2", cpus=64)])
    assert starts == {"1": "a", "2": "a"}


def test_a_running_jobs_cpus_and_memory_are_taken_from_its_nodes() -> None:
    record = Node("a", NodeState.UP, 4, "A100", 0.0, [], {0: "7", 1: "7", 2: "8"}, cpus=8,
                  memory_mb=32768)
    running = [RunningJob("7", "u", "a", 2, "a", (0, 1), demand=Demand(cpus=3, mem=1000)),
               RunningJob("8", "u", "a", 1, "a", (2,))]  # the node's share: 2 CPUs, 8 GiB
    view = node_view(record, running=running)
    assert (view.cpus, view.cpus_free, view.mem, view.mem_free) == (8, 3, 32768, 32768 - 9192)
    starts, reasons = decide([view], [job("9", cpus=4)], tuple(running))
    assert starts == {} and "have 3 CPUs free at most" in reasons["9"]


def test_the_cycle_hands_out_cpus_once() -> None:
    """Three jobs of 1 GPU and 3 CPUs on two nodes of 4 CPUs: two start, one per node."""
    starts, reasons = decide([node("a", cpus=4), node("b", cpus=4)],
                             [job("1", cpus=3), job("2", cpus=3), job("3", cpus=3)])
    assert sorted(starts.values()) == ["a", "b"] and "needs 3 CPUs" in reasons["3"]


def test_a_job_waiting_for_cpus_is_reserved_and_estimated_for_when_they_are_given_back() -> None:
    running = (RunningJob("7", "u", "a", 1, "a", (0,), ends_at=2000.0, demand=Demand(cpus=4)),)
    nodes = [node("a", cpus=4, free=(1, 2, 3), used=(4, 0))]
    got = schedule(Snapshot(tuple(nodes), (job("1", cpus=2), job("2", cpus=1)), 1000.0, running))
    assert got.starts == []
    assert got.reservation is not None and got.reservation.start == 2000.0
    assert got.estimates["1"] == 2000.0
    # job 2 would fit there from 2000 too, beside job 1's 2 CPUs (of 4)
    assert got.estimates["2"] == 2000.0


def test_a_job_that_can_never_have_its_memory_takes_no_reservation() -> None:
    """It would hold GPUs back from every other job for ever; the next blocked job gets it."""
    running = (RunningJob("7", "u", "a", 4, "a", (0, 1, 2, 3), ends_at=5000.0),)
    nodes = [node("a", free=(), used=(8, 32768))]
    got = schedule(Snapshot(tuple(nodes), (job("1", mem=1 << 20), job("2")), 1000.0, running))
    assert got.reservation is not None and got.reservation.job_id == "2"
    assert "1" not in got.estimates and got.estimates["2"] == 5000.0


def test_billing_may_weigh_cpus_and_memory_beside_gpus() -> None:
    from scheduler.resources import billing_weight

    assert billing_weight(3.0, 2, 16, 65536, 0.0, 0.0) == 3.0  # GPUs only, the default
    # 2 GPUs at 3, 16 CPUs at 0.1, 64 GiB at 0.05: (6 + 1.6 + 3.2) / 2 per GPU
    assert billing_weight(3.0, 2, 16, 65536, 0.1, 0.05) == pytest.approx(5.4)


def test_scavenger_jobs_are_preempted_until_the_jobs_cpus_are_free_too() -> None:
    """3 GPUs and 3 CPUs wanted on a node of 4 and 4 where two scavenger jobs hold a GPU each,
    the youngest 1 CPU and the other 3: freeing the youngest gives the GPUs, not the CPUs."""
    young = RunningJob("s1", "v", "a", 1, "a", (0,), ends_at=9000.0, qos="scavenger",
                       demand=Demand(cpus=1))
    old = RunningJob("s2", "v", "a", 1, "a", (1,), ends_at=5000.0, qos="scavenger",
                     demand=Demand(cpus=3))
    nodes = [node("a", cpus=4, free=(2, 3), used=(4, 0))]
    got = schedule(Snapshot(tuple(nodes), (job("1", gpus=3, cpus=3),), 1000.0, (young, old)))
    assert [(p.node, p.victims) for p in got.preemptions] == [("a", ("s1", "s2"))]
    plain = [NodeView("a", "A100", 4, (2, 3))]  # CPUs not counted: the youngest is enough
    got = schedule(Snapshot(tuple(plain), (job("1", gpus=3, cpus=3),), 1000.0, (young, old)))
    assert [(p.node, p.victims) for p in got.preemptions] == [("a", ("s1",))]
    more = (job("1", gpus=3, cpus=5),)  # more than the node has: none is preempted for it
    assert schedule(Snapshot(tuple(nodes), more, 1000.0, (young, old))).preemptions == []
