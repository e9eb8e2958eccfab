"""GPU backends: NVML (with pynvml mocked: there is no GPU here) and the simulated backend."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pynvml
import pytest

from agents.backends import GpuBackend, GpuBackendError, detect_nvidia, make_backend
from agents.backends.nvml import NvmlBackend
from agents.backends.simulated import SimulatedBackend, memory_gib_for, parse_sim_spec
from agents.executor import job_of_process
from agents.procinfo import environ_of, tag_processes
from scheduler.model import GpuInfo

GIB = 1024**3
NOT_AVAILABLE = 2**64 - 1


# -- a fake NVML --------------------------------------------------------------------------------


@dataclass
class FakeGpu:
    """What one fake GPU answers; `errors` maps an NVML function name to the error it raises."""

    uuid: str
    name: str | bytes = "NVIDIA A100-SXM4-80GB"
    total: int = 80 * GIB
    used: int = 10 * GIB
    util_percent: int = 42
    power_mw: int = 123_456
    temp_c: int = 55
    ecc_uncorrected: int = 0
    compute: list[tuple[int, int | None]] = field(default_factory=list)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)
    errors: dict[str, Exception] = field(default_factory=dict)


class FakeNvml:
    """Stands in for the pynvml functions NvmlBackend uses; records every call."""

    def __init__(self, gpus: list[FakeGpu], init_error: Exception | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.calls: list[str] = []

    def _gpu(self, fn: str, handle: int) -> FakeGpu:
        self.calls.append(fn)
        gpu = self.gpus[handle]
        if fn in gpu.errors:
            raise gpu.errors[fn]
        return gpu

    def patches(self) -> dict[str, Any]:
        def init() -> None:
            self.calls.append("nvmlInit")
            if self.init_error is not None:
                raise self.init_error

        def procs(entries: list[tuple[int, int | None]]) -> list[SimpleNamespace]:
            return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in entries]

        def count() -> int:
            self.calls.append("nvmlDeviceGetCount")
            return len(self.gpus)

        def handle_by_index(index: int) -> int:
            self._gpu("nvmlDeviceGetHandleByIndex", index)
            return index

        def temperature(h: int, sensor: int) -> int:
            assert sensor == pynvml.NVML_TEMPERATURE_GPU
            return self._gpu("nvmlDeviceGetTemperature", h).temp_c

        def ecc(h: int, error_type: int, counter: int) -> int:
            assert error_type == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
            assert counter == pynvml.NVML_VOLATILE_ECC
            return self._gpu("nvmlDeviceGetTotalEccErrors", h).ecc_uncorrected

        def memory(h: int) -> SimpleNamespace:
            gpu = self._gpu("nvmlDeviceGetMemoryInfo", h)
            return SimpleNamespace(total=gpu.total, used=gpu.used, free=gpu.total - gpu.used)

        return {
            "nvmlInit": init,
            "nvmlShutdown": lambda: self.calls.append("nvmlShutdown"),
            "nvmlDeviceGetCount": count,
            "nvmlDeviceGetHandleByIndex": handle_by_index,
            "nvmlDeviceGetUUID": lambda h: self._gpu("nvmlDeviceGetUUID", h).uuid,
            "nvmlDeviceGetName": lambda h: self._gpu("nvmlDeviceGetName", h).name,
            "nvmlDeviceGetMemoryInfo": memory,
            "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(
                gpu=self._gpu("nvmlDeviceGetUtilizationRates", h).util_percent, memory=0
            ),
            "nvmlDeviceGetPowerUsage": lambda h: self._gpu("nvmlDeviceGetPowerUsage", h).power_mw,
            "nvmlDeviceGetTemperature": temperature,
            "nvmlDeviceGetTotalEccErrors": ecc,
            "nvmlDeviceGetComputeRunningProcesses": lambda h: procs(
                self._gpu("nvmlDeviceGetComputeRunningProcesses", h).compute
            ),
            "nvmlDeviceGetGraphicsRunningProcesses": lambda h: procs(
                self._gpu("nvmlDeviceGetGraphicsRunningProcesses", h).graphics
            ),
        }


@pytest.fixture
def fake_nvml() -> Iterator[FakeNvml]:
    fake = FakeNvml(
        [
            FakeGpu(uuid="GPU-aaaa", compute=[(1234, 2 * GIB)]),
            FakeGpu(uuid="GPU-bbbb", used=0, util_percent=0, power_mw=60_000, temp_c=31),
        ]
    )
    with mock.patch.multiple(pynvml, **fake.patches()):
        yield fake


def read_fake(fake: FakeNvml, proc_root: str = "/nonexistent-proc") -> list[GpuInfo]:
    backend = NvmlBackend(proc_root=proc_root)
    try:
        return backend.read()
    finally:
        backend.close()


# -- NVML backend -------------------------------------------------------------------------------


def test_nvml_reads_two_healthy_gpus(fake_nvml: FakeNvml) -> None:
    gpus = read_fake(fake_nvml)

    assert [g.index for g in gpus] == [0, 1]
    busy, idle = gpus
    assert busy.uuid == "GPU-aaaa"
    assert busy.model == "NVIDIA A100-SXM4-80GB"
    assert busy.memory_total_bytes == 80 * GIB
    assert busy.memory_used_bytes == 10 * GIB
    assert busy.utilization == pytest.approx(0.42)
    assert busy.power_watts == pytest.approx(123.456)
    assert busy.temperature_c == 55
    assert busy.health == "OK"
    assert [(p.pid, p.used_memory_bytes) for p in busy.processes] == [(1234, 2 * GIB)]
    assert busy.processes[0].labq_job is None
    assert idle.uuid == "GPU-bbbb"
    assert idle.utilization == 0.0
    assert idle.power_watts == pytest.approx(60.0)
    assert idle.processes == []
    assert idle.health == "OK"


def test_nvml_not_supported_field_is_none_silently(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml.gpus[0].errors["nvmlDeviceGetPowerUsage"] = pynvml.NVMLError_NotSupported()
    fake_nvml.gpus[1].errors["nvmlDeviceGetTemperature"] = pynvml.NVMLError_NoPermission()

    with caplog.at_level(logging.WARNING):
        gpus = read_fake(fake_nvml)

    assert gpus[0].power_watts is None
    assert gpus[0].temperature_c == 55
    assert gpus[0].utilization == pytest.approx(0.42)
    assert gpus[1].temperature_c is None
    assert gpus[1].power_watts == pytest.approx(60.0)
    assert all(g.health == "OK" for g in gpus)
    assert caplog.records == []


def test_nvml_generic_error_degrades_only_that_field_and_warns_once(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    for gpu in fake_nvml.gpus:
        gpu.errors["nvmlDeviceGetUtilizationRates"] = pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
    backend = NvmlBackend(proc_root="/nonexistent-proc")

    with caplog.at_level(logging.WARNING):
        first = backend.read()
        second = backend.read()

    for gpus in (first, second):
        assert [g.utilization for g in gpus] == [None, None]
        assert [g.memory_used_bytes for g in gpus] == [10 * GIB, 0]
        assert gpus[0].power_watts == pytest.approx(123.456)
        assert [g.health for g in gpus] == ["OK", "OK"]
    warnings = [r for r in caplog.records if "utilization" in r.getMessage()]
    assert len(warnings) == 1
    assert fake_nvml.calls.count("nvmlInit") == 1  # lazy, and only once


def test_nvml_lost_gpu_reports_lost_and_others_are_fine(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus[1].errors["nvmlDeviceGetMemoryInfo"] = pynvml.NVMLError_GpuIsLost()

    gpus = read_fake(fake_nvml)

    assert gpus[0].health == "OK"
    assert gpus[0].memory_used_bytes == 10 * GIB
    lost = gpus[1]
    assert lost.health == "LOST"
    assert lost.uuid == "GPU-bbbb"  # read before the GPU was found lost
    assert lost.memory_total_bytes is None
    assert lost.utilization is None and lost.power_watts is None
    # After the loss nothing more is asked of that GPU.
    assert fake_nvml.calls.count("nvmlDeviceGetPowerUsage") == 1


def test_nvml_lost_handle_gives_lost_placeholder(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus[0].errors["nvmlDeviceGetHandleByIndex"] = pynvml.NVMLError_GpuIsLost()

    gpus = read_fake(fake_nvml)

    assert [g.health for g in gpus] == ["LOST", "OK"]
    assert gpus[0].index == 0 and gpus[0].memory_total_bytes is None
    assert gpus[1].uuid == "GPU-bbbb"


def test_nvml_init_failure_raises_clear_error() -> None:
    fake = FakeNvml([], init_error=pynvml.NVMLError_LibraryNotFound())
    with mock.patch.multiple(pynvml, **fake.patches()):
        backend = NvmlBackend()
        assert fake.calls == []  # construction does not touch NVML
        with pytest.raises(GpuBackendError) as caught:
            backend.read()
        backend.close()
    message = str(caught.value)
    assert "NVIDIA driver" in message
    assert "--simulate" in message
    assert isinstance(caught.value.__cause__, pynvml.NVMLError_LibraryNotFound)
    assert "nvmlShutdown" not in fake.calls  # never initialised, so nothing to shut down


def test_nvml_names_as_bytes_or_str(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus[0].name = b"NVIDIA H100 80GB HBM3"
    fake_nvml.gpus[1].name = "NVIDIA GeForce RTX 3090"
    fake_nvml.gpus[1].uuid = b"GPU-cccc"  # type: ignore[assignment]

    gpus = read_fake(fake_nvml)

    assert gpus[0].model == "NVIDIA H100 80GB HBM3"
    assert gpus[1].model == "NVIDIA GeForce RTX 3090"
    assert gpus[1].uuid == "GPU-cccc"
    assert all(isinstance(g.model, str) and isinstance(g.uuid, str) for g in gpus)


def test_nvml_dedupes_pid_in_compute_and_graphics(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    (tmp_path / "1234").mkdir()
    (tmp_path / "1234" / "comm").write_text("python3\n")
    gpu = fake_nvml.gpus[0]
    gpu.compute = [(1234, None), (99, NOT_AVAILABLE)]
    gpu.graphics = [(1234, 3 * GIB), (77, 1 * GIB)]

    gpus = read_fake(fake_nvml, proc_root=str(tmp_path))

    procs = {p.pid: p for p in gpus[0].processes}
    assert sorted(procs) == [77, 99, 1234]
    assert procs[1234].used_memory_bytes == 3 * GIB
    assert procs[1234].name == "python3"
    assert procs[99].used_memory_bytes is None  # NVML_VALUE_NOT_AVAILABLE
    assert procs[99].name == ""  # no /proc entry: best effort
    assert procs[77].used_memory_bytes == 1 * GIB


def test_nvml_ecc_errors_and_unsupported_ecc(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus[0].ecc_uncorrected = 3
    fake_nvml.gpus[1].errors["nvmlDeviceGetTotalEccErrors"] = pynvml.NVMLError_NotSupported()

    gpus = read_fake(fake_nvml)

    assert [g.health for g in gpus] == ["ECC_ERRORS", "OK"]


def test_nvml_close_shuts_down_once(fake_nvml: FakeNvml) -> None:
    backend = NvmlBackend()
    backend.read()
    backend.close()
    backend.close()
    assert fake_nvml.calls.count("nvmlShutdown") == 1
    assert backend.simulated is False


def test_detect_nvidia(fake_nvml: FakeNvml) -> None:
    assert detect_nvidia() is True
    fake_nvml.gpus.clear()
    assert detect_nvidia() is False
    fake_nvml.init_error = pynvml.NVMLError_DriverNotLoaded()
    assert detect_nvidia() is False


# -- simulated backend --------------------------------------------------------------------------


def test_simulated_gpu_used_by_real_process() -> None:
    # A node name of our own, so that a labq demo running on this machine cannot interfere.
    node = f"sim-0-test-{os.getpid()}"
    env = {
        **os.environ,
        "LABQ_NODE": node,
        "CUDA_VISIBLE_DEVICES": "1",
        "LABQ_JOB_ID": "7",
    }
    proc = subprocess.Popen(["sleep", "30"], env=env)
    try:
        backend = SimulatedBackend(node, 2, "A100-80GB")
        gpus = backend.read()
        # Recognised by process tree, never by LABQ_JOB_ID in its own environment.
        tag_processes(gpus, lambda pid: job_of_process(pid, {}))
        forged = [p.labq_job for g in gpus for p in g.processes]
        tag_processes(gpus, lambda pid: job_of_process(pid, {os.getpid(): "8"}))
    finally:
        proc.kill()
        proc.wait()

    idle, busy = gpus
    assert busy.uuid == f"SIM-{node}-1"
    assert busy.model == "A100-80GB"
    assert [p.pid for p in busy.processes] == [proc.pid]
    assert busy.processes[0].name == "sleep"
    assert forged == [None]  # LABQ_JOB_ID=7 in its environment makes it no job's process
    assert busy.processes[0].labq_job == "8"  # a child of "runner" os.getpid() (job 8)
    # Utilization follows the processes' CPU use (see simulated.py): `sleep` uses none.
    assert busy.utilization is not None and busy.utilization < 0.05
    assert busy.memory_used_bytes is not None and busy.memory_used_bytes > 0
    assert busy.memory_total_bytes == 80 * GIB
    assert idle.processes == []
    assert idle.utilization == 0.0
    assert idle.memory_used_bytes == 0
    assert idle.temperature_c is not None and 30 <= idle.temperature_c <= 35


def write_proc(root: Path, pid: int, env: dict[str, str] | None, comm: str = "python") -> None:
    """A fake /proc/<pid>; env None makes environ unreadable (as for another user's process)."""
    folder = root / str(pid)
    folder.mkdir()
    (folder / "comm").write_text(comm + "\n")
    if env is not None:
        (folder / "environ").write_bytes(b"".join(f"{k}={v}\0".encode() for k, v in env.items()))


def test_another_installs_jobs_are_not_on_these_simulated_gpus(tmp_path: Path) -> None:
    """Two stacks on one machine may both have a node `n1`: a labq job's process (LABQ_JOB_ID)
    is on this node's simulated GPUs only if this agent resolves it to one of its own jobs;
    a process started by hand (no LABQ_JOB_ID) stays a foreign user, as on real GPUs."""
    write_proc(tmp_path, 101, {"LABQ_NODE": "n1", "CUDA_VISIBLE_DEVICES": "0",
                               "LABQ_JOB_ID": "7"})  # ours
    write_proc(tmp_path, 102, {"LABQ_NODE": "n1", "CUDA_VISIBLE_DEVICES": "1",
                               "LABQ_JOB_ID": "7"})  # another install's job 7
    write_proc(tmp_path, 103, {"LABQ_NODE": "n1", "CUDA_VISIBLE_DEVICES": "1"})  # by hand
    backend = SimulatedBackend("n1", 2, "T4", proc_root=str(tmp_path), clock=lambda: 1000.0)
    backend.own_jobs = lambda: {101: "7"}.get
    assert [[p.pid for p in g.processes] for g in backend.read()] == [[101], [103]]
    backend.own_jobs = None  # (without an executor: every process of the node counts)
    assert [sorted(p.pid for p in g.processes) for g in backend.read()] == [[101], [102, 103]]


def test_simulated_splits_memory_and_ignores_other_processes(tmp_path: Path) -> None:
    write_proc(tmp_path, 101, {"LABQ_NODE": "n1", "CUDA_VISIBLE_DEVICES": "0,2"})
    write_proc(tmp_path, 102, {"LABQ_NODE": "n1", "CUDA_VISIBLE_DEVICES": "GPU-x, 0 ,9"})
    write_proc(tmp_path, 103, {"LABQ_NODE": "other", "CUDA_VISIBLE_DEVICES": "1"})
    write_proc(tmp_path, 104, {"CUDA_VISIBLE_DEVICES": "1"})
    write_proc(tmp_path, 105, None)
    (tmp_path / "self").mkdir()

    backend = SimulatedBackend("n1", 3, "T4", proc_root=str(tmp_path), clock=lambda: 1000.0)
    gpus = backend.read()

    assert [sorted(p.pid for p in g.processes) for g in gpus] == [[101, 102], [], [101]]
    total = 16 * GIB
    assert all(g.memory_total_bytes == total for g in gpus)
    shared = gpus[0]
    assert [p.used_memory_bytes for p in shared.processes] == [int(total * 0.3) // 2] * 2
    assert shared.memory_used_bytes == pytest.approx(total * 0.3, abs=2)
    assert gpus[2].memory_used_bytes == int(total * 0.3)
    for gpu in (gpus[0], gpus[2]):
        assert gpu.utilization == 0.0  # no /proc/<pid>/stat here: no CPU use seen
        assert gpu.power_watts is not None and 70 <= gpu.power_watts <= 400
        assert gpu.temperature_c is not None and 35 <= gpu.temperature_c <= 80
        assert gpu.health == "OK"
    assert gpus[1].utilization == 0.0 and gpus[1].memory_used_bytes == 0


def test_simulated_utilization_follows_real_cpu_use() -> None:
    node = f"sim-cpu-test-{os.getpid()}"
    procs = [subprocess.Popen(cmd, env={**os.environ, "LABQ_NODE": node,
                                        "CUDA_VISIBLE_DEVICES": gpu})
             for cmd, gpu in ((["sleep", "30"], "0"),
                              ([sys.executable, "-c", "while True: pass"], "1"))]
    try:
        backend = SimulatedBackend(node, 3)
        backend.read()
        time.sleep(1.0)
        sleeping, busy, unused = backend.read()  # CPU use over the last second
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert sleeping.processes and sleeping.utilization is not None
    assert sleeping.utilization < 0.05
    assert busy.utilization is not None and busy.utilization > 0.1  # CPU shared with others
    assert busy.power_watts is not None and sleeping.power_watts is not None
    assert busy.power_watts > sleeping.power_watts
    assert unused.utilization == 0.0 and not unused.processes


@pytest.mark.parametrize(
    ("model", "gib"),
    [
        ("A100-80GB", 80),
        ("A100-40GB", 40),
        ("H100-80GB", 80),
        ("H100 80GiB", 80),
        ("V100", 32),
        ("RTX3090", 24),
        ("RTX 4090", 24),
        ("L40S", 48),
        ("T4", 16),
        ("A6000", 48),
        ("Custom-12GB", 12),
        ("SIM-GPU", 24),
    ],
)
def test_simulated_memory_table(model: str, gib: int) -> None:
    assert memory_gib_for(model) == gib
    assert SimulatedBackend("n", 1, model).read()[0].memory_total_bytes == gib * GIB


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2x4:A100-80GB", (2, 4, "A100-80GB")),
        ("1x2", (1, 2, "SIM-GPU")),
        (" 64X16:H100 80GiB ", (64, 16, "H100 80GiB")),
        ("3x1:T4", (3, 1, "T4")),
    ],
)
def test_parse_sim_spec_good(text: str, expected: tuple[int, int, str]) -> None:
    assert parse_sim_spec(text) == expected


