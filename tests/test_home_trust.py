"""$LABQ_HOME is trusted only when it is the running user's and no one else could have written
in it or above it (issue 18, item 4; scheduler/server/homecheck.py). The attacks run as a real
unprivileged user; root then runs the real `labq up`, `labq coordinator` and `labq agent`, which
refuse in one line and write nothing."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from scheduler.server import homecheck
from scheduler.server.homecheck import HomeError
from tests.e2e_stack import python_as
from tests.security_server import can_switch_users, ensure_user

pytestmark = pytest.mark.skipif(not can_switch_users(),
                                reason="needs root, useradd and /usr/bin/python3")

EVE = "labq-sec-eve"
LABQ = str(Path(sys.executable).parent / "labq")
COMMANDS = {"up": ["up", "--simulate", "1x1", "--metrics-port", "0"],
            "coordinator": ["coordinator"], "agent": ["agent", "--simulate", "1"]}

# Eve prepares, before root's first `labq up`, the LABQ_HOME root will use: her config, her
# password for the coordinator, her Valkey config, and links to a file only root may write.
SQUAT = r'''
import os, sys
home, target = sys.argv[1], sys.argv[2]
os.mkdir(home, 0o777); os.chmod(home, 0o777)
for d in ("secrets", "valkey", "logs"):
    os.mkdir(os.path.join(home, d), 0o777); os.chmod(os.path.join(home, d), 0o777)
files = {"config.toml": '[api]\nadmins = ["labq-sec-eve"]\n',
         "secrets/coordinator.pass": "eve-chose-this\n",
         "valkey/valkey.conf": "dir /tmp\nport 6390\n",
         "logs/coordinator.log": ""}
for name, text in files.items():
    with open(os.path.join(home, name), "w") as f:
        f.write(text)
    os.chmod(os.path.join(home, name), 0o666)
for name in ("up.lock", "run.json", "logs/valkey.log", "secrets/agent-sim-0.pass"):
    os.symlink(target, os.path.join(home, name))
print("ok")
'''


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry under `root` (not following links): mode, owner, mtime, and its content or
    link target."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                body = "-> " + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                body = path.read_text()
            else:
                body = ""
            found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_mtime_ns, body)
    return found


@pytest.fixture
def precious() -> Path:
    """A file only root may read or write, which must come out of every test intact."""
    folder = Path(tempfile.mkdtemp(prefix="labq-precious-"))
    path = folder / "root-only"
    path.write_text("precious\n")
    os.chmod(path, 0o600)
    os.chmod(folder, 0o755)
    return path


def run_labq(args: list[str], home: Path, cwd: str = "/") -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LABQ_HOME": str(home)}
    return subprocess.run([LABQ, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def assert_refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("labq: error: "), done.stderr
    assert done.stdout == "", done.stdout  # refused before it said anything else
    for word in words:
        assert word in lines[0], (word, lines[0])


def processes_with(home: Path) -> list[str]:
    """Command lines of processes whose environment names `home` (a daemon it started)."""
    marker = f"LABQ_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append((entry / "cmdline").read_bytes().decode(errors="replace"))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_home_another_user_made_first_is_refused_and_left_as_it_was(
        command: str, precious: Path) -> None:
    ensure_user(EVE)
    home = Path(tempfile.gettempdir()) / f"labq-squat-{secrets.token_hex(4)}"
    made = subprocess.run(["/usr/bin/python3", "-c", SQUAT, str(home), str(precious)],
                          capture_output=True, text=True, user=EVE, group=EVE, extra_groups=[],
                          cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert made.stdout.strip() == "ok", made.stderr
    before = snapshot(home)

    done = run_labq(COMMANDS[command], home)

    assert_refused(done, str(home), f"belongs to {EVE}")
    assert snapshot(home) == before  # nothing written, made, chmod-ed or truncated there
    assert precious.read_text() == "precious\n"
    assert processes_with(home) == []  # no Valkey, no daemon started with it


def test_a_home_under_a_folder_others_may_write_is_refused_and_not_made() -> None:
    shared = Path(tempfile.mkdtemp(prefix="labq-shared-"))
    os.chmod(shared, 0o777)  # writable by all, not sticky: anyone may rename what is in it
    home = shared / "home"
    assert_refused(run_labq(COMMANDS["up"], home), f"{shared} is writable by others")
    assert not home.exists()


def test_a_link_of_another_user_on_the_way_is_not_followed(precious: Path) -> None:
    ensure_user(EVE)
    link = Path(tempfile.gettempdir()) / f"labq-link-{secrets.token_hex(4)}"
    target = Path(tempfile.mkdtemp(prefix="labq-link-target-"))  # root's own folder
    made = python_as(EVE, f"import os; os.symlink({str(target)!r}, {str(link)!r})")
    assert made.returncode == 0, made.stderr
    done = run_labq(COMMANDS["up"], link / "home")
    assert_refused(done, f"the link {link} belongs to {EVE}")
    assert list(target.iterdir()) == []  # she could have swapped it: nothing made through it


def test_an_up_lock_link_to_a_root_only_file_is_never_followed(precious: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="labq-lock-"))
    (home / "up.lock").symlink_to(precious)
    before = precious.stat()

    done = run_labq(COMMANDS["up"], home)

    assert_refused(done, f"{home}/up.lock", "symbolic link")
    assert precious.read_text() == "precious\n"
    assert precious.stat().st_mtime_ns == before.st_mtime_ns
    assert processes_with(home) == []


def test_a_file_of_another_user_inside_the_home_is_refused() -> None:
    home = Path(tempfile.mkdtemp(prefix="labq-planted-"))
    (home / "logs").mkdir(mode=0o700)
    planted = home / "logs" / "coordinator.log"
    planted.write_text("")
    os.chown(planted, ensure_user(EVE), -1)
    assert_refused(run_labq(COMMANDS["coordinator"], home), str(planted), f"belongs to {EVE}")


def test_the_agents_state_dir_and_the_socket_folder_follow_the_same_rule() -> None:
    """Configured outside LABQ_HOME, an agent's state directory (where its runners' specs are)
    and the coordinator's socket folder are refused where others may write."""
    ensure_user(EVE)
    home = Path(tempfile.mkdtemp(prefix="labq-good-"))
    shared = Path(tempfile.mkdtemp(prefix="labq-shared-"))
    os.chmod(shared, 0o777)
    squatted = Path(tempfile.gettempdir()) / f"labq-state-{secrets.token_hex(4)}"
    made = python_as(EVE, f"import os; os.mkdir({str(squatted)!r}, 0o700)")
    assert made.returncode == 0, made.stderr
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LABQ_HOME": str(home)}
    for extra, args, words in (
            ({"LABQ_AGENT_STATE_DIR": str(squatted)}, COMMANDS["agent"],
             [f"agent_state_dir {squatted} belongs to {EVE}"]),
            ({"LABQ_AGENT_STATE_DIR": str(shared / "state")}, COMMANDS["agent"],
             [f"{shared} is writable by others"]),
            ({"LABQ_SOCKET": str(shared / "labq.sock")}, COMMANDS["coordinator"],
             ["the API socket's folder", f"{shared} is writable by others"])):
        done = subprocess.run([LABQ, *args], env={**env, **extra}, cwd="/", capture_output=True,
                              text=True, timeout=120)
        assert_refused(done, *words)
    assert list(shared.iterdir()) == [] and list(squatted.iterdir()) == []


