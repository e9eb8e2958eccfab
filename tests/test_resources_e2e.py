"""End to end, CPUs and memory on a real `labq up --simulate 1x4` whose one node offers its jobs
2 CPUs and 2 GiB (LABQ_NODE_CPUS, LABQ_NODE_MEMORY): a job submitted with `--cpus 1 --mem
256M` by a real unprivileged user runs with those limits in its cgroup (read from inside
the job, where this machine's cgroups allow it), a job asking more memory than any node has
is refused naming memory, and two jobs that together need more CPUs than the node has do not
run there at once: the second waits, saying it needs CPUs, until the first ends."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.e2e_stack import Stack
from tests.resources_probe import PROBE, parse

pytestmark = pytest.mark.e2e
MIB = 1 << 20
ENDED = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack("1x4", LABQ_NODE_CPUS="2", LABQ_NODE_MEMORY="2G").start()
    yield s
    s.stop()


def test_the_node_shows_what_it_offers_jobs(stack: Stack) -> None:
    nodes = stack.labq_json("nodes")
    node = nodes[0] if isinstance(nodes, list) else nodes["nodes"][0]
    assert (node["cpus"], node["memory_mb"]) == (2, 2048)


def test_a_job_runs_with_the_cpus_and_memory_it_asked_for(stack: Stack) -> None:
    job_id = stack.submit("--cpus", "1", "--mem", "256M", "--notify", "END",
                          "--", "/usr/bin/python3", "-c", PROBE)
    job = stack.wait_state(job_id, ENDED)
    assert job["state"] == "SUCCEEDED", job
    assert (job["cpus"], job["mem"], job["notify"]) == (1, 256, "end")
    read = parse((stack.workdir / f"labq-{job_id}.out").read_text())
    assert read["LABQ_CPUS"] == "1" and read["LABQ_MEM_MB"] == "256"
    assert json.loads(read["RAY_OVERRIDE_RESOURCES"])["CPU"] == 1
    if os.geteuid() != 0:
        return  # an unprivileged `labq up` has no cgroups of its own: nothing is enforced
    if "v2 cpu.max" in read:  # a pure v2 node: its own v2 group has the controllers
        assert (read["v2 cpu.max"], read["v2 memory.max"]) == ("100000 100000", str(256 * MIB))
    elif os.path.exists("/sys/fs/cgroup/memory/tasks"):  # v2-hybrid: its own v1 groups
        assert read["v1 cpu.cfs_quota_us"] == "100000", read
        assert read["v1 memory.limit_in_bytes"] == str(256 * MIB), read


def test_a_job_asking_more_memory_than_any_node_has_is_refused(stack: Stack) -> None:
    result = stack.labq("submit", "--name", "too-big", "--mem", "8G", "--", "true", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == ("labq: error: not enough memory: the job asks for 8G on "
                                     "a node; the largest node has 2G")
    assert [j for j in stack.labq_json("queue", "--all", "--done") if j["name"] == "too-big"] \
        == []


def test_two_jobs_needing_more_cpus_than_the_node_has_run_one_after_the_other(
        stack: Stack) -> None:
    go = stack.workdir / "cpus-go"
    first = stack.submit("--cpus", "2", "--gpus", "1", "--", "sh", "-c",
                         f"while [ ! -e {go} ]; do sleep 0.2; done")
    stack.wait_state(first, {"RUNNING"})
    second = stack.submit("--cpus", "2", "--gpus", "1", "--", "true")

    def waits_for_cpus() -> bool:
        job = stack.job(second)
        assert job["state"] == "PENDING", job  # 3 GPUs are free: only the CPUs hold it
        return any("needs 2 CPUs" in r["detail"] for r in job["reasons"])

    stack.wait(waits_for_cpus, what="the second job's reason naming CPUs")
    assert stack.job(first)["state"] == "RUNNING"
    go.write_text("")
    ended = stack.wait_state(first, ENDED)
    done = stack.wait_state(second, ENDED)
    assert ended["state"] == done["state"] == "SUCCEEDED"
    assert done["started_at"] >= ended["ended_at"]
