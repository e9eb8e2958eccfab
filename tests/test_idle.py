"""Idle-GPU decisions (scheduler.coordinator.idle): table tests with a fake clock, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from scheduler.config import ConfigError, Settings
from scheduler.coordinator.idle import (
    IdleDecision,
    IdlePolicy,
    Reading,
    RunningGpus,
    annotate_nodes,
    check_idle,
    fresh_readings,
    job_idle,
)
from scheduler.model import GpuInfo, Job, JobState, Node, NodeState

T0 = 10_000.0
WARN = IdlePolicy(threshold=0.05, after_s=600, action="warn", stop_after_s=1200)
STOP = replace(WARN, action="stop")
OFF = replace(WARN, action="off")


def job(indices: tuple[int, ...] = (0, 1), since: dict[int, float] | None = None,
        notified: bool = False, stopping: bool = False, started: float = T0) -> RunningGpus:
    return RunningGpus("7", "n1", indices, started, since or {}, notified, stopping)


def reads(at: float, **utils: float | None) -> dict[tuple[str, int], Reading]:
    """reads(t, g0=0.01, g1=0.9): node n1's GPU readings reported at time t."""
    return {("n1", int(k[1:])): Reading(v, at) for k, v in utils.items()}


@dataclass
class Case:
    name: str
    job: RunningGpus
    readings: dict[tuple[str, int], Reading]
    now: float
    policy: IdlePolicy = WARN
    want_since: dict[int, float] = field(default_factory=dict)
    want_notify: bool = False
    want_stop: bool = False
    want_idle: tuple[int, ...] = ()
    want_write: bool = True