def test_a_user_may_not_use_a_home_root_made() -> None:
    """The same rule for a user's own `labq up`: root's LABQ_HOME is not hers."""
    ensure_user(EVE)
    home = Path(tempfile.mkdtemp(prefix="labq-roots-"))
    os.chmod(home, 0o755)
    done = python_as(EVE, "import subprocess, sys; r = subprocess.run(sys.argv[1:], "
                     "capture_output=True, text=True); print(r.returncode, r.stderr.strip())"
                     .replace("sys.argv[1:]", repr([LABQ, *COMMANDS["up"]])),
                     LABQ_HOME=str(home), HOME="/")
    code, _, message = done.stdout.strip().partition(" ")
    assert code == "1", done.stdout + done.stderr
    assert message.startswith("labq: error: ") and "belongs to root" in message, message
    assert "\n" not in message
    assert list(home.iterdir()) == []


# ---------------------------------------------------------------- the rule, on real files


def test_a_missing_home_is_made_one_folder_at_a_time_0711(tmp_path: Path) -> None:
    home = tmp_path / "a" / "b" / "home"
    assert homecheck.trusted_home(home) == home.resolve()
    for folder in (tmp_path / "a", tmp_path / "a" / "b", home):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o711
        assert folder.stat().st_uid == os.geteuid()


