"""The job runner: one process per job attempt, like Slurm's slurmstepd.

`python -m agents.runner RUNDIR` is started by the node agent (detached, its own session) and
outlives it: restarting or killing the agent leaves the job running, and the agent adopts it
again from RUNDIR. The runner:

1. puts the job in its own cgroup (or, with no cgroup tree, is a child subreaper);
2. forks the job as its user — uid, primary gid and supplementary groups, `HOME`, `USER`,
   `LOGNAME`, `SHELL`, in its work directory, with exactly its GPUs visible — with output to a
   file that user owns (opened as the user, so it can only go where the user may write);
3. records RUNNING with the real start time (after a successful exec), then the exit;
4. on SIGTERM (the agent asks it to stop the job): SIGTERM to every job process, `grace_s`,
   then kill everything;
5. when the job's main process ends, kills whatever it left behind (double forks included),
   removes the cgroup and the job's private Ray directory, writes the final state and exits.

Everything the agent needs is in RUNDIR/state.json, written atomically (see `RunState`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agents.cgroups import JobGroup

PR_SET_CHILD_SUBREAPER = 36
SPEC_FILE = "spec.json"
STATE_FILE = "state.json"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
EXEC_FAILED = 127
_SIGNALS = {signal.SIGTERM, signal.SIGCHLD, signal.SIGINT, signal.SIGHUP}


@dataclass
class RunSpec:
    """What the agent hands a runner (RUNDIR/spec.json, root-only)."""

    job_id: str
    attempt: int
    user: str
    command: list[str]
    workdir: str
    env: dict[str, str]
    gpu_indices: list[int]
    node: str
    output: str  # absolute path, %j already replaced
    grace_s: float = 10.0
    cgroup: str = ""  # the job's cgroup directory ("" = subreaper only)
    runners_cgroup: str = ""  # where the runner itself lives ("" = stay)
    simulated: bool = False  # simulated GPUs: give Ray the count through RAY_OVERRIDE_RESOURCES
    api_socket: str = ""  # the labq API socket, so the job can run labq as its user
    append: bool = False  # requeued attempts append to the output

    @classmethod
    def load(cls, rundir: Path) -> RunSpec:
        return cls(**json.loads((rundir / SPEC_FILE).read_text()))


@dataclass
class RunState:
    """RUNDIR/state.json. `phase`: STARTING, RUNNING, EXITED (the job ran and ended) or FAILED
    (it never started: `message` says why)."""

    phase: str = "STARTING"
    runner_pid: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None  # 128 + signal number when a signal ended it, as a shell says
    signal: int | None = None
    stop: str = ""  # "requested": the agent stopped it; "lost": the agent found this runner dead
    message: str = ""
    usage: dict[str, int] = field(default_factory=dict)  # cgroup accounting, where available

    def write(self, rundir: Path) -> None:
        tmp = rundir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, rundir / STATE_FILE)

    @classmethod
    def read(cls, rundir: Path) -> RunState | None:
        try:
            return cls(**json.loads((rundir / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def job_environment(spec: RunSpec, account: pwd.struct_passwd, ray_dir: str) -> dict[str, str]:
    """The job's whole environment: the user's identity, what they asked for, its GPUs, and a
    private Ray. Nothing of the agent's own environment (no store URL, password or token)."""
    visible = ",".join(str(i) for i in spec.gpu_indices)
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", **spec.env}
    env.update({
        "HOME": account.pw_dir, "USER": account.pw_name, "LOGNAME": account.pw_name,
        "SHELL": account.pw_shell or "/bin/sh",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": visible,
        "LABQ_JOB_ID": spec.job_id, "LABQ_NODE": spec.node, "LABQ_USER": account.pw_name,
        "LABQ_GPUS": str(len(spec.gpu_indices)),
        # ray.init() in the job starts a Ray of its own: its files in a private directory,
        # only clients holding the job's token (a file only the user can read) may connect.
        "RAY_TMPDIR": ray_dir, "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": os.path.join(ray_dir, "token"),
    })
    env.pop("RAY_ADDRESS", None)  # never join some other Ray cluster by inheritance
    if spec.simulated:
        env["RAY_OVERRIDE_RESOURCES"] = json.dumps({"GPU": len(spec.gpu_indices)})
    if spec.api_socket:
        env["LABQ_SOCKET"] = spec.api_socket
    return env


