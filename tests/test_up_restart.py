"""`labq up` restarts a dying child always, with backoff, and says so (issue 21, item 6): as
systemd's Restart=always, after a delay that doubles while the child keeps dying soon after it
starts, up to a cap, forgotten once it stays up; one line of output per restart; a stop still
stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from scheduler.server import up, upchild
from scheduler.server.upchild import FIRST_BACKOFF_S, MAX_BACKOFF_S, Child, restart_delay
from tests.e2e_stack import Stack, wait_until


def test_the_delay_doubles_up_to_a_cap() -> None:
    delays = [restart_delay(n) for n in range(1, 10)]
    assert delays[:4] == [FIRST_BACKOFF_S, 2 * FIRST_BACKOFF_S, 4 * FIRST_BACKOFF_S,
                          8 * FIRST_BACKOFF_S]
    assert max(delays) == MAX_BACKOFF_S == delays[-1]
    assert delays == sorted(delays)


def supervisor(children: list[Child]) -> up.Stack:
    """A Stack with only `children` to supervise (nothing else of a stack is needed)."""
    stack = object.__new__(up.Stack)
    stack.children, stack.stopping, stack.metrics_port = children, False, 0
    return stack


def test_a_child_that_keeps_dying_is_restarted_later_and_later_and_said_each_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upchild, "FIRST_BACKOFF_S", 0.1)
    child = Child("agent-x", ["/bin/sh", "-c", "exit 3"], {"PATH": "/usr/bin:/bin"},
                  tmp_path / "agent-x.log")
    child.start()
    stack, said = supervisor([child]), list[str]()
    deadline = time.monotonic() + 5
    while len(said) < 4 and time.monotonic() < deadline:
        stack.supervise_once(said.append, watch=False)
        time.sleep(0.02)
    assert len(said) == 4, said
    delays = [float(re.search(r"restarting it in ([\d.]+) s", line)[1])  # type: ignore[index]
              for line in said]
    assert delays == [0.1, 0.2, 0.4, 0.8]
    assert all("agent-x exited (status 3) after 0 s up" in line for line in said), said
    assert "its 4th quick exit in a row" in said[-1]
    assert f"see {tmp_path / 'agent-x.log'}" in said[0]


def test_a_child_that_stayed_up_is_restarted_at_once_again(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    child = Child("coordinator-x", ["/bin/sh", "-c", "exit 0"], {}, tmp_path / "c.log")
    child.start()
    child.quick_deaths = 6  # it had been dying...
    assert child.proc is not None
    child.proc.wait()
    child.started -= up.STABLE_S  # ...then stayed up a while before this exit
    said: list[str] = []
    supervisor([child]).supervise_once(said.append, watch=False)
    assert child.quick_deaths == 1
    assert said and f"restarting it in {FIRST_BACKOFF_S:g} s" in said[0], said
    assert "in a row" not in said[0]


def test_a_child_that_cannot_start_is_tried_again_with_backoff(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upchild, "FIRST_BACKOFF_S", 0.05)
    logs = tmp_path / "logs"
    logs.mkdir()
    child = Child("agent-y", ["/bin/true"], {}, logs / "agent-y.log")
    child.start()
    assert child.proc is not None
    child.proc.wait()
    (logs / "agent-y.log").unlink()
    logs.rmdir()  # its log cannot be opened any more: no start can be made
    stack, said = supervisor([child]), list[str]()
    deadline = time.monotonic() + 5
    while len(said) < 3 and time.monotonic() < deadline:
        stack.supervise_once(said.append, watch=False)
        time.sleep(0.01)
    assert len(said) == 3, said
    assert "agent-y exited (status 0)" in said[0]
    assert all("agent-y exited (could not start: cannot open" in x for x in said[1:]), said
    assert ["in 0.05 s" in said[0], "in 0.1 s" in said[1], "in 0.2 s" in said[2]] == [True] * 3


class WatchedStack(Stack):
    """A real `labq up` whose output is read while it runs."""

    def start(self, timeout: float = 240) -> WatchedStack:
        self.proc = subprocess.Popen(
            [*up.DAEMON[:2], "-m", "scheduler.cli", "up", "--simulate", self.simulate,
             "--metrics-port", "0"], env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        wait_until(lambda: any("ready;" in x for x in self.output) or
                   self.proc is None or self.proc.poll() is not None, timeout, "labq up ready")
        if not any("ready;" in x for x in self.output):
            self.stop()
            raise RuntimeError("labq up did not become ready:\n" + "".join(self.output))
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self, timeout: float = 90) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return int(self.proc.returncode)

    def said(self, pattern: str, since: int = 0) -> list[str]:
        return [x for x in self.output[since:] if re.search(pattern, x)]


@pytest.mark.e2e
def test_kill_9_again_and_again_the_child_comes_back_and_labq_up_says_so() -> None:
    stack = WatchedStack("1x1", LABQ_FOREIGN_GPU_POLICY="ignore")
    (stack.home / "config.toml").write_text("[scheduler]\nstop_grace_s = 2\n")
    stack.start()
    try:
        job = stack.submit("--gpus", "1", "--time", "10m", "--", "exec sleep 600")
        stack.wait_state(job, {"RUNNING"})
        for name, part in (("agent-sim-0", "agent --node sim-0"),
                           ("coordinator", "scheduler.cli coordinator")):
            for kill in range(1, 4):
                [pid] = wait_until(lambda p=part: stack.pids(p), 60, f"{name} running")
                since = len(stack.output)
                os.kill(pid, signal.SIGKILL)
                line = wait_until(lambda n=name, s=since: stack.said(
                    rf"^labq up: {n} exited \(killed by SIGKILL\)", s), 30,
                    f"labq up to say {name} died")
                assert len(line) == 1, line
                delay = float(re.search(r"restarting it in ([\d.]+) s", line[0])[1])  # type: ignore[index]
                # Killed soon after each start: the delay doubles (the first kill may come
                # after the child had stayed up a while: the delay starts over).
                assert delay == restart_delay(kill) or kill == 1 and delay == FIRST_BACKOFF_S
                wait_until(lambda p=part, old=pid: [x for x in stack.pids(p) if x != old],
                           delay + 60, f"{name} to come back")
        # Everything works again, and the job ran on through all of it.
        wait_until(lambda: stack.labq("nodes", check=False).returncode == 0, 60, "the API")
        stack.wait_state(job, {"RUNNING"})
        assert stack.job(job)["state"] == "RUNNING"
        assert len(stack.said(r"exited \(")) == 6, "".join(stack.output)
    finally:
        code = stack.stop()
    assert code == 0, "".join(stack.output)
    assert stack.said(r"^labq up: stopped")
    wait_until(lambda: stack.leftovers() == [], 30, "nothing of the stack left")