@pytest.mark.parametrize(
    "text", ["", "2", "2x", "x4", "0x4", "65x1", "1x0", "1x17", "2x4:", "a x b", "2x4x1", "-1x2"]
)
def test_parse_sim_spec_bad(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_sim_spec(text)
    message = str(caught.value)
    assert "NODESxGPUS[:MODEL]" in message and "2x4:A100-80GB" in message
    assert "\n" not in message


# -- factory and /proc helpers ------------------------------------------------------------------


def test_make_backend() -> None:
    sim = make_backend("simulated", node_name="sim-3", sim_gpus=2, sim_model="V100")
    assert isinstance(sim, GpuBackend)
    assert sim.simulated is True
    assert [g.uuid for g in sim.read()] == ["SIM-sim-3-0", "SIM-sim-3-1"]
    assert sim.read()[0].model == "V100"
    default = make_backend("simulated", node_name="n", sim_gpus=1)
    assert default.read()[0].model == "SIM-GPU"
    nvml = make_backend("nvml", node_name="gpu-1")
    assert isinstance(nvml, NvmlBackend) and nvml.simulated is False
    with pytest.raises(ValueError, match="nvml"):
        make_backend("cuda", node_name="n")
    with pytest.raises(ValueError, match="1..16"):
        make_backend("simulated", node_name="n", sim_gpus=0)


def test_procinfo_helpers(tmp_path: Path) -> None:
    write_proc(tmp_path, 10, {"LABQ_JOB_ID": "42", "A": "x=y"})
    write_proc(tmp_path, 11, {"A": "1"})
    write_proc(tmp_path, 12, None)

    assert environ_of(10, str(tmp_path)) == {"LABQ_JOB_ID": "42", "A": "x=y"}
    assert environ_of(13, str(tmp_path)) == {}
    # Our own environment is readable through the real /proc.
    if sys.platform.startswith("linux"):
        assert environ_of(os.getpid()).get("PATH") == os.environ.get("PATH")
