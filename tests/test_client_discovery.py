"""How `labq` finds the coordinator (issue 19): LABQ_SERVER (TCP), LABQ_SOCKET,
/etc/labq/client.toml (here: the file LABQ_CLIENT_CONFIG names), $LABQ_HOME/labq.sock,
/run/labq/labq.sock; and one line saying what was tried when nothing is there. The real CLI
against a real API server on a Unix socket and on TCP (MUNGE from a real munged, or a token)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.munged import Munged, have_munge
from tests.security_server import ApiServer, can_switch_users, ensure_user

pytestmark = pytest.mark.skipif(not can_switch_users(), reason="needs root and useradd")

USER = "labq-sec-disc"


@pytest.fixture(scope="module")
def munged() -> Iterator[Munged | None]:
    if not have_munge():
        yield None
        return
    daemon = Munged().start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def server(valkey_url: str, munged: Munged | None) -> Iterator[ApiServer]:
    ensure_user(USER)
    srv = ApiServer(valkey_url, tcp=True,
                    munge_socket=munged.socket if munged else "").start()
    yield srv
    srv.stop()


def labq(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("LABQ_SERVER", "LABQ_SOCKET", "LABQ_TOKEN", "LABQ_TLS_CA_FILE",
                          "LABQ_MUNGE_SOCKET")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    full = {**clean, "HOME": str(home), "LABQ_HOME": str(tmp_path / "labq"),
            "LABQ_CLIENT_CONFIG": str(tmp_path / "client.toml"), **env}
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], env=full,
                          capture_output=True, text=True, timeout=60)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labq: error: "), result.stderr
    return lines[0]


@pytest.mark.skipif(Path("/run/labq/labq.sock").exists(), reason="a coordinator runs here")
def test_nothing_found_says_what_was_tried(tmp_path: Path) -> None:
    line = one_line_error(labq(tmp_path, "whoami"))
    for tried in ("LABQ_SERVER", "LABQ_SOCKET", str(tmp_path / "client.toml"),
                  str(tmp_path / "labq" / "labq.sock"), "/run/labq/labq.sock",
                  "labq is not running here", "start it with `labq up`"):
        assert tried in line, (tried, line)


def test_labq_home_socket(tmp_path: Path, server: ApiServer) -> None:
    result = labq(tmp_path, "whoami", LABQ_HOME=str(server.dir))
    assert result.returncode == 0 and "(uid 0) admin" in result.stdout, result.stderr


def test_labq_socket_before_client_toml(tmp_path: Path, server: ApiServer) -> None:
    (tmp_path / "client.toml").write_text('server = "127.0.0.1:1"\n')
    result = labq(tmp_path, "whoami", LABQ_SOCKET=server.socket)
    assert result.returncode == 0 and "(uid 0)" in result.stdout, result.stderr


def test_client_toml_socket_and_server(tmp_path: Path, server: ApiServer) -> None:
    (tmp_path / "client.toml").write_text(f'socket = "{server.socket}"\n')
    result = labq(tmp_path, "whoami")
    assert result.returncode == 0 and "(uid 0)" in result.stdout, result.stderr
    status, made = server.call("POST", "/v1/admin/tokens", {"user": USER})
    assert status == 200
    (tmp_path / "client.toml").write_text(f'server = "{server.server}"\n'
                                          f'socket = "{server.socket}"\n')
    result = labq(tmp_path, "whoami", LABQ_TOKEN=made["token"])  # server first
    assert result.returncode == 0 and result.stdout.startswith(USER), result.stderr


def test_bad_client_toml_and_server(tmp_path: Path) -> None:
    (tmp_path / "client.toml").write_text('serverr = "x:1"\n')
    assert "serverr" in one_line_error(labq(tmp_path, "whoami"))
    (tmp_path / "client.toml").write_text('server = [\n')
    assert "client.toml" in one_line_error(labq(tmp_path, "whoami"))
    (tmp_path / "client.toml").unlink()
    line = one_line_error(labq(tmp_path, "whoami", LABQ_SERVER="no-port-here"))
    assert "host:port" in line
    line = one_line_error(labq(tmp_path, "whoami", LABQ_SERVER="127.0.0.1:1",
                               LABQ_TOKEN="labq_x"))
    assert "127.0.0.1:1" in line


def test_token_file_must_be_private(tmp_path: Path, server: ApiServer) -> None:
    status, made = server.call("POST", "/v1/admin/tokens", {"user": USER})
    assert status == 200
    token_file = tmp_path / "home" / ".config" / "labq" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(made["token"] + "\n")
    token_file.chmod(0o644)
    line = one_line_error(labq(tmp_path, "whoami", LABQ_SERVER=server.server))
    assert "chmod 600" in line
    token_file.chmod(0o600)
    result = labq(tmp_path, "whoami", LABQ_SERVER=server.server)
    assert result.returncode == 0 and result.stdout.startswith(USER), result.stderr


@pytest.mark.skipif(not have_munge(), reason="needs munge")
def test_labq_server_with_munge(tmp_path: Path, server: ApiServer, munged: Munged) -> None:
    result = labq(tmp_path, "whoami", LABQ_SERVER=server.server,
                  LABQ_MUNGE_SOCKET=munged.socket)
    assert result.returncode == 0 and "(uid 0) admin" in result.stdout, result.stderr
    (tmp_path / "client.toml").write_text(f'server = "{server.server}"\n'
                                          f'munge_socket = "{munged.socket}"\n')
    result = labq(tmp_path, "whoami")
    assert result.returncode == 0 and "(uid 0) admin" in result.stdout, result.stderr
