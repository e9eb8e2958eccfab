"""The agent's side of running jobs: converge this node's runners on the coordinator's orders.

The coordinator's orders for the node are its start records and stop requests in the store
(scheduler.noderun). `reconcile` compares them with the runners on disk (one directory per
attempt under `<state dir>/runs/`, see agents.runner) and:
  - starts a runner for each new start record (or reports FAILED/EXITED without starting);
  - asks a runner to stop (SIGTERM to it) when the attempt has a stop request, or when the
    coordinator no longer assigns the attempt to this node (it ended, moved, or the node was
    declared lost): nothing runs that labq does not know of;
  - reports every attempt's state (report_runs.lua keeps only assigned attempts);
  - removes a finished runner's directory once the coordinator is done with the attempt.
Runners outlive the agent; a restarted agent finds them all again here (it keeps nothing in
memory that the directories do not hold). A runner is known by its pid and that process's
start time (recorded by the agent when it starts it, and by the runner in its state), never
by a command line, which anyone can forge.

Each agent has an install id of its own (a random id in its state directory, kept across
restarts): its cgroups live under `<cgroup root>/<install id>/`, so that two installs on one
host (the same node names, the same job ids) never touch each other's jobs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from agents import devices
from agents.cgroups import Layout, cgroup_of
from agents.jobdirs import job_dir_path, ray_dir_path, remove_job_dir
from agents.noderes import NodeResources, measure, remove_v1_groups
from agents.procinfo import Misuse, misplaced, parent_of, start_time, started_at
from agents.runner import SPEC_FILE, STOP_FILE, RunSpec, RunState
from scheduler import noderun
from scheduler.config import login_defs_uid_min
from scheduler.model import GpuInfo
from scheduler.noderun import RunStatus, StartRecord
from scheduler.store import Store

log = logging.getLogger(__name__)
STOP_RESEND_S = 5.0
RUNNER_MODULE = "agents.runner"
INSTALL_ID_FILE = "install_id"
RUNNER_FILE = "runner"  # "<pid> <start time>" of the run's runner, written by the agent
CGROUP_FILE = "cgroup"  # the install's cgroup directory, for `remove_install_cgroup`


MISUSE_POLICIES = ("stop", "warn")


class Executor:
    """`min_job_uid`: no job runs as a uid below it (0: UID_MIN of /etc/login.defs);
    `job_user_deny`: nor as these users (the runner checks both, besides root).
    `gpu_misuse_policy`: what a job gets whose process is seen on a GPU it was not given
    ("warn": logged, and reported on that GPU as a process labq did not start; "stop": that,
    and the job is stopped, its reason saying why). `confine_devices`: each job's cgroup
    gets a device program that lets it open no GPU but its own (agents.devices), where the
    node allows it (`device_confinement` says what this node does)."""

    def __init__(self, store: Store, node: str, state_dir: Path, layout: Layout, *,
                 grace_s: float = 10.0, simulated: bool = False, api_socket: str = "",
                 api_server: str = "",
                 python: str = sys.executable, min_job_uid: int = 0,
                 job_user_deny: Sequence[str] = (), gpu_misuse_policy: str = "stop",
                 confine_devices: bool = True, resources: NodeResources | None = None) -> None:
        if gpu_misuse_policy not in MISUSE_POLICIES:
            raise ValueError(f"gpu_misuse_policy = {gpu_misuse_policy!r}: use stop or warn")
        self.store = store
        self.node = node
        self.runs_dir = state_dir / "runs"
        self.grace_s = grace_s
        self.simulated = simulated
        self.api_socket = api_socket
        self.api_server = api_server
        self.python = python
        self.min_job_uid = min_job_uid or login_defs_uid_min()
        self.job_user_deny = list(job_user_deny)
        self.gpu_misuse_policy = gpu_misuse_policy
        self.resources = resources or measure()  # what jobs' CPU and memory shares are of
        self.node_gpus = 0  # the node's GPUs (set by the agent from its GPU read)
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # reaped when they exit
        self._stop_sent: dict[str, float] = {}
        self._specs: dict[str, RunSpec] = {}  # run key -> its spec (never changes)
        self._misuse_seen: set[tuple[str, int, int]] = set()  # (job, pid, gpu) logged
        self._misuse_stops: dict[str, str] = {}  # job id -> why (the heartbeat's thread adds)
        self._lock = threading.Lock()
        old = os.umask(0o077)
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        finally:
            os.umask(old)
        os.chmod(state_dir, 0o700)
        self.install_id = install_id(state_dir)
        self.layout = layout.for_install(self.install_id)
        if self.layout.root is not None:
            _write_private(state_dir / CGROUP_FILE, str(self.layout.root))
        why_not = ("turned off" if not confine_devices
                   else "no cgroup v2 group per job" if self.layout.root is None
                   else devices.available())
        self.confining = not why_not
        self.device_confinement = (
            "each job's cgroup lets it open no NVIDIA GPU but its own (BPF device program)"
            if self.confining else f"GPUs not confined by the kernel ({why_not}): only "
            f"CUDA_VISIBLE_DEVICES, and the agent's check of what runs on each GPU")
        # The driver minor of each GPU index (simulated GPUs: the index itself).
        self._minors = [] if simulated else devices.nvidia_minors()

    # ------------------------------------------------------------------ one pass

    async def reconcile(self) -> bool:
        """One pass over the orders and the runners. Returns whether a run is still starting
        (the caller looks again soon, so RUNNING is reported promptly)."""
        runs, stops, reported = await self.store.node_orders(self.node)
        local = self.local_runs()
        self._stop_misusers(local)
        statuses: dict[str, RunStatus] = {}
        for job_id, record in runs.items():
            if record.key in local:
                continue
            earlier = reported.get(job_id)
            if earlier is not None and earlier.attempt == record.attempt:
                # We had it, and its directory is gone (wiped state): never run it twice.
                statuses[job_id] = RunStatus(record.attempt, noderun.FAILED,
                                             ended_at=time.time(),
                                             message="the node lost the job's runner state")
            elif job_id in stops:
                statuses[job_id] = RunStatus(record.attempt, noderun.EXITED, stopped=True,
                                             ended_at=time.time())
            else:
                local[record.key] = self.start(record)
        for key, state in local.items():
            job_id, _, attempt_text = key.rpartition(".")
            assigned = runs.get(job_id)
            alive = self.runner_alive(key, state)
            if assigned is None or assigned.key != key:
                # Not (or no longer) this node's: stop it if it runs, forget it once ended.
                if alive:
                    self.stop(key, state)
                else:
                    self.forget(key)
                continue
            if job_id in stops and alive:
                self.stop(key, state)
            if not alive and state is not None and state.phase == noderun.RUNNING:
                state = self.runner_lost(key, state)
            statuses[job_id] = self.status_of(int(attempt_text), state, alive)
        changed = {j: s for j, s in statuses.items() if reported.get(j) != s}
        if changed:
            await self.store.report_runs(self.node, changed)
        self._reap()
        return any(s.phase == noderun.STARTING for s in statuses.values())

    # ------------------------------------------------------------------ runners

    def local_runs(self) -> dict[str, RunState | None]:
        """Run key -> its runner's last state (None: not written yet), from disk."""
        found: dict[str, RunState | None] = {}
        for entry in os.scandir(self.runs_dir):
            if entry.is_dir() and "." in entry.name:
                found[entry.name] = RunState.read(Path(entry.path))
        return found

    def start(self, record: StartRecord) -> RunState | None:
        rundir = self.runs_dir / record.key
        rundir.mkdir(mode=0o700)
        group = self.layout.job_group(record.key)
        limits = self.resources.for_job(record.demand, len(record.gpu_indices), self.node_gpus)
        spec = RunSpec(  # the start record, and what only this node knows
            record, node=self.node, grace_s=self.grace_s,
            cgroup=str(group.path) if group else "",
            runners_cgroup=str(self.layout.runners or ""), simulated=self.simulated,
            api_socket=self.api_socket, api_server=self.api_server,
            append=record.attempt > 0,
            # Known here too, for `_remove_run_dirs` where the runner had no chance to.
            job_dir=job_dir_path(record.key), ray_dir=ray_dir_path(record.id),
            min_uid=self.min_job_uid, deny_users=list(self.job_user_deny),
            gpu_minors=(devices.gpu_minors(record.gpu_indices, self._minors)
                        if self.confining else None), cpus=limits.cpus,
            memory_bytes=limits.memory_bytes,
            v1_install=self.install_id if self.layout.kind == "v2-hybrid" else "",
        )
        (rundir / SPEC_FILE).write_text(spec.to_json())
        log_file = open(rundir / "runner.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                [self.python, "-P", "-m", RUNNER_MODULE, str(rundir)], stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True, cwd="/", env=_runner_env(),
            )
        finally:
            log_file.close()
        self._children[record.key] = proc
        _write_private(rundir / RUNNER_FILE, f"{proc.pid} {start_time(proc.pid) or 0}")
        log.info("job %s (attempt %d) started for %s on GPUs %s: runner pid %d", record.id,
                 record.attempt, record.user, record.gpu_indices, proc.pid)
        return None

    def runner_alive(self, key: str, state: RunState | None) -> bool:
        child = self._children.get(key)
        if child is not None and child.poll() is None:
            return True
        return _is_runner(*runner_of(self.runs_dir / key, state))

    def stop(self, key: str, state: RunState | None) -> None:
        """SIGTERM to the runner: it stops the job (SIGTERM, grace, kill). Resent now and then,
        in case one is lost."""
        now = time.monotonic()
        if state is None or now - self._stop_sent.get(key, -STOP_RESEND_S) < STOP_RESEND_S:
            # A runner that has not written its state yet may not have blocked SIGTERM yet
            # either (it would die without a word): ask again once it has.
            return
        pid, started = runner_of(self.runs_dir / key, state)
        if _is_runner(pid, started):
            self._stop_sent[key] = now
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                log.info("stopping run %s (runner pid %d)", key, pid)

    def stop_for(self, key: str, state: RunState | None, reason: str) -> None:
        """Stop a run by a policy of the agent's own: its runner records `reason` (from
        RUNDIR/stop.json) as why the job ended."""
        rundir = self.runs_dir / key
        if not (rundir / STOP_FILE).exists():
            _write_private(rundir / STOP_FILE, json.dumps({"reason": reason}))
            self._stop_sent.pop(key, None)  # now, whatever was sent before
        self.stop(key, state)

    # ------------------------------------------------------------------ GPUs not given

    def job_gpus(self) -> dict[str, set[int]]:
        """Job id -> the GPU indices it was given, for every run of this node."""
        found: dict[str, set[int]] = {}
        for key in self.local_runs():
            spec = self._specs.get(key)
            if spec is None:
                try:
                    spec = self._specs[key] = RunSpec.load(self.runs_dir / key)
                except (OSError, ValueError, TypeError):
                    continue
            found[spec.record.id] = set(spec.record.gpu_indices)
        return found

    def check_gpu_use(self, gpus: list[GpuInfo]) -> list[Misuse]:
        """After `tag_processes`: flag every job process on a GPU its job was not given. It
        is logged (once), reported on that GPU as a process labq did not start, and, under
        the "stop" policy, its job is stopped by the next `reconcile` (GpuMisuse)."""
        found = misplaced(gpus, self.job_gpus())
        for misuse in found:
            seen = (misuse.job, misuse.pid, misuse.gpu)
            if seen not in self._misuse_seen:
                self._misuse_seen.add(seen)
                log.warning("node %s: %s%s", self.node, misuse.reason(),
                            "; stopping the job" if self.gpu_misuse_policy == "stop" else "")
            if self.gpu_misuse_policy == "stop":
                with self._lock:
                    self._misuse_stops.setdefault(misuse.job, misuse.reason())
        return found

    def _stop_misusers(self, local: dict[str, RunState | None]) -> None:
        with self._lock:
            pending, self._misuse_stops = self._misuse_stops, {}
        for key, state in local.items():
            job_id = key.rpartition(".")[0]
            if job_id in pending and self.runner_alive(key, state):
                self.stop_for(key, state, pending[job_id])

    def forget(self, key: str) -> None:
        self._remove_run_dirs(key)  # (a runner that ended removed them; one that died not)
        shutil.rmtree(self.runs_dir / key, ignore_errors=True)
        self._stop_sent.pop(key, None)
        self._children.pop(key, None)
        self._specs.pop(key, None)

    def status_of(self, attempt: int, state: RunState | None, alive: bool) -> RunStatus:
        if state is None:
            if alive:
                return RunStatus(attempt, noderun.STARTING)
            return RunStatus(attempt, noderun.FAILED, ended_at=time.time(),
                             message="the job's runner died before it started the job")
        if state.phase in (noderun.EXITED, noderun.FAILED):
            return state.reported(attempt)
        if not alive:  # (a RUNNING job's lost runner was recorded by `runner_lost`)
            return RunStatus(attempt, noderun.FAILED, state.started_at, time.time(),
                             message="the job's runner died before it started the job")
        return RunStatus(attempt, state.phase, state.started_at)

    def runner_lost(self, key: str, state: RunState) -> RunState:
        """A running job's runner died without writing the end (killed by hand, the OOM
        killer, a reboot): kill what is left of the job (its cgroup; with no cgroups, its
        orphans went to init and cannot be told apart) and record the end, once."""
        group = self.layout.job_group(key)
        if group is not None:
            group.kill()
            group.remove()
        remove_v1_groups(self.install_id, key)  # (v2-hybrid: its CPU and memory limits)
        self._remove_run_dirs(key)
        state.phase, state.ended_at = noderun.EXITED, time.time()
        state.stopped = state.lost = True
        state.message = "the job's runner died; what was left of the job was killed"
        state.write(self.runs_dir / key)
        log.warning("run %s: its runner died; the job ends", key)
        return state

    def _remove_run_dirs(self, key: str) -> None:
        """Remove the job directory (TMPDIR, script) and the private Ray directory of a run
        whose runner is gone."""
        try:
            spec = RunSpec.load(self.runs_dir / key)
        except (OSError, ValueError, TypeError):
            return
        remove_job_dir(spec.job_dir)
        try:
            owner: int | None = pwd.getpwnam(spec.record.user).pw_uid
        except KeyError:
            owner = None
        remove_job_dir(spec.ray_dir, owner)

    def fence(self, reason: str) -> None:
        """Stop every job this node runs for `reason` (the agent cut off from the store past
        its fence): each runner records why."""
        for key, state in self.local_runs().items():
            if self.runner_alive(key, state):
                self.stop_for(key, state, reason)

    def stop_all(self) -> None:
        """Stop every job this node runs (`labq up` shutting down): SIGTERM to each runner."""
        for key, state in self.local_runs().items():
            self._stop_sent.pop(key, None)
            if self.runner_alive(key, state):
                self.stop(key, state)

    def _reap(self) -> None:
        for key, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[key]

    # ------------------------------------------------------------------ whose process is it

    def job_resolver(self) -> Callable[[int], str | None]:
        """`pid -> job id` for one GPU read (the runners are listed once)."""
        runners = self._runner_pids()
        return lambda pid: self.job_of_pid(pid, runners)

    def job_of_pid(self, pid: int, runners: dict[int, str] | None = None) -> str | None:
        """The job a process belongs to (see `job_of_process`)."""
        if runners is None:
            runners = self._runner_pids()
        return job_of_process(pid, runners, self.layout)

    def _runner_pids(self) -> dict[int, str]:
        """Runner pid -> job id, for the runners alive now."""
        found = {}
        for key, state in self.local_runs().items():
            pid, started = runner_of(self.runs_dir / key, state)
            if _is_runner(pid, started):
                found[pid] = key.rpartition(".")[0]
        for key, child in self._children.items():
            if child.poll() is None:
                found.setdefault(child.pid, key.rpartition(".")[0])
        return found


