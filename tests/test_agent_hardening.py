"""The node agent's hardening, each attack run as it would be: as an unprivileged Unix user
against the real runner, started by the real executor (the tests run as root, as CI does).

- who a job may run as: never a uid below the floor, never a denied user (checked by the
  runner itself, whatever the coordinator sent);
- output files: never one someone else made, a link, a FIFO or a hard link; a stop while a
  job is still being prepared (its output on a file system that never answers) ends it;
- runners known by pid and start time, never by a command line a user can forge;
- cgroups under this install's own directory, made fresh, a process a job's only there;
- a job's resource limits: a fresh login's for its user, never the agent's.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import itertools
import json
import os
import resource
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from agents.cgroups import JobGroup, Layout, detect, job_of_cgroup
from agents.executor import INSTALL_ID_FILE, Executor, install_id, stop_runners
from agents.limits import INFINITY, fresh_login, login_limits
from agents.procinfo import start_time
from agents.runner import RunSpec, RunState
from scheduler.config import login_defs_uid_min
from scheduler.model import Job, JobState
from scheduler.noderun import EXITED, FAILED, RUNNING, STARTING, StartRecord
from scheduler.store import Store
from tests.e2e_stack import ensure_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs jobs as other users: needs root")
NODE = "n1"
_ids = itertools.count(int(time.time()) % 100000 * 100 + 50)


@pytest.fixture(scope="module")
def alice() -> Any:
    return ensure_user("alice")


@pytest.fixture(scope="module")
def eve() -> Any:
    """Another ordinary user: the attacker."""
    return ensure_user("labq-hard-eve")


@pytest.fixture(scope="module")
def system_user() -> Any:
    """A system account (uid below UID_MIN), as daemons run as."""
    import pwd

    name = "labq-hard-sys"
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], capture_output=True)
    return pwd.getpwnam(name)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A shared directory (1777, like /tmp or a group's scratch space)."""
    path = Path(tempfile.mkdtemp(prefix="labq-hard-"))
    os.chmod(path, 0o1777)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def executor(tmp_path: Path, layout: Layout | None = None, **kw: Any) -> Executor:
    # start() and the cleanup of runs never touch the store.
    return Executor(cast(Store, None), NODE, tmp_path / "agent", layout or Layout("none", None),
                    grace_s=1.0, simulated=True, **kw)


def make_job(workdir: Path, command: str, user: str = "alice", **kw: Any) -> Job:
    fields: dict[str, Any] = {"time_limit_s": 600, "account": "lab", "user": user, "gpus": 1}
    fields.update(kw)
    return Job(id=str(next(_ids)), state=JobState.RUNNING, command=[command],
               submitted_at=time.time(), workdir=str(workdir), **fields)


def wait_state(rundir: Path, phases: set[str], timeout: float = 20) -> RunState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = RunState.read(rundir)
        if state is not None and state.phase in phases:
            return state
        time.sleep(0.05)
    raise AssertionError(f"{rundir} never reached {phases}: {RunState.read(rundir)}")


def run(ex: Executor, job: Job, gpus: list[int] | None = None) -> RunState:
    record = StartRecord.for_job(job, gpus or [0])
    ex.start(record)
    return wait_state(ex.runs_dir / record.key, {EXITED, FAILED})


def as_user(user: Any, *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                          capture_output=True, text=True, check=True, **kw)


# ---------------------------------------------------------------------- who a job runs as

