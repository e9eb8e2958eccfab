"""A GPU on which a process runs that labq did not start gets no new job until it is free
(`foreign_gpu_policy = "avoid"`, the default), and `ignore` restores the old behaviour."""

from __future__ import annotations

from scheduler.cluster.views import node_view
from scheduler.model import GpuInfo, GpuProcess, Node, NodeState
from scheduler.policy import PendingJob, Snapshot, schedule


def node(processes_on_1: list[GpuProcess]) -> Node:
    gpus = [GpuInfo(i, f"g{i}", "A100", 1, 0, 0.0, processes=processes_on_1 if i == 1 else [])
            for i in range(2)]
    return Node("n1", NodeState.UP, 2, "A100", 0.0, gpus, allocations={0: "7"})


def test_a_gpu_busy_outside_labq_gets_no_new_job() -> None:
    intruder = [GpuProcess(pid=99, used_memory_bytes=None, name="python", labq_job=None)]
    job = PendingJob("8", "alice", "lab", 1, 0.0)
    avoided = schedule(Snapshot((node_view(node(intruder)),), (job,), now=10.0))
    assert avoided.starts == []  # GPU 0 is held by job 7, GPU 1 busy outside labq
    assert avoided.reasons["8"][0].code == "Resources"
    ignored = schedule(Snapshot((node_view(node(intruder), avoid_foreign=False),), (job,),
                                now=10.0))
    assert [(s.node, s.indices) for s in ignored.starts] == [("n1", (1,))]


def test_a_process_of_a_labq_job_does_not_block_its_gpu() -> None:
    own = [GpuProcess(pid=99, used_memory_bytes=None, name="python", labq_job="6")]
    job = PendingJob("8", "alice", "lab", 1, 0.0)
    decided = schedule(Snapshot((node_view(node(own)),), (job,), now=10.0))
    assert [(s.node, s.indices) for s in decided.starts] == [("n1", (1,))]


def test_the_reason_names_the_gpu_busy_outside_labq_not_ill_health() -> None:
    intruder = [GpuProcess(pid=99, used_memory_bytes=None, name="python", labq_job=None)]
    view = node_view(node(intruder))
    assert view.foreign == (1,) and view.unhealthy == (1,)
    # Needs both GPUs: only the outside process keeps GPU 1 from it, for as long as it runs.
    job = PendingJob("8", "alice", "lab", 2, 0.0)
    (reason, *_) = schedule(Snapshot((view,), (job,), now=10.0)).reasons["8"]
    assert reason.code == "Resources"
    assert "a process labq did not start runs on n1 GPU 1" in reason.detail
    assert "unhealthy" not in reason.detail
    sick = Node("n1", NodeState.UP, 2, "A100", 0.0,
                [GpuInfo(0, "g0", "A100", 1, 0, 0.0),
                 GpuInfo(1, "g1", "A100", 1, 0, 0.0, health="ECC_ERRORS")], allocations={})
    (reason, *_) = schedule(Snapshot((node_view(sick),), (job,), now=10.0)).reasons["8"]
    assert "reported unhealthy" in reason.detail and "did not start" not in reason.detail