def job_of_process(pid: int, runners: dict[int, str], layout: Layout | None = None
                   ) -> str | None:
    """The labq job `pid` belongs to: by its cgroup, when it is exactly one of `layout`'s
    job groups (`<root>/<install>/job_<id>.<attempt>`, which only root can make or move a
    process into; another install's are not), else by its place in the process tree (a
    descendant of a runner in `runners`, runner pid -> job id; a subreaper runner inherits
    its orphans). Never by the environment, which the process controls."""
    if layout is not None and layout.root is not None:
        key = layout.job_of_cgroup(cgroup_of(pid))
        if key:
            return key.rpartition(".")[0]
    seen = 0
    current: int | None = pid
    while current and current > 1 and seen < 64:
        if current in runners:
            return runners[current]
        current = parent_of(current)
        seen += 1
    return None


def install_id(state_dir: Path) -> str:
    """This agent's install id: made once (16 random hex digits in `<state_dir>/install_id`,
    0600, O_EXCL), read back ever after, so a restarted agent finds its jobs' cgroups."""
    path = state_dir / INSTALL_ID_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        text = path.read_text().strip()
        if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
            raise ValueError(f"{path}: not an install id (16 hex digits); remove it only "
                             f"with no job running on this node") from None
        return text
    made = secrets.token_hex(8)
    with os.fdopen(fd, "w") as handle:
        handle.write(made + "\n")
    return made


