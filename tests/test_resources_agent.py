"""A job's CPUs and memory on its node: what the agent reports, and the limits its runner puts
on the job's cgroups, read from inside the job as its real Unix user (against a real store,
real processes, this machine's real cgroups: a v2-hybrid node here, where the limits live in
the v1 cpu and memory hierarchies; on a pure v2 node, in the job's v2 group)."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.cgroups import Layout, detect
from agents.executor import Executor
from agents.noderes import CPUS_ENV, MEMORY_ENV, NodeResources, limits_enforced, measure
from scheduler.model import GpuInfo, JobSpec, NodeReport
from scheduler.noderun import EXITED, FAILED, RunStatus
from scheduler.store import Store
from tests.builders import start_job
from tests.e2e_stack import ensure_user
from tests.resources_probe import PROBE, parse

NODE = "n1"
MIB = 1 << 20


def test_the_node_reports_its_cpus_and_memory_or_what_it_is_told(tmp_path: Path) -> None:
    found = measure({}, cgroup_dir=False)
    assert found.cpus == len(os.sched_getaffinity(0))
    meminfo = Path("/proc/meminfo").read_text()
    total = next(int(line.split()[1]) for line in meminfo.splitlines()
                 if line.startswith("MemTotal:"))
    assert found.memory_mb == total // 1024
    assert measure({CPUS_ENV: "6", MEMORY_ENV: "8G"}) == NodeResources(6, 8192)
    with pytest.raises(ValueError, match=CPUS_ENV):
        measure({CPUS_ENV: "many"})
    with pytest.raises(ValueError, match=MEMORY_ENV):
        measure({MEMORY_ENV: "lots"})
    (tmp_path / "meminfo").write_text("nothing here\n")
    assert measure({CPUS_ENV: "1"}, str(tmp_path / "meminfo")).memory_mb == 0


def test_the_agents_own_cgroup_limits_bound_what_it_reports(tmp_path: Path) -> None:
    """Under systemd the jobs' groups are below the agent's own: its unit's CPUQuota and
    MemoryMax (`cpu.max`, `memory.max` there) bound what the node offers."""
    unbounded = measure({}, cgroup_dir=False)
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: 1 whole
    (tmp_path / "memory.max").write_text(f"{512 * MIB}\n")
    assert measure({}, cgroup_dir=tmp_path) == NodeResources(1, min(512,
                                                                     unbounded.memory_mb))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert measure({}, cgroup_dir=tmp_path) == unbounded
    assert measure({CPUS_ENV: "6", MEMORY_ENV: "8G"}, cgroup_dir=tmp_path) == \
        NodeResources(6, 8192)  # what the admin says wins


@pytest.fixture(scope="module")
def user() -> Any:
    return ensure_user("alice")


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="labq-res-work-"))
    os.chmod(path, 0o1777)
    yield path


@pytest.fixture
def layout() -> Layout:
    if os.geteuid() != 0:
        pytest.skip("runs jobs as other users and makes cgroups: needs root")
    found = detect(f"test-{os.getpid()}")
    if found.root is None:
        pytest.skip("no writable cgroup v2 tree on this machine")
    return found


async def run_probe(store: Store, tmp_path: Path, layout: Layout, workdir: Path,
                    resources: NodeResources, **asked: Any) -> tuple[RunStatus, dict[str, Any]]:
    """Run the probe as alice with `asked` (JobSpec's cpus, mem, ...) on 1 of the node's 4
    GPUs, with `resources` the node's; its status and what it read."""
    epoch = await store.lease("coord", 60_000)
    await store.heartbeat(NodeReport(NODE, [GpuInfo(i, f"g{i}", "A100", 1, 0, 0.0)
                                            for i in range(4)]), now=time.time())
    executor = Executor(store, NODE, tmp_path / "agent", layout, grace_s=1.0, simulated=True,
                        resources=resources)
    executor.node_gpus = 4
    spec = JobSpec(user="alice", account="lab", command=["/usr/bin/python3", "-c", PROBE],
                   gpus=1, workdir=str(workdir), **asked)
    [job_id] = await store.submit([spec], token=f"t-{time.time_ns()}", now=time.time())
    assert await start_job(store, epoch, job_id, NODE, [2], 1.0, time.time()) == "OK"
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        await executor.reconcile()
        status = (await store.run_statuses([NODE]))[NODE].get(job_id)
        if status is not None and status.phase in (EXITED, FAILED):
            break
        await asyncio.sleep(0.05)
    assert status is not None and status.phase == EXITED and status.exit_code == 0, status
    return status, parse((workdir / f"labq-{job_id}.out").read_text())


def enforced(read: dict[str, Any], kind: str) -> tuple[str | None, str | None]:
    """(CPU quota, memory limit) in one spelling, from whichever layout enforced them."""
    if kind == "v2":
        cpu = read.get("v2 cpu.max")
        return (cpu.split()[0] if cpu else None), read.get("v2 memory.max")
    return read.get("v1 cpu.cfs_quota_us"), read.get("v1 memory.limit_in_bytes")


async def test_a_job_gets_the_cpus_and_memory_it_asked_for_in_its_cgroup(
        store: Store, tmp_path: Path, layout: Layout, workdir: Path, user: Any) -> None:
    status, read = await run_probe(store, tmp_path, layout, workdir,
                                   NodeResources(2, 4096), cpus=1, mem=256)
    assert read["LABQ_CPUS"] == "1" and read["LABQ_MEM_MB"] == "256"
    ray = json.loads(read["RAY_OVERRIDE_RESOURCES"])
    assert ray["GPU"] == 1 and ray["CPU"] == 1
    assert ray["memory"] + ray["object_store_memory"] == 256 * MIB
    summary = limits_enforced(layout, "0" * 16)
    if "not enforced" in summary:
        pytest.skip(f"this node enforces nothing: {summary}")
    assert enforced(read, layout.kind) == ("100000", str(256 * MIB)), read
    if layout.kind == "v2-hybrid":  # its v1 groups are removed with it
        memory = next(line.split(":", 2)[2] for line in read["cgroup"].splitlines()
                      if line.split(":")[1] == "memory")
        assert "/job_" in memory and not Path(f"/sys/fs/cgroup/memory{memory}").exists()
    assert status.usage.get("memory_peak_bytes", 0) > 0


async def test_a_job_that_asks_nothing_gets_its_share_of_the_node(
        store: Store, tmp_path: Path, layout: Layout, workdir: Path, user: Any) -> None:
    """1 of 4 GPUs on a node of 8 CPUs and 4 GiB: 2 CPUs and 1 GiB."""
    _, read = await run_probe(store, tmp_path, layout, workdir, NodeResources(8, 4096))
    assert read["LABQ_CPUS"] == "2" and read["LABQ_MEM_MB"] == "1024"
    if "not enforced" not in limits_enforced(layout, "0" * 16):
        assert enforced(read, layout.kind) == ("200000", str(1024 * MIB)), read


def test_a_jobs_v1_groups_and_then_its_installs_are_removed() -> None:
    import secrets

    from agents.jobres import Resources, V1Groups
    from agents.noderes import remove_v1_groups

    install = secrets.token_hex(8)
    groups = V1Groups(install, "5.0")
    if os.geteuid() != 0 or groups.available() != ["cpu", "memory"]:
        pytest.skip("needs root and the v1 cpu and memory hierarchies (a v2-hybrid node)")
    assert groups.create(Resources(cpus=1, memory_bytes=64 * MIB))
    remove_v1_groups(install)  # its job's groups are still there: the install's stay
    assert groups.path("cpu").is_dir() and groups.path("memory").is_dir()
    remove_v1_groups(install, "5.0")
    assert not groups.path("cpu").exists() and not groups.path("memory").exists()
    remove_v1_groups(install)
    assert not groups.path("cpu").parent.exists() and not groups.path("memory").parent.exists()
