"""The job runner: one process per job attempt, like Slurm's slurmstepd.

`python -m agents.runner RUNDIR` is started by the node agent (detached, its own session) and
outlives it: restarting or killing the agent leaves the job running, and the agent adopts it
again from RUNDIR. The runner:

1. checks who the job runs as (never root, a uid below `min_uid` or a user in `deny_users`),
   then puts the job in a new cgroup of its own, whose device program lets it open no GPU
   but its own (or, with no cgroup tree, is a child subreaper);
2. makes the attempt's job directory (`RunSpec.job_dir`, see `make_job_dir`): the job's own
   `TMPDIR`, and its batch script when it has one;
3. forks the job as its user — uid, primary gid and supplementary groups, `HOME`, `USER`,
   `LOGNAME`, `SHELL`, in its work directory, with the submitter's environment (less what
   labq sets or never passes, see `job_environment`) and exactly its GPUs visible, with the
   limits of a fresh login of that user (agents.limits), never the runner's — with output
   (and stderr, where asked apart) to files that user owns (see `open_output`);
4. records RUNNING with the real start time (after a successful exec), then the exit;
5. on SIGTERM (the agent asks it to stop the job): SIGTERM to every job process, `grace_s`,
   then kill everything; a stop while it prepares the job ends the attempt at once (nothing
   the job's user controls, a FIFO or a hung file system, can keep it starting);
6. when the job's main process ends, kills whatever it left behind (double forks included),
   removes the cgroup, the job's private Ray directory and its job directory, writes the
   final state and exits.

Everything the agent needs is in RUNDIR/state.json, written atomically (see `RunState`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import pwd
import select
import signal
import sys
import time
from pathlib import Path

from agents.cgroups import JobGroup
from agents.devices import confine
from agents.jobdirs import (
    job_argv,
    job_dir_path,
    make_job_dir,
    make_ray_dir,
    open_output,
    ray_dir_path,
    remove_job_dir,
    remove_tree,
    write_script,
)
from agents.jobres import Resources, V1Groups, job_resource_env, limit_job
from agents.limits import LoginLimits, apply_limits, login_limits
from agents.procinfo import descendants, start_time
from agents.runspec import SPEC_FILE as SPEC_FILE
from agents.runspec import STATE_FILE as STATE_FILE
from agents.runspec import STOP_FILE as STOP_FILE
from agents.runspec import RunSpec, RunState
from scheduler import noderun
from scheduler.config import login_defs_uid_min
from scheduler.jobenv import passes

PR_SET_CHILD_SUBREAPER = 36
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
EXEC_FAILED = 127
_STOPS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_SIGNALS = {signal.SIGCHLD, *_STOPS}


HOLD_ARGV = ("sleep", "infinity")  # what a multi-node job's other nodes run


def submitted_environment(env: dict[str, str]) -> dict[str, str]:
    """What the job keeps of the environment it was submitted with (the CLI filters it too;
    the runner does not rely on that)."""
    return {name: value for name, value in env.items()
            if passes(name) and "\0" not in value}  # the same rule as the CLI's: one list


def job_environment(spec: RunSpec, account: pwd.struct_passwd, ray_dir: str, tmp_dir: str,
                    started_at: float) -> dict[str, str]:
    """The job's whole environment, like Slurm's default (`--export=ALL`): the submitter's
    environment (its PATH wins over the default one), then labq's values, which always win —
    the user's identity, its GPUs, its own TMPDIR, a private Ray, and what it is (`LABQ_*`).
    Nothing of the agent's or the runner's own environment (no store URL, password or token).
    `started_at`: when the job starts, for `LABQ_JOB_END_TIME` (the time limit's end)."""
    job = spec.record
    visible = ",".join(str(i) for i in job.gpu_indices)
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", **submitted_environment(job.env)}
    if not env["PATH"]:
        env["PATH"] = DEFAULT_PATH
    env.update({
        "HOME": account.pw_dir, "USER": account.pw_name, "LOGNAME": account.pw_name,
        "SHELL": account.pw_shell or "/bin/sh", "TMPDIR": tmp_dir,
        "PWD": job.workdir,  # where the job starts (the submitter's may be elsewhere)
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": visible,
        "LABQ_JOB_ID": job.id, "LABQ_NODE": spec.node, "LABQ_USER": account.pw_name,
        "LABQ_GPUS": str(len(job.gpu_indices)),
        "LABQ_JOB_NAME": job.name or "labq",  # as the `%x` of output file names
        "LABQ_ACCOUNT": job.account, "LABQ_SUBMIT_DIR": job.submit_dir or job.workdir,
        # ray.init() in the job starts a Ray of its own: its files in a private directory,
        # only clients holding the job's token (a file only the user can read) may connect.
        "RAY_TMPDIR": ray_dir, "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": os.path.join(ray_dir, "token"),
    })
    if job.time_limit_s > 0:
        env["LABQ_JOB_END_TIME"] = str(int(started_at + job.time_limit_s))
    if job.array_job and job.array_task is not None:
        env["LABQ_ARRAY_JOB_ID"] = job.array_job
        env["LABQ_ARRAY_TASK_ID"] = str(job.array_task)
    env.update(job_resource_env(Resources(spec.cpus, spec.memory_bytes),
                                len(job.gpu_indices) if spec.simulated else None))
    if job.hosts:  # across nodes: where the others are (like SLURM_JOB_NODELIST)
        env["LABQ_NODES"] = ",".join(job.hosts)
        env["LABQ_NODE_NAMES"] = ",".join(job.node_names)
        env["LABQ_NUM_NODES"] = str(len(job.hosts))
        env["LABQ_NODE_RANK"] = str(job.rank)
        env["LABQ_HEAD_NODE"] = job.hosts[0]
        if job.ray_port:  # `labq step`: where the other nodes' step servers listen
            env["LABQ_STEP_PORT"] = str(step_port(job.ray_port))
    if spec.api_socket:
        env["LABQ_SOCKET"] = spec.api_socket
    if spec.api_server:
        env["LABQ_SERVER"] = spec.api_server
    return env


def part_argv(spec: RunSpec, argv: list[str]) -> list[str]:
    """What this node runs of the job: the command on one node; across nodes, the command on
    the head node (rank 0) and, on the others, a process that holds their GPUs until stopped.
    With Ray on the node and a port for it, the head starts the job's Ray head first (the
    command gets RAY_ADDRESS) and the others join it as workers (`agents.rayjob`)."""
    job = spec.record
    if not job.hosts:
        return argv
    gpus = str(len(job.gpu_indices))
    worker: list[str] = []
    if job.ray_port and importlib.util.find_spec("ray") is not None:
        ray = [sys.executable, "-m", "agents.rayjob"]
        if job.rank == 0:
            return [*ray, "head", job.hosts[0], str(job.ray_port), gpus, str(len(job.hosts)),
                    "--", *argv]
        worker = [*ray, "worker", f"{job.hosts[0]}:{job.ray_port}", job.hosts[job.rank], gpus]
    if job.rank == 0:
        return argv
    if not job.ray_port:  # a start record of an older coordinator: no port for steps
        return worker or list(HOLD_ARGV)
    # the node's step server (`labq step` from the head), beside the Ray worker if any
    return [sys.executable, "-m", "agents.steps", "serve", job.hosts[job.rank],
            str(step_port(job.ray_port) + job.rank), *(["--", *worker] if worker else [])]


def step_port(ray_port: int) -> int:
    """The base of a job's step servers' ports (rank r listens on base + r): beside its Ray
    head's port, picked at start for the job alone."""
    return ray_port + 1


def _become(account: pwd.struct_passwd) -> None:
    """Drop to the user (in the child, before exec). Unprivileged: only oneself."""
    if os.geteuid() == 0:
        os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
    elif os.geteuid() != account.pw_uid:
        raise PermissionError(f"the node agent runs as uid {os.geteuid()} and cannot run jobs "
                              f"as {account.pw_name}")


def _child(spec: RunSpec, account: pwd.struct_passwd, env: dict[str, str], argv: list[str],
           err_fd: int, limits: LoginLimits, group: JobGroup | None,
           v1: V1Groups | None = None) -> None:
    """In the forked child: become the job. Never returns; reports a failure on `err_fd`."""
    job = spec.record
    try:
        if group is not None:  # (before anything else: the job never runs outside it)
            try:
                group.add(os.getpid())
            except OSError as exc:
                raise OSError(f"cannot put the job in its cgroup {group.path}: "
                              f"{exc.strerror}") from None
        if v1 is not None:  # its CPU and memory limits on a v2-hybrid node
            v1.add(os.getpid())
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        apply_limits(limits.rlimits, limits.nice)  # (as root: hard limits may rise)
        _become(account)
        try:
            os.chdir(job.workdir)
        except OSError as exc:
            raise OSError(f"cannot enter work directory {job.workdir}: {exc.strerror}") from None
        if job.rank > 0:  # holds its node's GPUs: the head node's run writes the output
            out = err = os.open(os.devnull, os.O_WRONLY)
        else:
            out = open_output(job.output, spec.append, "output file", account)
            err = out
        if job.error and job.rank == 0:
            err = open_output(job.error, spec.append, "error file", account)
            if os.path.samestat(os.fstat(out), os.fstat(err)):
                err = out  # one file named twice: one offset, or each would overwrite the other
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        try:
            os.execvpe(argv[0], argv, env)
        except FileNotFoundError:
            if not job.script:
                raise
            line = job.script.split("\n", 1)[0][:200]
            raise OSError(f"cannot run the batch script: its interpreter ({line}) was not "
                          f"found") from None
    except BaseException as exc:  # noqa: BLE001 - anything here means the job did not start
        with contextlib.suppress(OSError):
            os.write(err_fd, str(exc).encode()[:2000] or b"exec failed")
        os._exit(EXEC_FAILED)


class Runner:
    def __init__(self, rundir: Path) -> None:
        self.rundir = rundir
        self.spec = RunSpec.load(rundir)
        self.state = RunState(self.spec.record.attempt, runner_pid=os.getpid())
        self.group: JobGroup | None = None  # the job's cgroup, once this runner made it
        self.v1: V1Groups | None = None  # its v1 cpu and memory groups (v2-hybrid), if made
        self.ray_dir = ""
        self.job_dir = ""
        self.main_pid = 0
        self.main_status: int | None = None

    def save(self) -> None:
        self.state.write(self.rundir)

    def fail(self, message: str) -> int:
        self.state.phase = noderun.FAILED
        self.state.message = message
        self.state.ended_at = time.time()
        self.save()
        return 1

    def stopped_before_start(self) -> int:
        """A stop came while the job was being prepared: it never ran, and ends stopped."""
        self.cleanup()
        self.state.phase = noderun.EXITED
        self.state.ended_at = time.time()
        self.note_stop()
        self.save()
        return 0

    def stop_pending(self) -> bool:
        """Whether a stop signal is waiting (taken: it is acted on now)."""
        return signal.sigtimedwait(_STOPS, 0) is not None

    def note_stop(self) -> None:
        """Record a stop, with the agent's own reason if it left one (a policy)."""
        try:
            reason = json.loads((self.rundir / STOP_FILE).read_text()).get("reason", "")
        except (OSError, ValueError, AttributeError):
            reason = ""
        self.state.stopped = True
        if reason:
            self.state.message = str(reason)[:500]

    def check_user(self, account: pwd.struct_passwd) -> str:
        """Why the job may not run as `account` ("" if it may)."""
        spec = self.spec
        if account.pw_uid == 0:
            return "labq never runs a job as root"
        floor = spec.min_uid or login_defs_uid_min()
        if account.pw_uid < floor:
            return (f"labq never runs a job as {account.pw_name} (uid {account.pw_uid}): uids "
                    f"below {floor} are the system's (min_job_uid)")
        if account.pw_name in spec.deny_users:
            return f"user {account.pw_name} may not run jobs on node {spec.node} (job_user_deny)"
        return ""

    def run(self) -> int:
        spec = self.spec
        os.umask(0o077)
        sys.dont_write_bytecode = True  # no caches only root can read (homecheck.private_umask)
        # SIGTERM (stop) and SIGCHLD are taken with sigtimedwait: no handler races. A stop
        # while the job is being prepared is looked for at each step, and ends the attempt.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.state.runner_start = start_time(os.getpid()) or 0
        if spec.runners_cgroup:
            with contextlib.suppress(OSError):
                JobGroup(Path(spec.runners_cgroup)).add(os.getpid())
        self.save()
        try:
            account = pwd.getpwnam(spec.record.user)
        except KeyError:
            return self.fail(f"user {spec.record.user!r} does not exist on node {spec.node}")
        refused = self.check_user(account)
        if refused:
            return self.fail(refused)
        limits = login_limits(account.pw_name, account.pw_uid, account.pw_gid)
        for line in limits.skipped:
            print(f"runner: limits: skipped {line}", file=sys.stderr, flush=True)
        if self.stop_pending():
            return self.stopped_before_start()
        try:
            ray_dir = spec.ray_dir or ray_dir_path(spec.record.id)
            make_ray_dir(ray_dir, account, spec.record.ray_token)
            self.ray_dir = ray_dir
            job_dir = spec.job_dir or job_dir_path(spec.key)
            tmp_dir = make_job_dir(job_dir, account)
            self.job_dir = job_dir  # (only once made: the runner never removes what it did not)
            script = ""
            if spec.record.script:
                script = write_script(self.job_dir, spec.record.script, account)
            if spec.cgroup:
                group = JobGroup(Path(spec.cgroup))
                group.create()  # (new: one that exists is refused, and never removed)
                self.group = group
                if spec.gpu_minors is not None:
                    confine(str(group.path), spec.gpu_minors)
            self.v1 = limit_job(self.group.path if self.group else None,
                                Resources(spec.cpus, spec.memory_bytes), spec.v1_install, spec.key)
        except OSError as exc:
            self.cleanup()
            return self.fail(f"cannot prepare the job on node {spec.node}: {exc}")
        if self.stop_pending():
            return self.stopped_before_start()
        env = job_environment(spec, account, self.ray_dir, tmp_dir, time.time())
        argv = part_argv(spec, job_argv(spec.record.command, script))
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(err_r)
            _child(spec, account, env, argv, err_w, limits, self.group, self.v1)
        os.close(err_w)
        error = self.exec_result(err_r)
        if error is None:  # stopped before the exec: the job never ran
            self.main_pid = pid
            self.kill_leftovers()
            return self.stopped_before_start()
        if error:
            os.waitpid(pid, 0)
            self.cleanup()
            return self.fail(error.decode(errors="replace"))
        self.state.phase = noderun.RUNNING
        self.state.started_at = time.time()
        self.save()
        status = self.wait(pid)
        self.kill_leftovers()
        if self.group:
            self.state.usage = self.group.stats()
        if self.v1 and "memory_peak_bytes" not in (self.state.usage or {}):
            peak = self.v1.peak_memory_bytes()
            if peak is not None:
                self.state.usage = {**(self.state.usage or {}), "memory_peak_bytes": peak}
        self.cleanup()
        self.state.phase = noderun.EXITED
        self.state.ended_at = time.time()
        if os.WIFSIGNALED(status):
            self.state.signal = os.WTERMSIG(status)
            self.state.exit_code = 128 + self.state.signal
        else:
            self.state.exit_code = os.WEXITSTATUS(status)
        self.save()
        return 0

    def exec_result(self, fd: int) -> bytes | None:
        """What the child reported before its exec (b"": it exec'd), or None if a stop came
        first. Never blocks on the child: a job's user can make its setup hang (a FIFO, a
        file system of theirs), never the runner."""
        chunks: list[bytes] = []
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        return b"".join(chunks)
                    chunks.append(chunk)
                elif self.stop_pending():
                    return None
        finally:
            os.close(fd)

    def wait(self, pid: int) -> int:
        """Wait for the job's main process, reaping every orphan the subreaper inherits; on
        SIGTERM stop the job (SIGTERM to all of it, `grace_s`, then kill)."""
        self.main_pid = pid
        kill_at: float | None = None
        while True:
            self.reap()
            if self.main_status is not None:
                return self.main_status
            timeout = 1.0 if kill_at is None else max(0.01, kill_at - time.monotonic())
            info = signal.sigtimedwait(_SIGNALS, timeout)
            if info is not None and info.si_signo != signal.SIGCHLD and kill_at is None:
                self.note_stop()
                self.save()
                self.signal_job(signal.SIGTERM)
                kill_at = time.monotonic() + self.spec.grace_s
            elif kill_at is not None and time.monotonic() >= kill_at:
                self.kill_leftovers()

    def reap(self) -> None:
        """Reap every exited child (orphans a subreaper inherits), keeping the job's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.main_pid:
                self.main_status = status

    def signal_job(self, sig: int) -> None:
        if self.group:
            self.group.signal_all(sig)
        for child in descendants(os.getpid()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, sig)

    def kill_leftovers(self) -> None:
        """Kill every process the job left: its cgroup, then anything still below the runner
        (a subreaper inherits the orphans of double forks)."""
        if self.group:
            self.group.kill()
        for _ in range(200):
            left = descendants(os.getpid())
            if not left:
                break
            for child in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, signal.SIGKILL)
            self.reap()
            time.sleep(0.02)

    def cleanup(self) -> None:
        if self.group:
            self.group.remove()
        if self.v1:
            self.v1.remove()
        if self.ray_dir:
            remove_tree(self.ray_dir)
        if self.job_dir:
            remove_job_dir(self.job_dir)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m agents.runner RUNDIR", file=sys.stderr)
        return 2
    runner = Runner(Path(args[0]))
    try:
        return runner.run()
    except Exception as exc:  # the agent must learn the job failed, whatever happened
        runner.kill_leftovers()
        runner.cleanup()
        return runner.fail(f"runner error: {exc}")


if __name__ == "__main__":
    sys.exit(main())
