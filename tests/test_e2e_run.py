"""`labq run` end to end (like srun --pty), on a real `labq up` stack with one simulated node
of 2 GPUs: the test user types it on a real pseudo-terminal; the job is queued like any, runs
as that user on its GPU, keys and output go both ways and its exit status is labq run's;
Ctrl-C while it waits cancels it; a terminal that goes away ends the job."""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from collections.abc import Iterator

import pytest

from bench.stack import LABQ
from tests.e2e_stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack("1x2:A100-80GB").start()
    yield s
    s.stop()


class Terminal:
    """`labq ARGS` typed by the stack's test user on a pseudo-terminal of its own."""

    def __init__(self, stack: Stack, *args: str) -> None:
        env = {**stack.env, "HOME": stack.user.pw_dir, "USER": stack.user.pw_name}
        self.pid, self.master = pty.fork()
        if self.pid == 0:
            try:
                os.setgroups([])
                os.setgid(stack.user.pw_gid)
                os.setuid(stack.user.pw_uid)
                os.chdir(stack.workdir)
                os.execve(LABQ[0], [*LABQ, *args], env)
            finally:
                os._exit(127)
        self.seen = b""

    def read_until(self, text: bytes, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:
                    break
        assert text in self.seen, self.seen
        return self.seen.decode(errors="replace")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def status(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:
                    pass
        raise AssertionError(f"labq run did not end: {self.seen!r}")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.master)


def latest_job(stack: Stack) -> dict[str, object]:
    jobs = stack.labq_json("queue", "--all", "--done")
    return max(jobs, key=lambda j: int(str(j["id"])))


def test_an_interactive_job_runs_on_its_gpu_attached_to_the_terminal(stack: Stack) -> None:
    term = Terminal(stack, "run", "--gpus", "1", "--", "sh", "-c",
                    'echo "on $LABQ_NODE gpu $CUDA_VISIBLE_DEVICES as $(id -un)"; read x; '
                    'echo "got $x"; exit 4')
    try:
        text = term.read_until(b"as labq-e2e")
        assert "on sim-0 gpu " in text
        term.type(b"hello\r")
        term.read_until(b"got hello")
        assert term.status() == 4
    finally:
        term.close()
    job = stack.wait_state(str(latest_job(stack)["id"]), {"FAILED", "SUCCEEDED"})
    assert job["state"] == "FAILED" and job["exit_code"] == 4 and job["gpus"] == 1


def test_ctrl_c_while_it_waits_cancels_it(stack: Stack) -> None:
    holder = stack.submit("--gpus", "2", "--", "sleep", "300")
    stack.wait_state(holder, {"RUNNING"})
    term = Terminal(stack, "run", "--gpus", "1", "--", "true")
    try:
        term.read_until(b"waiting (Resources)")
        term.type(b"\x03")
        assert term.status() == 130
        assert b"cancelled" in term.seen
    finally:
        term.close()
        stack.labq("cancel", holder)
    assert latest_job(stack)["state"] == "CANCELLED"


def test_a_terminal_that_goes_away_ends_the_job(stack: Stack) -> None:
    stack.wait(lambda: all(n["gpus_allocated"] == 0 for n in stack.labq_json("nodes")),
               timeout=60, what="free GPUs")
    term = Terminal(stack, "run", "--gpus", "1", "--", "sh", "-c", "echo started; sleep 300")
    term.read_until(b"started")
    job_id = str(latest_job(stack)["id"])
    os.close(term.master)  # the terminal window closed: labq run is hung up, then the job
    try:
        ended = stack.wait_state(job_id, {"FAILED", "SUCCEEDED", "CANCELLED"}, timeout=60)
    finally:
        try:
            os.kill(term.pid, signal.SIGKILL)
            os.waitpid(term.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    assert ended["state"] == "FAILED" and ended["exit_code"] == 128 + signal.SIGHUP, ended
