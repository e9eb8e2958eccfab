"""A store outage under a running `labq agent` is two lines of its log per loop, one when it
starts and one when it ends, and no traceback (issue 21, item 6); an agent started before its
store waits for it, in one line, and says when it answers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e_stack import wait_until
from tests.valkey_proc import Valkey

pytestmark = pytest.mark.e2e


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
        wait_until(lambda: len(lines(log, "works again after")) == 2, 30,
                   "both loops to recover")
        # (The store came back empty: its node record is a heartbeat made after the outage.)
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