CASES = [
    Case("busy GPUs, nothing stored: nothing to do",
         job(), reads(T0 + 5, g0=0.9, g1=0.5), T0 + 5, want_write=False),
    Case("first low reading starts the clock at the report's time",
         job(), reads(T0 + 5, g0=0.01, g1=0.5), T0 + 6, want_since={0: T0 + 5}),
    Case("still low: the start is kept, nothing written",
         job(since={0: T0 + 5}), reads(T0 + 60, g0=0.0, g1=0.5), T0 + 61,
         want_since={0: T0 + 5}, want_write=False),
    Case("busy again: forgotten",
         job(since={0: T0 + 5}), reads(T0 + 60, g0=0.3, g1=0.5), T0 + 61),
    Case("exactly at the threshold is busy",
         job(), reads(T0 + 5, g0=0.05, g1=0.05), T0 + 5, want_write=False),
    Case("low for idle_gpu_after_s: idle, the owner is told once",
         job(since={0: T0}), reads(T0 + 600, g0=0.0, g1=0.9), T0 + 600,
         want_since={0: T0}, want_notify=True, want_idle=(0,)),
    Case("already told: no second notice",
         job(since={0: T0}, notified=True), reads(T0 + 900, g0=0.0, g1=0.9), T0 + 900,
         want_since={0: T0}, want_idle=(0,), want_write=False),
    Case("fully busy again ends the spell: a later one is told again",
         job(since={0: T0}, notified=True), reads(T0 + 900, g0=0.5, g1=0.9), T0 + 900),
    Case("no reading (node silent): the state is kept",
         job(since={0: T0}), {}, T0 + 100, want_since={0: T0}, want_write=False),
    Case("unreadable utilization is no news",
         job(since={1: T0}), reads(T0 + 100, g0=0.9, g1=None), T0 + 100,
         want_since={1: T0}, want_write=False),
    Case("a report from before the job started says nothing about it",
         job(started=T0 + 50), reads(T0 + 40, g0=0.0, g1=0.0), T0 + 60, want_write=False),
    Case("warn never stops",
         job(since={0: T0, 1: T0}, notified=True), reads(T0 + 5000, g0=0.0, g1=0.0), T0 + 5000,
         want_since={0: T0, 1: T0}, want_idle=(0, 1), want_write=False),
    Case("stop: all GPUs idle past stop_after: stop (and no separate idle notice)",
         job(since={0: T0, 1: T0 + 10}), reads(T0 + 1210, g0=0.0, g1=0.0), T0 + 1210,
         policy=STOP, want_since={0: T0, 1: T0 + 10}, want_notify=False, want_stop=True,
         want_idle=(0, 1)),
    Case("stop: one GPU busy: warned, not stopped",
         job(since={0: T0}, notified=True), reads(T0 + 5000, g0=0.0, g1=0.7), T0 + 5000,
         policy=STOP, want_since={0: T0}, want_idle=(0,), want_write=False),
    Case("stop: idle but not yet for stop_after",
         job(since={0: T0, 1: T0}, notified=True), reads(T0 + 1199, g0=0.0, g1=0.0),
         T0 + 1199, policy=STOP, want_since={0: T0, 1: T0}, want_idle=(0, 1), want_write=False),
    Case("stop: a stop already asked is not asked again",
         job(since={0: T0, 1: T0}, notified=True, stopping=True),
         reads(T0 + 5000, g0=0.0, g1=0.0), T0 + 5000, policy=STOP,
         want_since={0: T0, 1: T0}, want_idle=(0, 1), want_write=False),
    Case("stop: no fresh reading (node silent) never stops, even long past stop_after",
         job(since={0: T0, 1: T0}, notified=True), {}, T0 + 5000, policy=STOP,
         want_since={0: T0, 1: T0}, want_idle=(0, 1), want_write=False),
    Case("stop: unreadable utilization (GPU lost, NVML error) never stops",
         job(since={0: T0, 1: T0}, notified=True), reads(T0 + 5000, g0=None, g1=None),
         T0 + 5000, policy=STOP, want_since={0: T0, 1: T0}, want_idle=(0, 1),
         want_write=False),
    Case("stop: one GPU read low now, the other unreadable: not stopped",
         job(since={0: T0, 1: T0}, notified=True), reads(T0 + 5000, g0=0.0, g1=None),
         T0 + 5000, policy=STOP, want_since={0: T0, 1: T0}, want_idle=(0, 1),
         want_write=False),
    Case("off: stored state is cleared, nothing else",
         job(since={0: T0}, notified=True), reads(T0 + 5000, g0=0.0, g1=0.0), T0 + 5000,
         policy=OFF),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_idle(case: Case) -> None:
    decisions = check_idle([case.job], case.readings, case.policy, case.now)
    if not (case.want_write or case.want_notify or case.want_stop):
        assert decisions == []
        return
    [d] = decisions
    assert d.idle_since == case.want_since
    assert (d.notify, d.stop, d.idle_gpus, d.write) == (
        case.want_notify, case.want_stop, case.want_idle, case.want_write)
    if case.want_notify or case.want_stop:
        assert d.notified


def test_a_spell_over_time_with_a_fake_clock() -> None:
    """One job under "stop", its GPU 0 idle and GPU 1 busy, then GPU 1 goes idle too."""
    state = job()
    events: list[tuple[float, IdleDecision]] = []
    for t in range(0, 2400, 30):
        now = T0 + t
        readings = reads(now - 1, g0=0.0, g1=0.0 if t >= 300 else 0.8)
        for d in check_idle([state], readings, STOP, now):
            events.append((t, d))
            state = replace(state, idle_since=d.idle_since, notified=d.notified,
                            stopping=state.stopping or d.stop)
    notices = [t for t, d in events if d.notify]
    stops = [t for t, d in events if d.stop]
    # The 0 s tick's report (made at T0-1, before the job started) says nothing: GPU 0 is low
    # from the 30 s tick's report (at 29 s), idle at 629 s, seen on the 630 s tick.
    assert notices == [630]
    assert stops == [1500]  # GPU 1 low from 299 s: all idle for 1200 s at 1499 s


def node(name: str = "n1", state: NodeState = NodeState.UP, beat: float = T0,
         utils: tuple[float | None, ...] = (0.0, 0.5)) -> Node:
    gpus = [GpuInfo(i, f"u{i}", "A100", 1, 0, u) for i, u in enumerate(utils)]
    return Node(name, state, len(gpus), "A100", beat, gpus, {0: "7", 1: "7"})


def test_fresh_readings_skip_down_and_silent_nodes() -> None:
    readings = fresh_readings([node("n1"), node("n2", NodeState.DOWN), node("n3", beat=T0 - 99)],
                              oldest=T0 - 10)
    assert set(readings) == {("n1", 0), ("n1", 1)}
    assert readings[("n1", 0)] == Reading(0.0, T0)


def running_job(since: dict[int, float]) -> Job:
    return Job(id="7", user="ann", account="lab", state=JobState.RUNNING, gpus=2,
               command=["sleep", "1"], submitted_at=T0, time_limit_s=9999, node="n1",
               gpu_indices=[0, 1], started_at=T0, gpu_idle_since=since)


def test_job_idle_text_for_labq_show() -> None:
    now = T0 + 42 * 60
    info = job_idle(running_job({0: T0, 1: T0 + 60}), replace(WARN, action="stop",
                                                              stop_after_s=3600), now)
    assert info is not None and info["gpus"] == [0, 1]
    assert info["text"] == ("GPUs 0,1 idle for 41 min (utilization < 5%); "
                            "policy: stop after 60 min")
    assert job_idle(running_job({0: now - 60}), WARN, now) is None  # below, not yet idle
    assert job_idle(running_job({0: T0}), OFF, now) is None
    one = job_idle(running_job({1: T0}), WARN, now)
    assert one is not None and one["text"].startswith("GPU 1 idle for 42 min")
    assert one["text"].endswith("policy: warn only")


def test_annotate_nodes_marks_idle_allocated_gpus() -> None:
    data = [node().to_dict()]
    annotate_nodes(data, [running_job({0: T0})], WARN, T0 + 700)
    g0, g1 = data[0]["gpus"]
    assert (g0["idle"], g0["idle_s"]) == (True, 700)
    assert (g1["idle"], g1["idle_s"]) == (False, 0.0)


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("toml", "message"), [
    ('idle_gpu_policy = "kill"', "idle_gpu_policy = 'kill' (config.toml or LABQ_IDLE_GPU_* / "
     "LABQ_NOTIFY_COMMAND): use one of off, warn, stop"),
    ("idle_gpu_threshold = 5", "a utilization ratio between 0 and 1, e.g. 0.05 for 5%"),
    ("idle_gpu_after_s = 0", "give seconds > 0"),
    ("idle_gpu_after_s = 600\nidle_gpu_stop_after_s = 300",
     "idle_gpu_stop_after_s = 300 (config.toml or LABQ_IDLE_GPU_* / LABQ_NOTIFY_COMMAND) must "
     "be at least idle_gpu_after_s = 600"),
    ("notify_timeout_s = -1", "notify_timeout_s = -1"),
])
def test_bad_idle_settings_say_what_is_wrong(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(tmp_path)
    assert message in str(info.value)


def test_idle_settings_from_file_and_environment(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LABQ_IDLE_GPU_POLICY", "LABQ_IDLE_GPU_THRESHOLD", "LABQ_IDLE_GPU_AFTER",
                 "LABQ_IDLE_GPU_STOP_AFTER", "LABQ_NOTIFY_COMMAND"):
        monkeypatch.delenv(name, raising=False)
    defaults = IdlePolicy.from_settings(Settings.load(tmp_path))
    assert defaults == IdlePolicy(0.05, 1800.0, "warn", 3600.0)
    (tmp_path / "config.toml").write_text('idle_gpu_policy = "stop"\nnotify_command = "true"\n')
    monkeypatch.setenv("LABQ_IDLE_GPU_AFTER", "60")
    monkeypatch.setenv("LABQ_IDLE_GPU_STOP_AFTER", "120")
    settings = Settings.load(tmp_path)
    assert IdlePolicy.from_settings(settings) == IdlePolicy(0.05, 60.0, "stop", 120.0)
    assert settings.notify_command == "true"
    monkeypatch.setenv("LABQ_IDLE_GPU_THRESHOLD", "five percent")
    with pytest.raises(ConfigError, match="LABQ_IDLE_GPU_THRESHOLD='five percent' is not a "
                                          "valid idle_gpu_threshold"):
        Settings.load(tmp_path)


# ---------------------------------------------------------------------------- simulated GPUs


def fake_proc(root: Path, pid: int, ticks: int, started_ticks: int, gpu: str,
              cmdline: bytes = b"python\0train.py\0") -> None:
    """/proc/<pid> with `ticks` of CPU (utime; at 100 ticks/s) on simulated node n1's `gpu`."""
    folder = root / str(pid)
    folder.mkdir(exist_ok=True)
    (folder / "environ").write_bytes(f"LABQ_NODE=n1\0CUDA_VISIBLE_DEVICES={gpu}\0".encode())
    (folder / "comm").write_text("python\n")
    (folder / "cmdline").write_bytes(cmdline)
    fields = ["S"] + ["0"] * 10 + [str(ticks), "0", "0", "0"] + ["0"] * 4 + [str(started_ticks)]
    (folder / "stat").write_text(f"{pid} (python) " + " ".join(fields) + "\n")


def test_simulated_utilization_is_the_cpu_use_of_the_gpu_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.backends import simulated

    monkeypatch.setattr(simulated, "_CLOCK_TICKS", 100)
    (tmp_path / "uptime").write_text("1000.00 1900.00\n")
    fake_proc(tmp_path, 11, ticks=50_000, started_ticks=0, gpu="0")  # busy for its 1000 s
    fake_proc(tmp_path, 12, ticks=20, started_ticks=0, gpu="1")  # 0.2 s in 1000 s: asleep
    fake_proc(tmp_path, 13, ticks=90_000, started_ticks=0, gpu="2",
              cmdline=b"ray::JobSupervisor\0")  # Ray's, not the job's
    fake_proc(tmp_path, 14, ticks=3, started_ticks=99_990, gpu="3")  # started 0.1 s ago
    now = [5000.0]
    backend = simulated.SimulatedBackend("n1", 4, "A100", proc_root=str(tmp_path),
                                         clock=lambda: now[0])
    first = backend.read()
    assert [g.utilization for g in first] == [0.5, 0.0002, 0.0, 0.03]
    # 2 s later: pid 11 used 2 s more (busy), 12 nothing, 14 one second of two.
    now[0] += 2
    (tmp_path / "uptime").write_text("1002.00 1900.00\n")
    fake_proc(tmp_path, 11, ticks=50_200, started_ticks=0, gpu="0")
    fake_proc(tmp_path, 14, ticks=103, started_ticks=99_990, gpu="3")
    second = backend.read()
    assert [g.utilization for g in second] == [1.0, 0.0, 0.0, 0.5]
    assert second[0].power_watts == 400.0 and second[1].power_watts == 70.0
    assert all(g.processes for g in second)  # used (memory, processes) even when idle
