"""GPU confinement by the kernel: a job's cgroup gets a BPF device program, and a job process
(an unprivileged user's) that opens another GPU's device node gets EPERM, while its own GPU
and the shared nodes pass on to the driver.

No NVIDIA driver here: the device nodes are made with mknod (major 195) in a test directory,
so an open that the program lets through fails with ENXIO (no driver for 195), and one it
refuses fails with EPERM before any driver is asked. Needs root and a cgroup v2 tree (pure, or
a hybrid host's); runs on both.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from agents import devices
from agents.cgroups import Layout, detect
from agents.executor import Executor
from agents.runner import RunSpec, RunState
from scheduler.model import Job, JobState
from scheduler.noderun import EXITED, FAILED, StartRecord
from scheduler.store import Store
from tests.e2e_stack import ensure_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpf, mknod, users)")

# What a job prints for each node: errno names of its open, or "opened".
PROBE = """
import os, sys, errno
for name in sys.argv[1:]:
    try:
        os.close(os.open(name, os.O_RDWR))
        print(os.path.basename(name), "opened")
    except OSError as exc:
        print(os.path.basename(name), errno.errorcode[exc.errno])
"""


@pytest.fixture(scope="module")
def alice() -> Any:
    return ensure_user("alice")


@pytest.fixture
def nodes() -> Iterator[Path]:
    """/dev/nvidia0..3, nvidia-modeset and nvidiactl look-alikes (195:N, 0666)."""
    path = Path(tempfile.mkdtemp(prefix="labq-dev-"))
    os.chmod(path, 0o755)
    for name, minor in (("nvidia0", 0), ("nvidia1", 1), ("nvidia2", 2), ("nvidia3", 3),
                        ("nvidia-modeset", 254), ("nvidiactl", 255)):
        os.mknod(path / name, 0o666 | 0o020000, os.makedev(195, minor))  # S_IFCHR
        os.chmod(path / name, 0o666)
    (path / "plain").write_text("x")
    os.chmod(path / "plain", 0o666)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def layout() -> Iterator[Layout]:
    found = detect(f"test-dev-{os.getpid()}")
    if found.root is None:
        pytest.skip("no writable cgroup v2 tree on this machine")
    why = devices.available()
    if why:
        pytest.skip(f"no BPF device programs here: {why}")
    yield found
    for path in sorted(found.root.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()
    with contextlib.suppress(OSError):
        found.root.rmdir()


def test_the_program_refuses_other_gpus_to_an_unprivileged_process(
        alice: Any, nodes: Path, layout: Layout) -> None:
    assert layout.root is not None
    group = layout.root / "probe"
    group.mkdir()
    try:
        devices.confine(str(group), [1, 3])
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # alice, in the group: her attempt at every node
            try:
                (group / "cgroup.procs").write_text(str(os.getpid()))
                os.setgroups([])
                os.setgid(alice.pw_gid)
                os.setuid(alice.pw_uid)
                out = []
                for name in sorted(os.listdir(nodes)):
                    try:
                        os.close(os.open(nodes / name, os.O_RDWR))
                        out.append(f"{name}=opened")
                    except OSError as exc:
                        out.append(f"{name}={errno.errorcode[exc.errno]}")
                os.write(write, " ".join(out).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        got = dict(item.split("=") for item in os.read(read, 4096).decode().split())
        os.close(read)
    finally:
        group.rmdir()
    assert got == {"nvidia0": "EPERM", "nvidia1": "ENXIO", "nvidia2": "EPERM",
                   "nvidia3": "ENXIO", "nvidia-modeset": "ENXIO", "nvidiactl": "ENXIO",
                   "plain": "opened"}
    # Outside the group, nothing is refused.
    with pytest.raises(OSError) as caught:
        os.open(nodes / "nvidia0", os.O_RDWR)
    assert caught.value.errno == errno.ENXIO


def _job(workdir: Path, nodes: Path) -> Job:
    names = " ".join(str(nodes / n) for n in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl"))
    return Job(id=str(int(time.time() * 1000) % 10**8), state=JobState.RUNNING,
               command=[f"/usr/bin/python3 -c '{PROBE}' {names}"], submitted_at=time.time(),
               workdir=str(workdir), user="alice", account="lab", gpus=1, time_limit_s=60)


def _run(ex: Executor, job: Job) -> tuple[RunState, RunSpec, str]:
    record = StartRecord.for_job(job, [1])
    ex.start(record)
    rundir = ex.runs_dir / record.key
    deadline = time.monotonic() + 20
    state = RunState.read(rundir)
    while (state is None or state.phase not in (EXITED, FAILED)) and time.monotonic() < deadline:
        time.sleep(0.05)
        state = RunState.read(rundir)
    assert state is not None and state.phase == EXITED, state
    return state, RunSpec.load(rundir), Path(record.output).read_text()


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="no /usr/bin/python3")
def test_a_job_on_gpu_1_cannot_open_the_others(
        tmp_path: Path, alice: Any, nodes: Path, layout: Layout) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="labq-dev-work-"))
    os.chmod(workdir, 0o1777)
    ex = Executor(cast(Store, None), "n1", tmp_path / "agent", layout, grace_s=1.0,
                  simulated=True, python=sys.executable)
    assert ex.confining and "BPF device program" in ex.device_confinement
    state, spec, out = _run(ex, _job(workdir, nodes))
    assert spec.gpu_minors == [1]
    assert out.split("\n") == ["nvidia0 EPERM", "nvidia1 ENXIO", "nvidia2 EPERM",
                               "nvidiactl ENXIO", ""]
    # With no cgroup per job (an unprivileged labq up, a container) nothing is refused: said
    # in the agent's log, and left to the agent's check of what runs on each GPU.
    bare = Executor(cast(Store, None), "n1", tmp_path / "bare", Layout("none", None),
                    grace_s=1.0, simulated=True)
    assert not bare.confining and "not confined by the kernel" in bare.device_confinement
    state, spec, out = _run(bare, _job(workdir, nodes))
    assert spec.gpu_minors is None and "EPERM" not in out
    shutil.rmtree(workdir, ignore_errors=True)


def test_gpu_indices_map_to_the_drivers_minors_in_pci_order(tmp_path: Path) -> None:
    for bus, minor in (("0000:b1:00.0", 0), ("0000:3b:00.0", 2), ("0000:5e:00.0", 1)):
        info = tmp_path / "driver/nvidia/gpus" / bus / "information"
        info.parent.mkdir(parents=True)
        info.write_text(f"Model: \t\t NVIDIA H100\nDevice Minor: \t {minor}\nBus Location: "
                        f"\t {bus}\n")
    minors = devices.nvidia_minors(str(tmp_path))
    assert minors == [2, 1, 0]
    assert devices.gpu_minors([0, 2], minors) == [2, 0]
    assert devices.nvidia_minors(str(tmp_path / "none")) == []
    assert devices.gpu_minors([1, 3], []) == [1, 3]  # no driver: the index


def test_the_program_is_what_the_verifier_accepts() -> None:
    if os.geteuid() != 0 or devices.available():
        pytest.skip("cannot load BPF programs here")
    for allowed in ([], [0], list(range(16)), [253, 254, 255, -1]):
        os.close(devices.load(allowed))
    assert len(devices.program([0, 1])) == 8 * 13  # 7 checks, 2 minors, refuse, allow