def runner_of(rundir: Path, state: RunState | None) -> tuple[int, int]:
    """(pid, start time) of a run's runner: from its state, else (it has not written one
    yet) from what the agent recorded when it started it; (0, 0) if neither says."""
    if state is not None and state.runner_pid and state.runner_start:
        return state.runner_pid, state.runner_start
    try:
        pid, started = (rundir / RUNNER_FILE).read_text().split()
        return int(pid), int(started)
    except (OSError, ValueError):
        pass
    if state is not None and state.runner_pid:
        # A runner of an earlier labq (no start time recorded): it is the process with that
        # pid only if that process started within a minute after its spec was written.
        with contextlib.suppress(OSError):
            written = (rundir / "spec.json").stat().st_mtime
            ticks = start_time(state.runner_pid)
            if ticks is not None and written - 1 <= started_at(ticks) <= written + 60:
                return state.runner_pid, ticks
    return 0, 0


def _is_runner(pid: int, started: int) -> bool:
    """Whether the process `pid` that started at `started` (see `start_time`) still runs:
    the same process, not a recycled pid. (Never by its command line: anyone can forge
    one.)"""
    return pid > 0 and started > 0 and start_time(pid) == started


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _runner_env() -> dict[str, str]:
    """The runner's own environment: enough to import labq, none of the agent's secrets (and
    the agent's TMPDIR: the job's private Ray directory goes where its job directory does)."""
    keep = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TMPDIR")
    return {k: v for k, v in os.environ.items() if k in keep}


