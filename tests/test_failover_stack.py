"""A whole labq on a replicated store (issue 21, item 3): a coordinator and an agent (real
`labq coordinator` and `labq agent --simulate` processes) find the primary through three
Sentinels (tests/sentinel.py: real valkey-server processes). The primary is killed (-9) while
a job runs and another waits: the daemons follow the promoted replica, the leader takes a new
epoch there, the running job ends SUCCEEDED as its node recorded, the waiting one starts, a
submit after the failover runs, and no GPU is held by two jobs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e_stack import wait_until
from tests.security_server import ensure_user
from tests.sentinel import MASTER, SentinelStore

pytestmark = [pytest.mark.store, pytest.mark.e2e]
PY = [sys.executable, "-P", "-m", "scheduler.cli"]
ENDED = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}
USER = "labq-fo-user"


class Daemons:
    """One coordinator and one simulated 1-GPU node on the replicated store, on loopback."""

    def __init__(self, replicated: SentinelStore) -> None:
        self.replicated = replicated
        self.root = Path(tempfile.mkdtemp(prefix="labq-failover-"))
        os.chmod(self.root, 0o755)
        self.node = f"fo{uuid.uuid4().hex[:6]}"
        self.prefix = f"fo{uuid.uuid4().hex[:8]}:"
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1",
                    "LABQ_REDIS_URL": "redis:///0", "LABQ_REDIS_SENTINELS": replicated.sentinels,
                    "LABQ_REDIS_SENTINEL_MASTER": MASTER, "LABQ_REDIS_PREFIX": self.prefix,
                    "LABQ_HEARTBEAT_INTERVAL": "1", "LABQ_NODE_TIMEOUT": "30",
                    "LABQ_METRICS_PORT": "0"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.work = self.root / "work"  # the jobs' working directory, their user's to write
        self.work.mkdir(mode=0o777)
        os.chmod(self.work, 0o777)

    def start(self) -> Daemons:
        for name, argv in (("coordinator", ["coordinator"]),
                           ("agent", ["agent", "--node", self.node, "--simulate", "1:A100-80GB"])):
            home = self.root / name
            home.mkdir(mode=0o755)
            log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
            self.procs[name] = subprocess.Popen(
                [*PY, *argv], env={**self.env, "LABQ_HOME": str(home)}, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
        wait_until(lambda: any(n["state"] == "UP" for n in self.json("nodes")), 60,
                   "the node UP" + self.logs())
        return self

    def labq(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "LABQ_HOME": str(self.root / "coordinator")}
        return subprocess.run([*PY, *args], env=env, capture_output=True, text=True,
                              timeout=60, check=False)

    def submit(self, *command: str) -> str:
        """A job of the test's user, submitted by root for them (root's jobs never run)."""
        ensure_user(USER)
        result = self.labq("submit", "--as", USER, "--workdir", str(self.work), "--", *command)
        assert result.returncode == 0, result.stderr + self.logs()
        return result.stdout.strip()

    def json(self, *args: str) -> Any:
        result = self.labq(*args, "--json")
        return json.loads(result.stdout) if result.returncode == 0 else []

    def state(self, job_id: str) -> str:
        shown = self.labq("show", job_id, "--json")
        return str(json.loads(shown.stdout)["state"]) if shown.returncode == 0 else ""

    def epoch(self) -> int:
        client = self.replicated.client(self.replicated.primary)
        try:
            return int(client.get(f"{self.prefix}epoch") or 0)
        finally:
            client.close()

    def logs(self) -> str:
        return "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}"
                       for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    replicated = SentinelStore().start()
    made = Daemons(replicated)
    try:
        yield made.start()
    finally:
        made.stop()
        replicated.stop()


def test_jobs_carry_on_through_a_store_failover(daemons: Daemons) -> None:
    first = daemons.submit("sleep", "12")
    wait_until(lambda: daemons.state(first) == "RUNNING", 60, "the first job RUNNING")
    waiting = daemons.submit("true")
    assert daemons.state(waiting) == "PENDING"  # the node's one GPU is the first job's
    epoch = daemons.epoch()
    assert epoch >= 1

    killed_at = time.time()
    took = daemons.replicated.kill_primary()
    # the daemons ask the Sentinels again and go on with the promoted replica
    wait_until(lambda: daemons.epoch() > epoch, 60,
               "the leader on a new epoch on the new primary" + daemons.logs())
    wait_until(lambda: daemons.state(first) in ENDED, 90, "the first job ended" + daemons.logs())
    assert daemons.state(first) == "SUCCEEDED", daemons.logs()
    wait_until(lambda: daemons.state(waiting) in ENDED, 60, "the waiting job ran")
    assert daemons.state(waiting) == "SUCCEEDED"
    after = daemons.submit("true")
    wait_until(lambda: daemons.state(after) == "SUCCEEDED", 60,
               "a job submitted after the failover ran")
    shown = {job_id: json.loads(daemons.labq("show", job_id, "--json").stdout)
             for job_id in (first, waiting, after)}
    assert shown[first]["ended_at"] > killed_at  # it ran through the failover
    spans = sorted((j["started_at"], j["ended_at"]) for j in shown.values())
    # one GPU: each job started after the one before it ended
    assert all(later[0] >= earlier[1] - 0.001 for earlier, later in zip(spans, spans[1:],
                                                                         strict=False)), spans
    print(f"store failover: the replica was promoted {took:.1f} s after the primary was killed")


def test_the_sentinel_store_reaches_the_labq_keys_after_a_failover(daemons: Daemons) -> None:
    """The daemons' keys live on whichever server is primary: nothing labq wrote is only on
    the old one (the replica had it all: every acknowledged write waited for it)."""
    job_id = daemons.submit("true")
    wait_until(lambda: daemons.state(job_id) == "SUCCEEDED", 60, "a job ran")
    daemons.replicated.kill_primary()
    wait_until(lambda: daemons.state(job_id) == "SUCCEEDED", 60,
               "the job read from the new primary" + daemons.logs())
    client = daemons.replicated.client(daemons.replicated.primary)
    try:
        assert client.hget(f"{daemons.prefix}job:{job_id}", "state") == "SUCCEEDED"
    except redis.RedisError as exc:  # pragma: no cover - shown with the logs
        raise AssertionError(f"{exc}{daemons.logs()}") from None
    finally:
        client.close()