def _make_ray_dir(spec: RunSpec, account: pwd.struct_passwd) -> str:
    """A fresh 0700 directory owned by the user, with a random Ray token in a 0600 file."""
    path = tempfile.mkdtemp(prefix=f"labq-{spec.job_id}-")  # short: Ray's socket paths are long
    token = os.path.join(path, "token")
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(os.urandom(32).hex())
    if os.geteuid() == 0:
        os.chown(token, account.pw_uid, account.pw_gid)
        os.chown(path, account.pw_uid, account.pw_gid)
    return path


def _become(account: pwd.struct_passwd) -> None:
    """Drop to the user (in the child, before exec). Unprivileged: only oneself."""
    if os.geteuid() == 0:
        os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
    elif os.geteuid() != account.pw_uid:
        raise PermissionError(f"the node agent runs as uid {os.geteuid()} and cannot run jobs "
                              f"as {account.pw_name}")


def _child(spec: RunSpec, account: pwd.struct_passwd, env: dict[str, str], err_fd: int) -> None:
    """In the forked child: become the job. Never returns; reports a failure on `err_fd`."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        _become(account)
        try:
            os.chdir(spec.workdir)
        except OSError as exc:
            raise OSError(f"cannot enter work directory {spec.workdir}: {exc.strerror}") from None
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if spec.append else os.O_TRUNC)
        try:
            out = os.open(spec.output, flags | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise OSError(f"cannot write output file {spec.output}: {exc.strerror}") from None
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        argv = (["/bin/sh", "-c", spec.command[0]] if len(spec.command) == 1
                else list(spec.command))
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001 - anything here means the job did not start
        with contextlib.suppress(OSError):
            os.write(err_fd, str(exc).encode()[:2000] or b"exec failed")
        os._exit(EXEC_FAILED)


class Runner:
    def __init__(self, rundir: Path) -> None:
        self.rundir = rundir
        self.spec = RunSpec.load(rundir)
        self.state = RunState(runner_pid=os.getpid())
        self.group = JobGroup(Path(self.spec.cgroup)) if self.spec.cgroup else None
        self.ray_dir = ""
        self.main_pid = 0
        self.main_status: int | None = None

    def save(self) -> None:
        self.state.write(self.rundir)

    def fail(self, message: str) -> int:
        self.state.phase = "FAILED"
        self.state.message = message
        self.state.ended_at = time.time()
        self.save()
        return 1

    def run(self) -> int:
        spec = self.spec
        os.umask(0o077)
        # SIGTERM (stop) and SIGCHLD are taken with sigtimedwait: no handler races, and a stop
        # that comes before the job started waits until it has.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if spec.runners_cgroup:
            with contextlib.suppress(OSError):
                JobGroup(Path(spec.runners_cgroup)).add(os.getpid())
        self.save()
        try:
            account = pwd.getpwnam(spec.user)
        except KeyError:
            return self.fail(f"user {spec.user!r} does not exist on node {spec.node}")
        if account.pw_uid == 0:
            return self.fail("labq never runs a job as root")
        try:
            self.ray_dir = _make_ray_dir(spec, account)
            if self.group:
                self.group.create()
        except OSError as exc:
            return self.fail(f"cannot prepare the job on node {spec.node}: {exc}")
        env = job_environment(spec, account, self.ray_dir)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(err_r)
            if self.group:
                self.group.add(os.getpid())
            _child(spec, account, env, err_w)
        os.close(err_w)
        error = _read_all(err_r)
        if error:
            os.waitpid(pid, 0)
            self.cleanup()
            return self.fail(error.decode(errors="replace"))
        self.state.phase = "RUNNING"
        self.state.started_at = time.time()
        self.save()
        status = self.wait(pid)
        self.kill_leftovers()
        if self.group:
            self.state.usage = self.group.stats()
        self.cleanup()
        self.state.phase = "EXITED"
        self.state.ended_at = time.time()
        if os.WIFSIGNALED(status):
            self.state.signal = os.WTERMSIG(status)
            self.state.exit_code = 128 + self.state.signal
        else:
            self.state.exit_code = os.WEXITSTATUS(status)
        self.save()
        return 0

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
                self.state.stop = "requested"
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
        if self.ray_dir:
            shutil.rmtree(self.ray_dir, ignore_errors=True)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def descendants(root: int) -> list[int]:
    """Live processes below `root` (children, grandchildren, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        ppid = parent_of(int(entry.name))
        if ppid is not None:
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(parents.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


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
