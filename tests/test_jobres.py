"""A job's CPU and memory limits (agents.jobres): what each cgroup layout writes, and, on this
machine's real v1 cpu and memory hierarchies (v2-hybrid), that a busy loop is held to its CPU
quota and a process past its memory limit is killed inside its group alone."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.jobres import (
    Resources,
    V1Groups,
    apply_v2,
    v1_writes,
    v2_writes,
    what_is_enforced,
)

pytestmark = pytest.mark.unit
MIB = 1 << 20


def test_what_each_layout_writes(tmp_path: Path) -> None:
    res = Resources(cpus=1.5, memory_bytes=2048 * MIB)
    assert v2_writes(res) == {"cpu.max": "150000 100000", "memory.max": str(2048 * MIB),
                              "memory.swap.max": "0"}
    assert v1_writes(res) == {
        "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "150000"},
        "memory": {"memory.limit_in_bytes": str(2048 * MIB),
                   "memory.memsw.limit_in_bytes": str(2048 * MIB)}}
    assert v2_writes(Resources()) == {} and not Resources().limited
    assert v2_writes(Resources(cpus=0.001))["cpu.max"] == "1000 100000"  # the kernel's least
    with pytest.raises(ValueError, match="negative"):
        Resources(cpus=-1)
    # a v2 group without the memory controller: cpu.max only
    (tmp_path / "cpu.max").write_text("max 100000")
    assert apply_v2(tmp_path, res) == ["cpu.max"]
    assert (tmp_path / "cpu.max").read_text() == "150000 100000"
    assert what_is_enforced("v2", ("cpu", "memory", "pids"), []) == \
        "CPU and memory limits: cpu and memory enforced (cgroup v2)"
    assert what_is_enforced("v2", ("pids",), []).endswith("not enforced (no cpu/memory "
                                                           "controller delegated to the agent)")
    assert what_is_enforced("none", (), []).startswith("CPU and memory limits: not enforced")


@pytest.fixture
def groups() -> Iterator[V1Groups]:
    made = V1Groups(f"test{secrets.token_hex(6)}", "1.0")
    if os.geteuid() != 0 or made.available() != ["cpu", "memory"]:
        pytest.skip("needs root and the v1 cpu and memory hierarchies (a v2-hybrid node)")
    yield made
    made.remove()
    for hierarchy in ("cpu", "memory"):
        install = made.path(hierarchy).parent
        if install.is_dir():
            install.rmdir()


def run_in(groups: V1Groups, code: str) -> subprocess.Popen[bytes]:
    """A Python process put in the groups before it runs `code` (as the runner does)."""
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", f"import os\nos.read({r}, 1)\n{code}"],
                            pass_fds=(r,))
    os.close(r)
    groups.add(proc.pid)
    os.write(w, b"x")
    os.close(w)
    return proc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_busy_loop_is_held_to_its_cpu_quota(groups: V1Groups) -> None:
    assert groups.create(Resources(cpus=0.2)) == ["cpu/cpu.cfs_period_us",
                                                  "cpu/cpu.cfs_quota_us"]
    proc = run_in(groups, "while True: pass")
    try:
        time.sleep(0.5)
        before, began = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(3)
        used = cpu_seconds(proc.pid) - before
        wall = time.monotonic() - began
        assert proc.poll() is None  # it was busy all along, not gone
    finally:
        proc.kill()
        proc.wait()
    # a fifth of one CPU at most (a tick of slack either side); unlimited, it would use ~1
    assert 0.05 * wall <= used <= 0.2 * wall + 0.15, (used, wall)


def test_past_its_memory_limit_the_job_alone_is_killed(groups: V1Groups) -> None:
    made = groups.create(Resources(memory_bytes=64 * MIB))
    assert "memory/memory.limit_in_bytes" in made
    proc = run_in(groups, "b = bytearray(256 << 20); b[::4096] = b'x' * len(b[::4096])")
    assert proc.wait(60) == -9  # the kernel's OOM killer, inside the group
    peak = groups.peak_memory_bytes()
    assert peak is not None and peak <= 64 * MIB


def test_a_job_and_its_ray_are_told_its_cpus_and_memory() -> None:
    import json

    from agents.jobres import job_resource_env
    from agents.rayjob import dashboard

    env = job_resource_env(Resources(cpus=4, memory_bytes=16384 * MIB), 2)
    assert (env["LABQ_CPUS"], env["LABQ_MEM_MB"]) == ("4", "16384")
    ray = json.loads(env["RAY_OVERRIDE_RESOURCES"])
    assert ray["GPU"] == 2 and ray["CPU"] == 4
    assert ray["object_store_memory"] == int(16384 * MIB * 0.3)  # Ray's own share
    assert ray["memory"] + ray["object_store_memory"] == 16384 * MIB
    small = json.loads(job_resource_env(Resources(memory_bytes=100 * MIB), None)
                       ["RAY_OVERRIDE_RESOURCES"])
    assert small == {"object_store_memory": 50 * MIB, "memory": 50 * MIB}  # half, at most
    assert job_resource_env(Resources(), None) == {}  # nothing asked or known: Ray's own
    assert dashboard({}) == "false" and dashboard({"LABQ_RAY_DASHBOARD": "1"}) == "true"


def test_on_a_pure_v2_node_the_jobs_own_group_gets_the_limits(tmp_path: Path) -> None:
    """What the runner writes where the job's v2 group has the cpu and memory controllers
    (a lab's systemd nodes; this machine's v2 tree has none, so a directory stands in for the
    group, with the files the kernel makes there)."""
    from agents.jobres import limit_job

    for name in ("cpu.max", "memory.max", "memory.swap.max"):
        (tmp_path / name).write_text("max\n")
    assert limit_job(tmp_path, Resources(cpus=2, memory_bytes=256 * MIB), "", "3.0") is None
    assert (tmp_path / "cpu.max").read_text() == "200000 100000"
    assert (tmp_path / "memory.max").read_text() == str(256 * MIB)
    assert (tmp_path / "memory.swap.max").read_text() == "0"
    (tmp_path / "cpu.max").write_text("max\n")
    assert limit_job(tmp_path, Resources(), "", "3.0") is None  # nothing asked or known
    assert (tmp_path / "cpu.max").read_text() == "max\n"
