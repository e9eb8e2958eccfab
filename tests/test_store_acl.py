"""The store of a real `labq up` started by root is locked (issue 10, part 1): a Unix socket in
a private folder, no TCP port, the default user off, and ACL users. An unprivileged user cannot
connect at all; a node agent's login (what a compromised node holds) gets NOPERM outside its
node; no password is in any process's environment or command line."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from scheduler.config import ConfigError, Settings
from scheduler.store import StoreError, read_secret
from scheduler.store.acl import COORDINATOR_USER, AclError, agent_rules, agent_user, setuser_lines
from scheduler.store.keys import Keys
from tests.e2e_stack import Stack, python_as
from tests.security_server import can_switch_users, ensure_user

EVE = "labq-sec-eve"
needs_root = pytest.mark.skipif(not can_switch_users(),
                                reason="needs root, useradd and /usr/bin/python3")


def sock(stack: Stack) -> str:
    return str(stack.home / "valkey" / "valkey.sock")


def login(stack: Stack, user: str, password_file: str) -> redis.Redis:
    return redis.Redis(unix_socket_path=sock(stack), username=user, decode_responses=True,
                       password=read_secret(stack.home / "secrets" / password_file))


@pytest.fixture(scope="module")
def agent0(locked_stack: Stack) -> Iterator[redis.Redis]:
    """The agent of sim-0's login, as an attacker on that node would hold it."""
    client = login(locked_stack, agent_user("sim-0"), "agent-sim-0.pass")
    yield client
    client.close()


def script(client: redis.Redis, body: str, keys: list[str], *args: Any) -> Any:
    return client.register_script(body)(keys=keys, args=list(args))


# ----------------------------------------------------------------- an unprivileged user

PROBE = r'''
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1] if len(sys.argv) > 1 else PATH)
    s.sendall(b"PING\r\n"); print("ANSWER", s.recv(64))
except OSError as exc:
    print(type(exc).__name__, exc.errno)
for path in PASSFILES:
    try:
        print("READ", open(path).read())
    except OSError as exc:
        print(type(exc).__name__, exc.errno)
'''


@pytest.mark.e2e
@needs_root
def test_a_user_cannot_connect_to_the_store_nor_read_its_passwords(locked_stack: Stack) -> None:
    ensure_user(EVE)
    passfiles = [str(locked_stack.home / "secrets" / f)
                 for f in ("coordinator.pass", "agent-sim-0.pass")]
    code = PROBE.replace("PATH", repr(sock(locked_stack))).replace("PASSFILES", repr(passfiles))
    result = python_as(EVE, code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[0] == "PermissionError 13", result.stdout  # the 0700 folder, before the socket
    assert lines[1:3] == ["PermissionError 13"] * 2, result.stdout
    assert "ANSWER" not in result.stdout and "READ" not in result.stdout


@pytest.mark.e2e
@needs_root
def test_the_store_has_no_tcp_port_and_no_anonymous_user(locked_stack: Stack) -> None:
    # Valkey rewrites its title over argv and environ: `valkey-server unixsocket:PATH`
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and _cmdline(p).endswith(f"unixsocket:{sock(locked_stack)}")]
    assert len(pids) == 1
    inodes = {os.readlink(f"/proc/{pids[0]}/fd/{fd}")
              for fd in os.listdir(f"/proc/{pids[0]}/fd")}
    sockets = {i[len("socket:["):-1] for i in inodes if i.startswith("socket:[")}
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in sockets:  # LISTEN
                listening.append(cols[1])
    assert listening == []
    anonymous = redis.Redis(unix_socket_path=sock(locked_stack))  # root may reach the socket
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(unix_socket_path=sock(locked_stack), username=COORDINATOR_USER,
                    password="guessed").ping()


