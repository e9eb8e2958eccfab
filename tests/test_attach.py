"""An interactive job's terminal (`labq run`): the node side (agents.attach) and the caller
(scheduler.cli.attach), real processes on loopback, the caller on a real pseudo-terminal as a
user's shell would be: keys and window size reach the command, its output and exit status
come back, Ctrl-C interrupts it, a caller that goes away hangs it up, and a connection without
the job's token is ignored."""

from __future__ import annotations

import os
import pty
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.attach import set_winsize
from scheduler.jobwire import TOKEN_ENV
from tests.e2e_stack import wait_until

pytestmark = pytest.mark.unit

CALLER = """
import sys
from scheduler.cli.attach import accept_job, listener, relay
lsock = listener("127.0.0.1")
open(sys.argv[1], "w").write(str(lsock.getsockname()[1]))
conn = accept_job(lsock, sys.argv[2], lambda: True)
sys.exit(relay(conn))
"""


@dataclass
class Session:
    caller: int  # pid, on the pty
    master: int
    port: int
    token: str
    unread: bytes = b""

    def job(self, *command: str, token: str = "") -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "agents.attach", f"127.0.0.1:{self.port}", "--", *command],
            env={**os.environ, TOKEN_ENV: token or self.token})

    def read_until(self, text: bytes, timeout: float = 20) -> bytes:
        """What the terminal showed up to and with `text` (the rest is kept for the next)."""
        deadline = time.monotonic() + timeout
        while text not in self.unread and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.unread += os.read(self.master, 4096)
                except OSError:
                    break
        assert text in self.unread, self.unread
        end = self.unread.index(text) + len(text)
        seen, self.unread = self.unread[:end], self.unread[end:]
        return seen

    def status(self) -> int:
        _, status = os.waitpid(self.caller, 0)
        return os.waitstatus_to_exitcode(status)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    portfile = tmp_path / "port"
    token = secrets.token_hex(16)
    pid, master = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", CALLER, str(portfile), token])
    set_winsize(master, 33, 111)
    wait_until(lambda: portfile.exists() and portfile.read_text(), 20, "the caller listening")
    made = Session(pid, master, int(portfile.read_text()), token)
    yield made
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    os.close(master)


def test_keys_size_output_and_status_go_both_ways(session: Session) -> None:
    job = session.job("sh", "-c", f'stty size; echo "token? ${{{TOKEN_ENV}:-none}}"; '
                      'read x; echo "got $x"; exit 3')
    session.read_until(b"33 111")
    session.read_until(b"token? none")  # the command never sees the job's token
    os.write(session.master, b"hello\r")
    session.read_until(b"got hello")
    assert job.wait(20) == 3
    assert session.status() == 3


def test_ctrl_c_interrupts_the_command(session: Session) -> None:
    job = session.job("sh", "-c", "echo ready; exec sleep 100")
    session.read_until(b"ready")
    os.write(session.master, b"\x03")
    assert job.wait(20) == 130  # 128 + SIGINT, from the job's own terminal
    assert session.status() == 130


def test_a_caller_that_goes_away_hangs_the_command_up(session: Session) -> None:
    job = session.job("sh", "-c", "echo ready; exec sleep 100")
    session.read_until(b"ready")
    os.kill(session.caller, signal.SIGKILL)
    assert job.wait(20) == 128 + signal.SIGHUP


def test_a_connection_without_the_token_is_ignored(session: Session) -> None:
    impostor = session.job("sh", "-c", "echo impostor", token="0" * 32)
    impostor.wait(20)
    with socket.create_connection(("127.0.0.1", session.port)) as raw:
        raw.sendall(b"nonsense\n")
        assert raw.recv(10) == b""  # closed unanswered
    job = session.job("sh", "-c", "echo the real one")
    seen = session.read_until(b"the real one")
    assert b"impostor" not in seen
    assert job.wait(20) == 0 and session.status() == 0