def test_a_system_uid_or_a_denied_user_never_runs_a_job(
        tmp_path: Path, shared: Path, alice: Any, system_user: Any) -> None:
    assert system_user.pw_uid < login_defs_uid_min()
    ex = executor(tmp_path, job_user_deny=["alice"])
    assert ex.min_job_uid == login_defs_uid_min()  # (the default: UID_MIN of login.defs)
    job = make_job(shared, "touch ran-$(id -un)", user=system_user.pw_name)
    state = run(ex, job)
    assert state.phase == FAILED and state.message == (
        f"labq never runs a job as {system_user.pw_name} (uid {system_user.pw_uid}): uids "
        f"below {login_defs_uid_min()} are the system's (min_job_uid)")
    state = run(ex, make_job(shared, "touch ran-$(id -un)"))
    assert state.phase == FAILED and state.message == (
        "user alice may not run jobs on node n1 (job_user_deny)")
    assert list(shared.iterdir()) == []  # neither ran, nor made an output file
    # A floor set below it lets the system user run.
    state = run(executor(tmp_path / "low", min_job_uid=system_user.pw_uid), job)
    assert (state.phase, state.exit_code) == (EXITED, 0), state
    assert (shared / f"ran-{system_user.pw_name}").exists()


# ---------------------------------------------------------------------- output files

def test_an_output_file_someone_else_made_is_refused_and_untouched(
        tmp_path: Path, shared: Path, alice: Any, eve: Any) -> None:
    job = make_job(shared, "echo SECRET-TOKEN; touch ran")
    trap = shared / f"labq-{job.id}.out"
    # eve, waiting for alice's output: a 0666 file of hers at the path alice's job will use.
    as_user(eve, "sh", "-c", f"umask 0; echo 'forged by eve' > {trap}")
    assert stat.S_IMODE(trap.stat().st_mode) == 0o666
    state = run(executor(tmp_path), job)
    assert state.phase == FAILED and state.message == (
        f"refusing output file {trap}: it belongs to labq-hard-eve, not to alice (remove it, "
        f"or choose another path)")
    assert trap.read_text() == "forged by eve\n"  # nothing written, nothing truncated
    assert not (shared / "ran").exists()


@pytest.mark.parametrize("kind", ["symlink", "fifo", "fifo-read", "hardlink", "directory"])
def test_an_output_path_that_is_no_plain_file_of_the_users_fails_at_once(
        tmp_path: Path, shared: Path, alice: Any, eve: Any, kind: str) -> None:
    job = make_job(shared, "echo out; touch ran")
    path = shared / f"labq-{job.id}.out"
    reader = None
    if kind == "symlink":  # eve's link to a file of alice's: alice's job would overwrite it
        (shared / "precious").write_text("keep")
        os.chown(shared / "precious", alice.pw_uid, alice.pw_gid)
        as_user(eve, "ln", "-s", str(shared / "precious"), str(path))
        why = "cannot write output file {}: it is a symbolic link"
    elif kind.startswith("fifo"):  # would block the open: the job STARTING forever
        as_user(eve, "mkfifo", "-m", "666", str(path))
        why = ("refusing output file {}: it is not a regular file (remove it, or choose another "
               "path)")
        if kind == "fifo-read":  # eve reads it: the open succeeds, the check refuses
            reader = subprocess.Popen(["sh", "-c", f"exec cat {path} > /dev/null"],
                                      user=eve.pw_uid, group=eve.pw_gid)
            time.sleep(0.2)
        else:
            why = "cannot write output file {}: it is not a regular file"
    elif kind == "hardlink":  # alice's own file with a second name: not hers alone to write
        (shared / "other").write_text("x")
        os.chown(shared / "other", alice.pw_uid, alice.pw_gid)
        os.link(shared / "other", path)
        why = "refusing output file {}: it has 2 hard links (remove it, or choose another path)"
    else:
        path.mkdir()
        os.chown(path, alice.pw_uid, alice.pw_gid)
        why = "cannot write output file {}: it is not a regular file"
    began = time.monotonic()
    try:
        state = run(executor(tmp_path), job)
    finally:
        if reader:
            reader.kill()
            reader.wait()
    assert time.monotonic() - began < 10
    assert state.phase == FAILED and state.message == why.format(path), state.message
    assert not (shared / "ran").exists()
    if kind == "symlink":
        assert (shared / "precious").read_text() == "keep"