@pytest.mark.e2e
@needs_root
def test_no_password_in_any_process_environment_or_command_line(locked_stack: Stack) -> None:
    secrets = [read_secret(p) for p in (locked_stack.home / "secrets").iterdir()]
    assert len(secrets) == 4  # the coordinator, the two agents, and the metrics token
    pids = locked_stack.pids()
    assert len(pids) >= 4  # labq up, valkey, the coordinator, the agents
    for pid in pids:
        try:
            seen = (Path(f"/proc/{pid}/environ").read_bytes()
                    + Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            continue  # gone meanwhile
        assert not any(secret.encode() in seen for secret in secrets), pid


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


# ----------------------------------------------------------------- a node agent's login

@pytest.mark.e2e
@needs_root
@pytest.mark.parametrize(("what", "call"), [
    ("HSET a job", lambda r: r.hset("labq:job:1", "user", "eve")),
    ("read a job", lambda r: r.hgetall("labq:job:1")),
    ("read the usage", lambda r: r.hgetall("labq:usage")),
    ("wipe the usage", lambda r: r.delete("labq:usage")),
    ("make a user admin", lambda r: r.hset("labq:users", "eve", '{"admin": true}')),
    ("another node's runs", lambda r: r.hgetall("labq:node:sim-1:runs")),
    ("another node's hash", lambda r: r.hset("labq:node:sim-1", "state", "DOWN")),
    # Liveness is the time in a node's own hash: nothing else an agent can write keeps a
    # silent node UP (the heartbeats set it once could add to is gone).
    ("keep another node alive", lambda r: r.hset("labq:node:sim-1", "last_heartbeat", 9e12)),
    ("a heartbeats set", lambda r: r.zadd("labq:heartbeats", {"sim-1": 9e12})),
    ("a look-alike key", lambda r: r.hset("labq:node:sim-0x", "a", "1")),
    # An admin's drain is the coordinator's: no node lifts its own, nor forges one.
    ("lift its drain", lambda r: r.hdel("labq:drains", "sim-0")),
    ("forge a drain", lambda r: r.hset("labq:drains", "sim-1", '{"by": "root"}')),
    ("read the drains", lambda r: r.hgetall("labq:drains")),
    ("the nodes set", lambda r: r.delete("labq:nodes")),
    ("the leader lease", lambda r: r.set("labq:leader", "me")),
    ("list keys", lambda r: r.keys("*")),
    ("the configuration", lambda r: r.config_get("*")),
    ("the ACL", lambda r: r.acl_list()),
])
def test_an_agent_gets_noperm_outside_its_node(agent0: redis.Redis, what: str,
                                               call: Any) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        call(agent0)


@pytest.mark.e2e
@needs_root
@pytest.mark.parametrize(("what", "body", "keys"), [
    ("a job by a script", "return redis.call('HSET', KEYS[1], 'state', 'RUNNING')",
     ["labq:job:1"]),
    ("delete the nodes set inside its own script", "return redis.call('DEL', KEYS[2])",
     ["labq:node:sim-0", "labq:nodes"]),
    ("read the nodes set inside its own script", "return redis.call('SMEMBERS', KEYS[2])",
     ["labq:node:sim-0", "labq:nodes"]),
    ("keep another node alive from its own script",
     "return redis.call('HSET', KEYS[2], 'last_heartbeat', '9e12')",
     ["labq:node:sim-0", "labq:node:sim-1"]),
    ("a key it did not declare", "return redis.call('HGETALL', 'labq:usage')",
     ["labq:node:sim-0"]),
    ("lift its drain from its own script", "return redis.call('HDEL', KEYS[2], 'sim-0')",
     ["labq:node:sim-0", "labq:drains"]),
    ("lift its drain from a script of its keys",
     "return redis.call('HDEL', 'labq:drains', 'sim-0')", ["labq:node:sim-0"]),
    ("the heartbeat of another node", "return redis.call('HSET', KEYS[1], 'state', 'UP')",
     ["labq:node:sim-1", "labq:nodes"]),
])
def test_an_agents_scripts_cannot_reach_past_its_keys(agent0: redis.Redis, what: str,
                                                     body: str, keys: list[str]) -> None:
    with pytest.raises(redis.exceptions.ResponseError) as refused:
        script(agent0, body, keys)
    assert "permission" in str(refused.value).lower()


@pytest.mark.e2e
@needs_root
def test_an_agent_runs_its_own_scripts_and_reads_its_own_keys(locked_stack: Stack,
                                                              agent0: redis.Redis) -> None:
    import asyncio

    from scheduler.model import GpuInfo, NodeReport
    from scheduler.store import Store

    async def as_agent() -> tuple[str, int, Any]:
        store = Store.from_url(f"unix://{sock(locked_stack)}", "labq:", agent_user("sim-0"),
                               read_secret(locked_stack.home / "secrets" / "agent-sim-0.pass"))
        try:
            report = NodeReport(name="sim-0", simulated=True, gpus=[GpuInfo(
                index=0, uuid="GPU-sim-0-0", model="SIM-GPU", memory_total_bytes=1 << 30,
                memory_used_bytes=0, utilization=0.0)])
            state = await store.heartbeat(report, time.time())
            changed = await store.report_runs("sim-0", {})
            orders = await store.node_orders("sim-0")
            await store.wait_wake(store.keys.node_wake("sim-0"), 0.05)
            return state, changed, orders
        finally:
            await store.close()

    state, changed, orders = asyncio.run(as_agent())
    assert state == "UP" and changed == 0 and orders == ({}, {}, {})
    nodes = json.loads(locked_stack.labq("nodes", "--json").stdout)
    assert {n["name"]: n["state"] for n in nodes} == {"sim-0": "UP", "sim-1": "UP"}


@pytest.mark.e2e
@needs_root
def test_the_coordinator_login_cannot_run_admin_commands(locked_stack: Stack) -> None:
    client = login(locked_stack, COORDINATOR_USER, "coordinator.pass")
    try:
        assert client.hget("labq:node:sim-0", "name") == "sim-0"
        for call in (client.flushall, lambda: client.config_get("*"), client.acl_list,
                     lambda: client.keys("*"), lambda: client.get("not-labq")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                call()
    finally:
        client.close()


# ----------------------------------------------------------------- settings and rules

def test_a_password_in_the_url_is_refused_at_load(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABQ_REDIS_URL", "redis://labq:hunter2@head:6379/0")
    with pytest.raises(ConfigError, match="redis_password_file"):
        Settings.load(tmp_path)
    monkeypatch.setenv("LABQ_REDIS_URL", "http://head:6379")
    with pytest.raises(ConfigError, match="unix:///"):
        Settings.load(tmp_path)
    monkeypatch.setenv("LABQ_REDIS_URL", "rediss://head:6380/0?ssl_ca_certs=/etc/labq/ca.pem")
    monkeypatch.setenv("LABQ_REDIS_USERNAME", COORDINATOR_USER)
    assert Settings.load(tmp_path).redis_username == COORDINATOR_USER


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.pass"
    path.write_text("s3cret\n")
    os.chmod(path, 0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        read_secret(path)
    os.chmod(path, 0o600)
    assert read_secret(path) == "s3cret"


def test_acl_patterns_never_take_glob_characters() -> None:
    with pytest.raises(AclError):
        agent_rules(Keys("labq:"), "gpu*")
    with pytest.raises(ConfigError, match="redis_prefix"):
        Settings.load(Path("/nonexistent"), redis_prefix="lab?:")
    line = setuser_lines(Keys("labq:"), ["gpu1"])[1]
    assert re.search(r" ~labq:node:gpu1 ~labq:node:gpu1:\* ", line)


def test_the_readme_setuser_lines_make_a_working_locked_store(valkey_url: str) -> None:
    """The exact lines the README shows, applied as redis-cli would send them."""
    import shlex

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for line in setuser_lines(Keys("labq:"), ["gpu1"]):
        assert line in readme, line
    prefix, node = f"acl{os.getpid()}:", "gpu1"
    admin = redis.Redis.from_url(valkey_url, decode_responses=True)
    users = {}
    try:
        secrets = {u: f"pw-{u}" for u in (COORDINATOR_USER, agent_user(node))}
        for line in setuser_lines(Keys(prefix), [node], secrets):
            words = shlex.split(line)
            users[words[2]] = secrets[words[2]]
            admin.execute_command(*words)
        agent = redis.Redis.from_url(valkey_url, username=agent_user(node),
                                     password=users[agent_user(node)], decode_responses=True)
        agent.hset(f"{prefix}node:{node}:status", "1", "{}")
        with pytest.raises(redis.exceptions.NoPermissionError):
            agent.hset(f"{prefix}job:1", "user", "eve")
        with pytest.raises(redis.exceptions.NoPermissionError):
            agent.hgetall(f"{prefix}node:gpu2:runs")
        agent.close()
    finally:
        for user in users:
            admin.execute_command("ACL", "DELUSER", user)
        admin.close()