def test_sticky_folders_such_as_tmp_are_trusted_others_writable_ones_not(tmp_path: Path) -> None:
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    assert homecheck.trusted_home(sticky / "home").is_dir()
    os.chmod(sticky, 0o777)
    with pytest.raises(HomeError, match="writable by others .* not sticky"):
        homecheck.trusted_home(sticky / "home")
    os.chmod(sticky, 0o775)  # the group may write: refused as well
    with pytest.raises(HomeError, match="writable by others"):
        homecheck.trusted_home(sticky / "home")


def test_a_home_others_may_write_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o757)
    with pytest.raises(HomeError, match=r"writable by others \(mode 757\): chmod 711"):
        homecheck.trusted_home(home)


def test_root_links_on_the_way_are_followed_to_the_real_home(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "via").symlink_to(real)
    assert homecheck.trusted_home(tmp_path / "via" / "home") == real / "home"


def test_secrets_are_read_only_from_the_users_own_private_regular_files(tmp_path: Path) -> None:
    secret = tmp_path / "s.pass"
    secret.write_text("pw\n")
    os.chmod(secret, 0o600)
    assert homecheck.read_private(secret) == "pw"
    os.chmod(secret, 0o640)
    with pytest.raises(HomeError, match="others may read it"):
        homecheck.read_private(secret)
    os.chmod(secret, 0o600)
    os.chown(secret, ensure_user(EVE), -1)
    with pytest.raises(HomeError, match=f"belongs to {EVE}"):
        homecheck.read_private(secret)
    link = tmp_path / "l.pass"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(HomeError, match="symbolic link"):
        homecheck.read_private(link)
    fifo = tmp_path / "f.pass"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(HomeError, match="not a regular file"):  # and it did not block
        homecheck.read_private(fifo)


def test_logs_and_locks_are_made_exclusively_and_never_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    log = tmp_path / "x.log"
    log.symlink_to(target)
    with pytest.raises(HomeError, match="symbolic link"):
        homecheck.open_log(log)
    hard = tmp_path / "hard.lock"
    os.link(target, hard)
    with pytest.raises(HomeError, match="2 hard links"):
        homecheck.open_lock(hard)
    fd = homecheck.open_lock(tmp_path / "new.lock")
    os.close(fd)
    assert stat.S_IMODE((tmp_path / "new.lock").stat().st_mode) == 0o600
    assert target.read_text() == "keep"


def test_write_private_replaces_a_link_and_never_writes_through_it(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    run = tmp_path / "run.json"
    run.symlink_to(target)
    homecheck.write_private(run, "{}")
    assert not run.is_symlink() and run.read_text() == "{}"
    assert target.read_text() == "keep"
    assert stat.S_IMODE(run.stat().st_mode) == 0o600


# ---------------------------------------------------------------- the caller's directory


def test_labq_up_run_from_an_uninstalled_checkout_refuses_to_start_daemons() -> None:
    """`python -m scheduler.cli up` from a checkout imports labq from the current directory;
    its daemons never would (they start in / with -P), so it refuses in one line rather than
    start daemons that cannot import labq. (The same interpreter, with labq's dependencies on
    PYTHONPATH but not labq itself.)"""
    repo = Path(__file__).resolve().parents[1]
    site = Path(sys.executable).parent.parent / "lib" / \
        f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    if not Path("/usr/bin/python3").resolve().name.startswith(
            f"python{sys.version_info.major}.{sys.version_info.minor}") or not site.is_dir():
        pytest.skip("needs the venv made from /usr/bin/python3 (scripts/venv.sh)")
    home = Path(tempfile.mkdtemp(prefix="labq-checkout-"))
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LABQ_HOME": str(home),
           "PYTHONPATH": str(site)}
    done = subprocess.run(["/usr/bin/python3", "-m", "scheduler.cli", *COMMANDS["up"]],
                          env=env, cwd=repo, capture_output=True, text=True, timeout=120)
    assert_refused(done, "labq is not installed for /usr/bin/python3")
    assert processes_with(home) == []