def test_the_users_own_file_is_truncated_and_a_requeue_appends_to_it(
        tmp_path: Path, shared: Path, alice: Any) -> None:
    ex = executor(tmp_path)
    job = make_job(shared, "echo attempt")
    out = shared / f"labq-{job.id}.out"
    out.write_text("old text\n")
    os.chown(out, alice.pw_uid, alice.pw_gid)
    assert run(ex, job).phase == EXITED
    assert out.read_text() == "attempt\n"
    job.restarts = 1
    assert run(ex, job).phase == EXITED
    assert out.read_text() == "attempt\nattempt\n"


@contextlib.contextmanager
def silent_fuse(path: Path) -> Iterator[None]:
    """A FUSE file system mounted at `path` whose server never answers: whoever looks inside
    waits (killably) until it goes, as with a user's own FUSE mount or a hung NFS server."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError as exc:
        pytest.skip(f"no /dev/fuse: {exc}")
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
    if libc.mount(b"labq-silent", str(path).encode(), b"fuse", 0, options) != 0:
        os.close(fd)
        pytest.skip(f"cannot mount FUSE here: {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        os.close(fd)  # the connection aborts: every waiter gets ENOTCONN
        libc.umount2(str(path).encode(), 2)  # MNT_DETACH


@pytest.mark.parametrize("how", ["cancel", "labq up stops"])
def test_a_job_stuck_before_it_starts_is_ended_by_a_stop(
        tmp_path: Path, shared: Path, alice: Any, how: str) -> None:
    mount = shared / "hung"
    mount.mkdir()
    with silent_fuse(mount):
        ex = executor(tmp_path)
        job = make_job(shared, "touch ran", output=str(mount / "out"))
        record = StartRecord.for_job(job, [0])
        ex.start(record)
        rundir = ex.runs_dir / record.key
        state = wait_state(rundir, {STARTING})
        time.sleep(1.5)  # its child is stuck opening the output
        assert cast(RunState, RunState.read(rundir)).phase == STARTING
        began = time.monotonic()
        if how == "cancel":
            ex.stop(record.key, state)
        else:
            stop_runners([tmp_path / "agent"], wait_s=10)
        state = wait_state(rundir, {EXITED, FAILED}, timeout=10)
        assert time.monotonic() - began < 5
        assert (state.phase, state.stop, state.started_at) == (EXITED, "requested", None)
        ex._children[record.key].wait(5)  # the runner is gone too
        assert not (shared / "ran").exists()


# ---------------------------------------------------------------------- runners by pid

def test_runners_are_known_by_pid_and_start_time_never_by_a_forged_command_line(
        tmp_path: Path, shared: Path, alice: Any) -> None:
    ex = executor(tmp_path)
    job = make_job(shared, "sleep 292.5")
    record = StartRecord.for_job(job, [0])
    ex.start(record)
    rundir = ex.runs_dir / record.key
    real = wait_state(rundir, {RUNNING})
    assert real.runner_start == start_time(real.runner_pid)
    assert ex.runner_alive(record.key, real)
    # alice's process whose command line says it is the runner of a run of hers.
    forged_dir = ex.runs_dir / "99999.0"
    forged_dir.mkdir()
    forger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-m", "agents.runner",
         str(forged_dir)], user=alice.pw_uid, group=alice.pw_gid)
    try:
        time.sleep(0.3)
        assert not ex.runner_alive("99999.0", None)  # no runner recorded: none is alive
        fake = RunState(phase=RUNNING, runner_pid=forger.pid, runner_start=real.runner_start)
        assert not ex.runner_alive("99999.0", fake)  # (a recycled pid: another start time)
        fake.write(forged_dir)
        stop_runners([tmp_path / "agent"], wait_s=0.5)  # never signalled as a runner
        assert forger.poll() is None
    finally:
        forger.kill()
        forger.wait()
    ex.stop(record.key, real)
    assert wait_state(rundir, {EXITED}).stop == "requested"


# ---------------------------------------------------------------------- cgroups

def test_a_cgroup_is_a_jobs_only_exactly_under_this_installs_root() -> None:
    root = "/labq/n1/0123456789abcdef"
    assert job_of_cgroup(f"{root}/job_17.0", root) == "17.0"
    assert job_of_cgroup(f"{root}/job_17_3.2", root) == "17_3.2"
    for path in ("/labq/n1/fedcba9876543210/job_17.0", "/labq/n1/job_17.0",  # other installs
                 f"{root}/job_17.0/sub", f"{root}/x/job_17.0", f"{root}/job_17",
                 f"{root}/job_.0", f"{root}/runners", "/user.slice/job_17.0", "/"):
        assert job_of_cgroup(path, root) is None, path


def test_the_install_id_is_made_once_private_and_kept(tmp_path: Path) -> None:
    first = install_id(tmp_path)
    info = (tmp_path / INSTALL_ID_FILE).stat()
    assert len(first) == 16 and stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0
    assert install_id(tmp_path) == first
    other = tmp_path / "other"
    other.mkdir()
    assert install_id(other) != first
    (other / INSTALL_ID_FILE).write_text("../../etc\n")
    with pytest.raises(ValueError, match="not an install id"):
        install_id(other)


@pytest.fixture
def cgroup_layout() -> Iterator[Layout]:
    node = f"test-hard-{os.getpid()}"
    found = detect(node)
    if found.root is None:
        pytest.skip("no writable cgroup v2 tree on this machine")
    yield found
    for path in sorted(found.root.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()
    with contextlib.suppress(OSError):
        found.root.rmdir()


def test_two_installs_with_the_same_node_and_job_never_touch_each_others_jobs(
        tmp_path: Path, shared: Path, alice: Any, cgroup_layout: Layout) -> None:
    """Two agents of two installs on one host, the same node name, the same job id: each job
    in its own install's cgroup; ending one leaves the other running, and neither agent takes
    the other's processes for its own."""
    first = executor(tmp_path / "a", cgroup_layout)
    second = executor(tmp_path / "b", cgroup_layout)
    assert first.layout.root != second.layout.root
    jobs = [make_job(shared / name, "echo $$ > pid; sleep 291.5", output=f"{name}.out")
            for name in ("a", "b")]
    for path in ("a", "b"):
        (shared / path).mkdir()
        os.chmod(shared / path, 0o1777)
    jobs[1].id = jobs[0].id  # the same job id, in both installs
    states = []
    for ex, job in zip((first, second), jobs, strict=True):
        record = StartRecord.for_job(job, [0])
        ex.start(record)
        states.append(wait_state(ex.runs_dir / record.key, {RUNNING}))
    key = f"{jobs[0].id}.0"
    pids = []
    for name in ("a", "b"):
        deadline = time.monotonic() + 10
        while not (shared / name / "pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pids.append(int((shared / name / "pid").read_text()))
    assert first.job_of_pid(pids[0]) == jobs[0].id and first.job_of_pid(pids[1]) is None
    assert second.job_of_pid(pids[1]) == jobs[0].id and second.job_of_pid(pids[0]) is None
    for ex, pid in zip((first, second), pids, strict=True):
        group = ex.layout.job_group(key)
        assert group is not None and pid in group.pids()
    first.stop(key, states[0])
    assert wait_state(first.runs_dir / key, {EXITED}).stop == "requested"
    assert start_time(pids[1]) is not None  # the other install's job still runs
    assert cast(RunState, RunState.read(second.runs_dir / key)).phase == RUNNING
    second.stop(key, states[1])
    assert wait_state(second.runs_dir / key, {EXITED}).stop == "requested"


def test_a_job_cgroup_that_exists_already_is_never_reused(
        tmp_path: Path, shared: Path, alice: Any, cgroup_layout: Layout) -> None:
    ex = executor(tmp_path, cgroup_layout)
    job = make_job(shared, "touch ran")
    group = ex.layout.job_group(f"{job.id}.0")
    assert group is not None
    group.path.mkdir()  # left by someone: a job joining it would share its fate
    try:
        state = run(ex, job)
        assert state.phase == FAILED and state.message == (
            f"cannot prepare the job on node n1: its cgroup {group.path} exists already "
            f"(never reused)")
        assert not (shared / "ran").exists()
    finally:
        group.path.rmdir()
    with pytest.raises(OSError, match="exists already"):
        JobGroup(ex.layout.runners or Path("/")).create()


def test_labq_ups_shutdown_removes_its_installs_cgroup_once_empty(
        tmp_path: Path, shared: Path, alice: Any, cgroup_layout: Layout) -> None:
    ex = executor(tmp_path, cgroup_layout)
    root = ex.layout.root
    assert root is not None and root.parent == cgroup_layout.root and root.is_dir()
    job = make_job(shared, "sleep 290.5")
    record = StartRecord.for_job(job, [0])
    ex.start(record)
    wait_state(ex.runs_dir / record.key, {RUNNING})
    stop_runners([tmp_path / "agent"], wait_s=10)
    assert wait_state(ex.runs_dir / record.key, {EXITED}).stop == "requested"
    assert not root.exists()


# ---------------------------------------------------------------------- resource limits

ULIMITS = "for o in -Sn -Hn -Sc -Hc -Ss -Hs -Sl -Hl -Su -Hu -Si -Sq -Se -Sr; do ulimit $o; done"


def _shell(value: int) -> str:
    return "unlimited" if value == INFINITY else str(value)


def _expected(limits: dict[int, tuple[int, int]]) -> list[str]:
    """What `ULIMITS` prints for these limits (bash: KiB for core, stack and memlock; the
    hard limits clamped to this test's own where it cannot raise them, as the runner is)."""
    def clamp(res: int) -> tuple[int, int]:
        soft, hard = limits[res]
        own = resource.getrlimit(res)[1]
        if own != INFINITY and (hard == INFINITY or hard > own):
            hard = own
        if hard != INFINITY and (soft == INFINITY or soft > hard):
            soft = hard
        return soft, hard

    out = []
    for res, scale, sides in (
            (resource.RLIMIT_NOFILE, 1, "sh"), (resource.RLIMIT_CORE, 1024, "sh"),
            (resource.RLIMIT_STACK, 1024, "sh"), (resource.RLIMIT_MEMLOCK, 1024, "sh"),
            (resource.RLIMIT_NPROC, 1, "sh"), (resource.RLIMIT_SIGPENDING, 1, "s"),
            (resource.RLIMIT_MSGQUEUE, 1, "s"), (resource.RLIMIT_NICE, 1, "s"),
            (resource.RLIMIT_RTPRIO, 1, "s")):
        soft, hard = clamp(res)
        for side in sides:
            value = soft if side == "s" else hard
            out.append(_shell(value if value == INFINITY else value // scale))
    return out


@contextlib.contextmanager
def raised_limits() -> Iterator[None]:
    """The agent (here: this test) running with limits a job must not inherit."""
    saved = {r: resource.getrlimit(r) for r in (resource.RLIMIT_NOFILE, resource.RLIMIT_CORE,
                                                resource.RLIMIT_STACK)}
    hard = saved[resource.RLIMIT_NOFILE][1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard) if hard != INFINITY else 4096,
                                                hard))
    resource.setrlimit(resource.RLIMIT_CORE, saved[resource.RLIMIT_CORE][1:] * 2)
    resource.setrlimit(resource.RLIMIT_STACK, (saved[resource.RLIMIT_STACK][1],) * 2)
    try:
        yield
    finally:
        for res, value in saved.items():
            resource.setrlimit(res, value)


def test_a_job_gets_a_fresh_logins_limits_never_the_agents(
        tmp_path: Path, shared: Path, alice: Any) -> None:
    job = make_job(shared, f"bash -c '{ULIMITS}'")
    with raised_limits():
        state = run(executor(tmp_path), job)
    assert (state.phase, state.exit_code) == (EXITED, 0), state
    got = (shared / f"labq-{job.id}.out").read_text().split()
    assert got == _expected(fresh_login())
    assert got[:3] == ["1024", _expected(fresh_login())[1], "0"]  # 1024 files; no core file


def test_limits_conf_for_the_user_applies_to_the_job(tmp_path: Path, shared: Path) -> None:
    user = ensure_user("labq-limits")
    conf = Path(f"/etc/security/limits.d/zz-labq-test-{os.getpid()}.conf")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("labq-limits soft nofile 2000\nlabq-limits hard nofile 3000\n"
                    "labq-limits soft stack 16384\nlabq-limits - core 0\n")
    try:
        job = make_job(shared, f"bash -c '{ULIMITS}'", user=user.pw_name)
        state = run(executor(tmp_path), job)
    finally:
        conf.unlink()
    assert (state.phase, state.exit_code) == (EXITED, 0), state
    got = (shared / f"labq-{job.id}.out").read_text().split()
    assert got[:6] == ["2000", "3000", "0", "0", "16384", _expected(fresh_login())[5]]


def test_limits_conf_is_read_as_pam_limits_reads_it(tmp_path: Path, alice: Any) -> None:
    group = grp.getgrgid(alice.pw_gid).gr_name
    conf = tmp_path / "limits.conf"
    conf.write_text(f"""# comments and blank lines are skipped

*          soft  nofile   4096
*          hard  nproc    500
@{group}   soft  nofile   8192     # a group beats the wildcard...
alice      soft  nofile   2048     # ...and the user beats both, whatever the order
@{group}   soft  nofile   9999
alice      -     memlock  unlimited
alice      hard  cpu      10
alice      soft  cpu      20
1000:      soft  core     100
@{group}   -     nice     -5
alice      -     priority 3
bob        soft  nofile   1
@nogroup-x soft  nofile   1
alice      soft  bogus    1
alice      soft  stack
""")
    later = tmp_path / "limits.d"
    later.mkdir()
    (later / "b.conf").write_text("alice soft nproc 100\n")
    (later / "a.conf").write_text("alice soft nproc 50\n")  # read before b.conf: b wins
    (later / "c.txt").write_text("alice soft nproc 1\n")  # not a .conf: never read
    files = [str(conf), str(later / "a.conf"), str(later / "b.conf")]
    base = fresh_login()
    got = login_limits("alice", alice.pw_uid, alice.pw_gid, files, base)
    assert got.rlimits[resource.RLIMIT_NOFILE] == (2048, base[resource.RLIMIT_NOFILE][1])
    assert got.rlimits[resource.RLIMIT_NPROC] == (100, 500)
    assert got.rlimits[resource.RLIMIT_MEMLOCK] == (INFINITY, INFINITY)
    assert got.rlimits[resource.RLIMIT_CPU] == (600, 600)  # minutes; soft above hard: lowered
    assert got.rlimits[resource.RLIMIT_CORE] == (102400, INFINITY)  # KiB; a uid range
    assert got.rlimits[resource.RLIMIT_NICE] == (25, 25)  # 20 - nice
    assert got.nice == 3
    assert got.skipped == [f"{conf}:16: unknown type 'soft' or item 'bogus'",
                           f"{conf}:17: expected DOMAIN TYPE ITEM VALUE"]
    from agents.limits import config_files
    assert config_files(str(conf), str(later)) == files


def test_the_runner_spec_carries_the_floor_and_deny_list(tmp_path: Path, shared: Path) -> None:
    ex = executor(tmp_path, min_job_uid=1500, job_user_deny=["mallory"])
    job = make_job(shared, "true")
    record = StartRecord.for_job(job, [0])
    ex.start(record)
    spec = RunSpec.load(ex.runs_dir / record.key)
    assert (spec.min_uid, spec.deny_users) == (1500, ["mallory"])
    wait_state(ex.runs_dir / record.key, {EXITED, FAILED})
    runner = (ex.runs_dir / record.key / "runner").read_text().split()
    assert len(runner) == 2 and stat.S_IMODE((ex.runs_dir / record.key / "runner").stat()
                                              .st_mode) == 0o600
    assert json.loads((ex.runs_dir / record.key / "state.json").read_text())["phase"] == FAILED
