"""Whether $LABQ_HOME can be trusted, and opening the files in it without being fooled.

`labq up`, the coordinator and the agents run as root and keep their passwords, logs, lock and
the store's configuration in $LABQ_HOME. Whoever can write there (or could replace a directory
above it) could read the passwords, plant a Valkey configuration or make root write through a
symbolic link. The rule, OpenSSH's StrictModes applied to the whole path:

- every directory from `/` down to LABQ_HOME's parent is owned by root or by the user running
  labq, and writable by no one else (no group or other write bit) unless it is sticky (like
  `/tmp` or `/var/tmp`, where others may add entries but never rename or remove ours);
- a symbolic link on the way is followed only if root or that user owns it (then the
  directories it leads through are checked the same way);
- LABQ_HOME itself is a directory owned by that user, writable by no one else;
- everything in it, walked without following links, is owned by that user or root, and writable
  by no one else; the API socket alone is 0666 (who connects is the peer uid).

A LABQ_HOME (or a parent) that does not exist is made by the running user (0711) one directory
at a time, each checked after it is made, so one made by someone else meanwhile is refused.

Files are opened with O_NOFOLLOW (and O_EXCL when created) and checked on the descriptor:
a regular file, owned by the running user, one link, not writable by others (secrets: not
readable either).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
import sys
from collections import deque
from pathlib import Path

MAX_LINKS = 40  # symbolic links followed on one path, as the kernel's own limit
MAX_SECRET_BYTES = 4096
HOME_MODE = 0o711  # users traverse it to reach the API socket, and list nothing


class HomeError(RuntimeError):
    """$LABQ_HOME, or a file in it, cannot be trusted: one line that says why and what to do."""


def private_umask() -> None:
    """umask 077 for everything this process writes from now on, and no bytecode caches.

    Python writes a module's `__pycache__` folder and `.pyc` file with the process's umask: a
    daemon running as root that imports a module of an install from a checkout for the first
    time under umask 077 would leave a cache folder only root can read, and every user's labq
    command would then compile those modules from source at each call (`labq submit --help`
    0.33-0.40 s instead of 0.10 s on a 2-core VM). So a process that makes its files private
    writes no caches; `scripts/demo` and `scripts/test` compile them, readable by all, at
    install."""
    os.umask(0o077)
    sys.dont_write_bytecode = True


def home_from_env(env: dict[str, str] | None = None) -> Path:
    """The LABQ_HOME that Settings.load will use (before it reads config.toml from there)."""
    env = dict(os.environ if env is None else env)
    return Path(env.get("LABQ_HOME") or Path.home() / ".labq").expanduser()


def trusted_home(home: Path, create: bool = True, what: str = "LABQ_HOME") -> Path:
    """The real path of `home` once it is checked (and made, when missing and `create`);
    HomeError when it, a directory above it or anything in it breaks the rule above. `what`
    names it in messages (LABQ_HOME, or a node's agent_state_dir, kept by the same rule)."""
    uid = os.geteuid()
    label = f"{what} {home}"
    real, missing = _resolve(Path(os.path.abspath(home)), uid, label)
    if missing and not create:
        raise HomeError(f"{label} does not exist")
    for name in missing:
        real = real / name
        try:
            os.mkdir(real, HOME_MODE)
            os.chmod(real, HOME_MODE)  # (the umask took the x bits)
        except FileExistsError:
            pass
        except OSError as exc:
            raise HomeError(f"{label}: cannot make {real}: {_why(exc)}") from None
        st = os.lstat(real)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            raise HomeError(f"{label}: {real} was made by someone else meanwhile; use a "
                            "place under a directory only you or root can write")
    st = os.lstat(real)
    if not stat.S_ISDIR(st.st_mode):
        raise HomeError(f"{label} is not a directory")
    if st.st_uid != uid:
        raise HomeError(f"{label} belongs to {_owner(st.st_uid)}, not to {_owner(uid)} who "
                        f"runs labq: use a {what} of your own")
    if st.st_mode & 0o022:
        raise HomeError(f"{label} is writable by others (mode "
                        f"{stat.S_IMODE(st.st_mode):o}): chmod {HOME_MODE:o} {real}")
    _check_tree(real, uid, label)
    return real


def trusted_dir(path: Path, what: str) -> Path:
    """An existing directory outside LABQ_HOME that labq makes a file in (the API socket's
    folder): it and every directory above it kept by the rule for the directories above
    LABQ_HOME (root's or the running user's, writable by no one else unless sticky). Returns
    its real path."""
    uid = os.geteuid()
    label = f"{what} {path}"
    real, missing = _resolve(Path(os.path.abspath(path)), uid, label)
    if missing:
        raise HomeError(f"{label} does not exist")
    _check_parent(real, os.lstat(real), uid, label)
    return real


def private_dir(path: Path) -> None:
    """`path` made (0700) or, when it exists, checked: a directory of the running user (never
    a link), then made 0700."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = _open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise HomeError(f"{path} belongs to {_owner(st.st_uid)}; remove it")
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def open_lock(path: Path) -> int:
    """A descriptor of the lock file `path` (made 0600 if missing), never truncated, never
    through a link."""
    return _open_file(path, os.O_RDWR, secret=False)


def open_log(path: Path) -> int:
    """A descriptor appending to the log `path` (made 0600 if missing)."""
    return _open_file(path, os.O_WRONLY | os.O_APPEND, secret=False)


def read_private(path: Path) -> str:
    """A secret (a password) from `path`: the running user's, 0600 or stricter, stripped."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise HomeError(f"cannot read {path}: {_why(exc)}") from None
    try:
        _check_fd(fd, path, secret=True)
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    text = data.decode(errors="replace").strip()
    if not text or len(data) > MAX_SECRET_BYTES:
        raise HomeError(f"{path} holds no password (empty or over {MAX_SECRET_BYTES} bytes); "
                        "remove it and labq up makes a new one")
    return text


def write_private(path: Path, text: str) -> None:
    """`text` into `path` (0600) atomically: written to a new file (O_EXCL, never through a
    link) beside it, then renamed over it, so a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileExistsError:  # left by a run that died here; our directory, so ours
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        data = text.encode()
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_new_private(path: Path, text: str) -> bool:
    """`text` into `path` only if there is no `path` yet (O_EXCL); False when there was."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return True


# ----------------------------------------------------------------------------- the rule


def _resolve(path: Path, uid: int, label: str) -> tuple[Path, list[str]]:
    """Walk `path` from `/`, checking each directory passed and each link followed. Returns the
    real path of the longest part that exists and the names still missing after it."""
    _check_parent(Path("/"), os.lstat("/"), uid, label)
    todo = deque(path.parts[1:])
    current = Path("/")
    links = 0
    while todo:
        name = todo.popleft()
        if name == ".":
            continue
        if name == "..":
            current = current.parent
            continue
        candidate = current / name
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return current, [name, *todo]
        except OSError as exc:
            raise HomeError(f"{label}: cannot check {candidate}: {_why(exc)}") from None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if st.st_uid not in (0, uid) or links > MAX_LINKS:
                raise HomeError(f"{label}: the link {candidate} belongs to "
                                f"{_owner(st.st_uid)}; use a path without it")
            target = Path(os.readlink(candidate))
            if target.is_absolute():
                current = Path("/")
            todo.extendleft(reversed([p for p in target.parts if p != "/"]))
            continue
        if todo:  # a directory above LABQ_HOME
            _check_parent(candidate, st, uid, label)
        current = candidate
    return current, []


def _check_parent(path: Path, st: os.stat_result, uid: int, label: str) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise HomeError(f"{label}: {path} is not a directory")
    if st.st_uid not in (0, uid):
        raise HomeError(f"{label}: {path} belongs to {_owner(st.st_uid)}; only "
                        f"root or {_owner(uid)} may own the directories above it")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise HomeError(f"{label}: {path} is writable by others (mode "
                        f"{stat.S_IMODE(st.st_mode):o}) and not sticky; use another place")


def _check_tree(real: Path, uid: int, label: str) -> None:
    """Everything under `real`, never following a link: root's or `uid`'s, and writable by
    no one else but the API socket."""
    folders = [real]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise HomeError(f"{label}: cannot list {folder}: {_why(exc)}") from None
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone meanwhile (a log rotated, a run removed)
            if st.st_uid not in (0, uid):
                raise HomeError(f"{label}: {entry.path} belongs to "
                                f"{_owner(st.st_uid)}; someone else wrote there: use a "
                                "new one")
            if st.st_mode & 0o022 and not (stat.S_ISSOCK(st.st_mode) or
                                          stat.S_ISLNK(st.st_mode)):
                raise HomeError(f"{label}: {entry.path} is writable by others (mode "
                                f"{stat.S_IMODE(st.st_mode):o}): chmod go-w {entry.path}")
            if stat.S_ISDIR(st.st_mode):
                folders.append(Path(entry.path))


# ----------------------------------------------------------------------------- files


def _open(path: Path, flags: int, mode: int = 0o600) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise HomeError(f"cannot open {path}: {_why(exc)}") from None


def _open_file(path: Path, flags: int, secret: bool) -> int:
    """`path` created (O_EXCL) or, when it exists, opened without following a link and checked
    on the descriptor."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        fd = _open(path, flags | os.O_NONBLOCK)  # (a FIFO planted there must not block us)
        try:
            _check_fd(fd, path, secret)
        except BaseException:
            os.close(fd)
            raise
        os.set_blocking(fd, True)
        return fd
    except OSError as exc:
        raise HomeError(f"cannot open {path}: {_why(exc)}") from None
    os.fchmod(fd, 0o600)
    return fd


def _check_fd(fd: int, path: Path, secret: bool) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise HomeError(f"{path} is not a regular file; remove it")
    if st.st_uid != os.geteuid():
        raise HomeError(f"{path} belongs to {_owner(st.st_uid)}, not {_owner(os.geteuid())}; "
                        "remove it")
    if st.st_nlink != 1:
        raise HomeError(f"{path} has {st.st_nlink} hard links; remove it")
    if st.st_mode & (0o077 if secret else 0o022):
        raise HomeError(f"{path} is mode {stat.S_IMODE(st.st_mode):o}: others may "
                        f"{'read' if secret else 'write'} it; chmod 600 {path}")


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link (never followed); remove it"
    return exc.strerror or str(exc)


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _describe(st: os.stat_result) -> str:
    kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a directory"
    return f"{kind} of {_owner(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):o}"
