"""Steps of a job across nodes (`labq step`, scheduler.cli.step; the servers: agents.steps):
the head runs a command on its other nodes through their step servers, proven by the job's
token; real processes on loopback (two "nodes" on one host, each server on its own port)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_stack import wait_until

pytestmark = pytest.mark.unit
SERVER = [sys.executable, "-m", "agents.steps"]
LABQ_STEP = [sys.executable, "-m", "scheduler.cli", "step"]


def free_port_pair() -> int:
    """A port P with P+1 free too (rank 1's server listens at LABQ_STEP_PORT + 1)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two free ports in a row")


@pytest.fixture
def job(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Rank 1's step server (its node's job environment), and the head's environment."""
    token = tmp_path / "token"
    token.write_text("a" * 64 + "\n")
    os.chmod(token, 0o600)
    base = free_port_pair()
    env = {"PATH": os.environ["PATH"], "RAY_AUTH_TOKEN_PATH": str(token),
           "LABQ_NODES": "127.0.0.1,127.0.0.1", "LABQ_NODE_NAMES": "gpu-a,gpu-b",
           "LABQ_STEP_PORT": str(base), "PYTHONPATH": os.getcwd()}
    server = subprocess.Popen([*SERVER, "serve", "127.0.0.1", str(base + 1)],
                              env={**env, "LABQ_NODE_RANK": "1", "LABQ_NODE": "gpu-b"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", base + 1)) == 0

    wait_until(listening, 20, "the step server listening")
    yield {**env, "LABQ_NODE_RANK": "0", "LABQ_NODE": "gpu-a"}
    server.kill()
    server.wait(10)


def step(env: dict[str, str], *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABQ_STEP, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False, **kw)  # type: ignore[call-overload]


def test_a_step_runs_on_every_node_in_its_part_of_the_job(job: dict[str, str],
                                                          tmp_path: Path) -> None:
    done = step(job, "--", "sh", "-c", 'echo "rank $LABQ_NODE_RANK on $LABQ_NODE in $PWD"',
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [f"rank 0 on gpu-a in {tmp_path}",
                                                f"rank 1 on gpu-b in {tmp_path}"]
    # one node, by name or rank; its stderr and exit status come back
    done = step(job, "--node", "gpu-b", "--", "sh", "-c", "echo oops >&2; exit 3")
    assert (done.returncode, done.stdout, done.stderr) == (3, "", "oops\n")
    assert step(job, "--node", "1", "--", "true").returncode == 0
    done = step(job, "--node", "gpu-z", "--", "true")
    assert done.returncode == 1
    assert done.stderr.strip() == ("labq step: the job has no node 'gpu-z' "
                                   "(its nodes: gpu-a, gpu-b)")
    done = step(job, "--node", "gpu-b", "--", "no-such-program-x")
    assert done.returncode == 127 and "no-such-program-x" in done.stderr


def test_a_caller_without_the_jobs_token_runs_nothing(job: dict[str, str],
                                                      tmp_path: Path) -> None:
    wrong = tmp_path / "other-token"
    wrong.write_text("b" * 64)
    marker = tmp_path / "ran"
    done = step({**job, "RAY_AUTH_TOKEN_PATH": str(wrong)}, "--node", "gpu-b", "--",
                "touch", str(marker))
    assert done.returncode == 255
    assert "node gpu-b closed the connection" in done.stderr
    assert not marker.exists()
    # nor does a caller that sends nothing, or garbage
    with socket.create_connection(("127.0.0.1", int(job["LABQ_STEP_PORT"]) + 1)) as raw:
        raw.sendall(b'{"token": "' + b"a" * 63 + b'", "argv": ["touch", "x"]}\n')
        assert raw.recv(100) == b""
    # outside a job across nodes: one line
    done = step({"PATH": job["PATH"], "PYTHONPATH": job["PYTHONPATH"]}, "--", "true")
    assert done.returncode == 1
    assert done.stderr.strip() == ("labq step: not inside a labq job across nodes "
                                   "(no LABQ_NODES/LABQ_STEP_PORT)")


def test_a_caller_that_goes_away_stops_its_step(job: dict[str, str], tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    caller = subprocess.Popen(
        [*LABQ_STEP, "--node", "gpu-b", "--", "sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"],
        env=job, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, "the step")
    pid = int(pidfile.read_text())
    caller.send_signal(signal.SIGKILL)  # Ctrl-C, a lost terminal: its connection closes
    caller.wait(10)

    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state == "Z"

    wait_until(gone, 20, "the step stopped when its caller went away")
    time.sleep(0.1)
