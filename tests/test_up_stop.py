"""No runner outlives `labq up`'s stop (issue 18, item 5): with jobs running — one that ignores
SIGTERM and leaves a double-forked process in a session of its own — the agent killed with
SIGKILL meanwhile (its runners then belong to no agent) and one runner hung (it never acts on
the SIGTERM it is sent), SIGTERM to `labq up` leaves no process of that stack: no daemon, no
runner, no job process."""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

import pytest

from tests.e2e_stack import Stack, wait_until

pytestmark = pytest.mark.e2e


def processes(part: str) -> dict[int, str]:
    """Live processes whose command line holds `part`: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if part in cmd and state != "Z":
            found[int(entry.name)] = cmd
    return found


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_no_runner_or_job_process_outlives_labq_up() -> None:
    # (Other stacks on this host have a sim-0 too: their jobs must not look like ours.)
    stack = Stack("1x2", LABQ_FOREIGN_GPU_POLICY="ignore")
    (stack.home / "config.toml").write_text("[scheduler]\nstop_grace_s = 2\n")
    stack.start()
    # Seconds no other process sleeps: each of this test's processes is known by its own.
    plain, stubborn, escaped = (f"{3000 + secrets.randbelow(5000)}.{i}" for i in range(3))
    try:
        first = stack.submit("--gpus", "1", "--time", "10m", "--", f"exec sleep {plain}")
        second = stack.submit("--gpus", "1", "--time", "10m", "--",
                              f"trap '' TERM; (setsid sleep {escaped} &); sleep {stubborn}; "
                              "sleep 600")
        for job in (first, second):
            stack.wait_state(job, {"RUNNING"})
        for seconds in (plain, stubborn, escaped):
            wait_until(lambda s=seconds: processes(f"sleep {s}"), 30, f"sleep {seconds}")
        runners = processes(f"{stack.home}/agent/")
        assert len(runners) == 2, runners

        # The agent dies hard; labq up starts another. The runners stay, now below labq up.
        [agent] = stack.pids("agent --node sim-0")
        os.kill(agent, signal.SIGKILL)
        stack.wait(lambda: [p for p in stack.pids("agent --node sim-0") if p != agent], 60,
                   "labq up to start the agent again")
        assert stack.proc is not None
        for runner in runners:
            assert parent(runner) == stack.proc.pid, runners  # labq up is their subreaper
        # One runner hangs (stopped: it cannot act on the SIGTERM labq up's stop sends it).
        os.kill(min(runners), signal.SIGSTOP)
    finally:
        code = stack.stop()

    assert code == 0, "".join(stack.output)
    left = {**processes(f"{stack.home}/"), **processes(f"sleep {plain}"),
            **processes(f"sleep {stubborn}"), **processes(f"sleep {escaped}")}
    assert left == {}, left
    assert stack.leftovers() == []


def test_labq_up_killed_hard_leaves_no_valkey_or_daemon_and_starts_again() -> None:
    """SIGKILL gives labq up no chance to stop anything: its Valkey and daemons then stop on
    their own (a second Valkey on the same data would corrupt it), and the next labq up on the
    same LABQ_HOME starts."""
    first = Stack("1x1").start()
    assert first.proc is not None
    first.proc.kill()
    first.proc.wait()
    wait_until(lambda: first.leftovers() == [], 30, "Valkey and the daemons to stop")
    second = Stack("1x1", home=first.home).start()
    try:
        assert second.labq("nodes").returncode == 0
    finally:
        assert second.stop() == 0
    assert second.leftovers() == []