def stop_runners(state_dirs: list[Path], wait_s: float) -> None:
    """Stop every job the runners under `state_dirs` run (SIGTERM to each runner: it stops its
    job with the usual grace) and wait up to `wait_s` for them to finish. For `labq up`'s
    shutdown: a real node's agent leaves its jobs running when it stops."""
    runners = []
    for state_dir in state_dirs:
        runs = state_dir / "runs"
        if not runs.is_dir():
            continue
        for entry in os.scandir(runs):
            if not entry.is_dir(follow_symlinks=False):
                continue
            pid, started = runner_of(Path(entry.path), RunState.read(Path(entry.path)))
            if _is_runner(pid, started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                runners.append((pid, started))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(_is_runner(p, d) for p, d in runners):
        time.sleep(0.1)
    for state_dir in state_dirs:
        remove_install_cgroup(state_dir)


def remove_install_cgroup(state_dir: Path) -> None:
    """Remove the install's cgroup directory (see `Executor`) once nothing is left in it: for
    `labq up`, whose every run is a new install. (Best effort; a node's agent keeps its own
    across restarts.)"""
    try:
        path = Path((state_dir / CGROUP_FILE).read_text().strip())
        own = (state_dir / INSTALL_ID_FILE).read_text().strip()
    except OSError:
        return
    if path.name != own or not (path / "cgroup.procs").exists():
        return
    for directory in (path / "runners", path):
        with contextlib.suppress(OSError):
            directory.rmdir()
    remove_v1_groups(own)
