"""Issue 18, item 8, with real processes: a second coordinator on the same home refuses with one
line and leaves the first serving; a socket that still answers is never unlinked, a dead one
is replaced; a metrics port held by another user's process never stops the API or the
scheduling (one line says so), and is bound once it is free."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.client import UnixConnection
from scheduler.model import GpuInfo, NodeReport
from scheduler.store import Store
from tests.e2e_stack import LABQ, Stack, wait_until
from tests.e2e_stack import ensure_user as ensure_home_user
from tests.security_server import SYSTEM_PYTHON, call_as, can_switch_users, ensure_user

SQUATTER = "labq-squat"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def whoami(path: Path) -> int:
    conn = UnixConnection(str(path), timeout=5)
    try:
        conn.request("GET", "/v1/whoami")
        return conn.getresponse().status
    finally:
        conn.close()


def second_coordinator(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABQ, "coordinator"], env=env, capture_output=True, text=True,
                          timeout=60)


def refused_in_one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labq: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack("1x1").start()
    yield s
    s.stop()
    shutil.rmtree(s.home, ignore_errors=True)


@pytest.mark.e2e
def test_a_second_coordinator_on_the_same_home_refuses_and_the_first_serves_on(
        stack: Stack) -> None:
    sock = stack.home / "labq.sock"
    before = sock.stat().st_ino
    result = second_coordinator(stack.env)
    line = refused_in_one_line(result)
    assert "another coordinator is serving" in line and str(sock) in line
    assert sock.stat().st_ino == before  # the same socket, not unlinked and made again
    assert whoami(sock) == 200
    assert stack.labq("queue").returncode == 0
    assert stack.proc is not None and stack.proc.poll() is None


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="labq-coord-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def coordinator_env(home: Path, valkey_url: str, metrics_port: int) -> dict[str, str]:
    return {**os.environ, "LABQ_HOME": str(home), "LABQ_REDIS_URL": valkey_url,
            "LABQ_REDIS_PREFIX": f"co{uuid.uuid4().hex[:8]}:",
            "LABQ_METRICS_PORT": str(metrics_port), "PYTHONUNBUFFERED": "1"}


def test_a_socket_something_answers_on_is_never_unlinked(home: Path, valkey_url: str) -> None:
    """Something else (not holding the coordinator's lock: an older coordinator, another
    program) listens on the socket path: it keeps it."""
    path = home / "labq.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    try:
        result = second_coordinator(coordinator_env(home, valkey_url, free_port()))
        assert "another coordinator is serving" in refused_in_one_line(result)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))  # still the listener's: it accepts
        conn, _ = listener.accept()
        conn.close()
        probe.close()
    finally:
        listener.close()


def test_a_file_that_is_not_a_socket_is_left_alone(home: Path, valkey_url: str) -> None:
    path = home / "labq.sock"
    path.write_text("precious\n")
    result = second_coordinator(coordinator_env(home, valkey_url, free_port()))
    assert "is not a socket" in refused_in_one_line(result)
    assert path.read_text() == "precious\n"


def squat(port: int) -> subprocess.Popen[str]:
    """Another user's process holding 127.0.0.1:port."""
    ensure_user(SQUATTER)
    entry = pwd.getpwnam(SQUATTER)
    code = ("import socket, sys, time\ns = socket.socket()\n"
            f"s.bind(('127.0.0.1', {port}))\ns.listen(8)\nprint('held', flush=True)\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", code], user=entry.pw_uid, group=entry.pw_gid,
                            extra_groups=[], cwd="/", stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def add_node(valkey_url: str, prefix: str) -> None:
    store = Store.from_url(valkey_url, prefix=prefix)
    try:
        await store.heartbeat(NodeReport(name="n1", simulated=True, gpus=[
            GpuInfo(index=0, uuid="GPU-n1-0", model="NVIDIA A100-SXM4-80GB",
                    memory_total_bytes=1 << 30, memory_used_bytes=0, utilization=0.0)]),
            time.time())
    finally:
        await store.close()


@pytest.mark.skipif(not can_switch_users(), reason="needs root, useradd and /usr/bin/python3")
def test_a_taken_metrics_port_never_stops_the_api_or_scheduling(home: Path,
                                                                valkey_url: str) -> None:
    import asyncio

    # A dead socket from a coordinator that was killed: replaced, not refused.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(home / "labq.sock"))
    dead.close()
    port = free_port()
    squatter = squat(port)
    env = coordinator_env(home, valkey_url, port)
    asyncio.run(add_node(valkey_url, env["LABQ_REDIS_PREFIX"]))
    alice = ensure_home_user("alice").pw_name
    log_path = home / "coordinator.log"
    with open(log_path, "wb") as log:
        coordinator = subprocess.Popen([*LABQ, "coordinator"], env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
    try:
        sock = home / "labq.sock"
        wait_until(lambda: sock.is_socket() and _answers(sock), 30, "the API to answer")
        status, answer = call_as(alice, str(sock), "POST", "/v1/jobs", {
            "command": ["true"], "workdir": "/tmp", "gpus": 1, "return_jobs": True})
        assert status == 200, answer
        job_id = answer["jobs"][0]["id"]

        def started() -> Any:
            status, job = call_as(alice, str(sock), "GET", f"/v1/jobs/{job_id}")
            return status == 200 and job["state"] != "PENDING" and job
        job = wait_until(started, 30, "the scheduler to start the job")
        assert job["node"] == "n1"
        assert not healthz(port)
        taken = [line for line in log_path.read_text().splitlines() if "metrics port" in line]
        assert len(taken) == 1 and f":{port} cannot be bound" in taken[0], taken
        assert coordinator.poll() is None

        squatter.send_signal(signal.SIGTERM)
        squatter.wait(10)
        wait_until(lambda: healthz(port), 20, "the metrics port to be bound once free")
        text = log_path.read_text()
        assert "its port is free again" in text
        assert len([line for line in text.splitlines() if "metrics port" in line]) == 1
        assert json.loads(urllib.request.urlopen(  # noqa: S310 - local URL
            f"http://127.0.0.1:{port}/healthz", timeout=5).read())["ok"] is True
    finally:
        squatter.kill()
        squatter.wait()
        coordinator.send_signal(signal.SIGTERM)
        try:
            coordinator.wait(30)
        except subprocess.TimeoutExpired:
            coordinator.kill()
            coordinator.wait()


def _answers(path: Path) -> bool:
    try:
        return whoami(path) == 200
    except OSError:
        return False
