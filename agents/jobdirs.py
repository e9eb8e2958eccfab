"""A job attempt's files on its node: the private Ray directory and the job directory
(root-owned, 0710, the user's group) that holds the job's TMPDIR and its batch script; made
before the job starts, removed with everything in it when it ends (by the runner, or by the
agent for a runner that died), never following a link out of them. And its output files
(`open_output`): new ones the user's, 0600; an existing one only if it is the user's own."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import stat
import tempfile


def ray_dir_path(job_id: str, base: str | None = None) -> str:
    """A new private Ray directory's path: short (Ray's socket paths under it are long), with
    a random suffix."""
    return os.path.join(base or tempfile.gettempdir(), f"labq-{job_id}-{secrets.token_hex(4)}")


def make_ray_dir(path: str, account: pwd.struct_passwd, token_text: str = "") -> None:
    """A new 0700 directory at `path` owned by the user, with a Ray token in a 0600 file:
    random, or `token_text` (a job across nodes: the same on each of its nodes)."""
    os.mkdir(path, 0o700)
    try:
        token = os.path.join(path, "token")
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token_text or os.urandom(32).hex())
        if os.geteuid() == 0:
            os.chown(token, account.pw_uid, account.pw_gid)
            os.chown(path, account.pw_uid, account.pw_gid)
    except OSError:
        remove_tree(path)
        raise


JOB_TMP = "tmp"  # the job's TMPDIR, in its job directory
JOB_SCRIPT = "labq_script"  # its batch script, in its job directory


def job_dir_path(key: str, base: str | None = None) -> str:
    """A new job directory's path for the run `key`: on the node's local tmp, named by the run
    and a random suffix, so that two attempts, two agents (installs) or a guess never meet."""
    return os.path.join(base or tempfile.gettempdir(), f"labq-{key}-{secrets.token_hex(6)}")


def make_job_dir(path: str, account: pwd.struct_passwd) -> str:
    """Make the attempt's job directory at `path` (new: an existing one is refused) and the job's
    TMPDIR in it; return the TMPDIR.

    The job directory is root's, 0710 with the user's primary group: the job reaches what is
    in it, but neither it nor anyone else can rename, replace or add an entry there. So the
    TMPDIR (the user's, 0700) stays where the runner made it, and can never become a symbolic
    link to somewhere else that the runner would then remove. (An unprivileged runner runs
    jobs as itself: there everything is that user's, 0700.)"""
    os.mkdir(path, 0o700)
    tmp = os.path.join(path, JOB_TMP)
    try:
        os.mkdir(tmp, 0o700)
        if os.geteuid() == 0:
            os.chown(tmp, account.pw_uid, account.pw_gid)
            os.chown(path, 0, account.pw_gid)
            os.chmod(path, 0o710)
    except OSError:
        remove_tree(path)
        raise
    return tmp


def write_script(job_dir: str, text: str, account: pwd.struct_passwd) -> str:
    """Write a batch script into the job directory, as a new file the user owns (0700), and
    return its path. It is the text captured at submit: editing the submitted file since
    changes nothing, and no other user can swap the file (see `make_job_dir`)."""
    path = os.path.join(job_dir, JOB_SCRIPT)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o700)
    try:
        with open(fd, "w", encoding="utf-8", closefd=False) as handle:
            handle.write(text)
        if os.geteuid() == 0:
            os.fchown(fd, account.pw_uid, account.pw_gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)  # before the fork: a file open for writing cannot be executed (ETXTBSY)
    return path


def open_output(path: str, append: bool, what: str, account: pwd.struct_passwd) -> int:
    """Open a job's output or error file, in the child, as the user (so it can only be where
    the user may write), and return its descriptor.

    A new file is made O_EXCL|O_NOFOLLOW, 0600. An existing one is used only if it is a
    regular file of the user's own with one link: never through a symbolic link, never a file
    someone else made (a 0666 one waiting in a shared directory for the job's output), never
    a FIFO or a device (opened O_NONBLOCK, so nothing of the kind can keep the job
    starting), never a hard link to a file elsewhere; then it is truncated, or appended to by
    a requeued attempt (its own earlier file passes the same checks). Raises OSError with one
    line saying why, having written nothing. `/dev/null` (Slurm's way to keep nothing, and
    `labq run`'s: its output goes to the caller's terminal) is the one device allowed."""
    if path == os.devnull:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    flags = (os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
             | (os.O_APPEND if append else 0))
    made = True
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        made = False
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise OSError(f"cannot write {what} {path}: {_why_not(path, exc)}") from None
    except OSError as exc:
        raise OSError(f"cannot write {what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        problem = ""
        if made:  # (new, O_EXCL: the user's own by construction)
            pass
        elif not stat.S_ISREG(info.st_mode):
            problem = "it is not a regular file"
        elif info.st_uid != account.pw_uid:
            problem = f"it belongs to {_owner(info.st_uid)}, not to {account.pw_name}"
        elif info.st_nlink != 1:
            problem = f"it has {info.st_nlink} hard links"
        if problem:
            raise OSError(f"refusing {what} {path}: {problem} (remove it, or choose another "
                          f"path)")
        if not made and not append:
            os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        raise
    return fd


def _why_not(path: str, exc: OSError) -> str:
    """Why an existing output path cannot be opened, in words."""
    try:
        info = os.lstat(path)
    except OSError:
        return exc.strerror or str(exc)
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    return exc.strerror or str(exc)


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def job_argv(command: list[str], script_path: str) -> list[str]:
    """What the job's process execs: a batch script's file with the job's arguments (the
    kernel runs the script's `#!` interpreter), a single command line through `/bin/sh -c`,
    or the command's words as they are."""
    if script_path:
        return [script_path, *command]
    if len(command) == 1:
        return ["/bin/sh", "-c", command[0]]
    return list(command)


def remove_tree(path: str) -> None:
    """Remove `path` and everything in it, never following a symbolic link: shutil.rmtree's
    walk by file descriptors unlinks a link rather than entering it, and refuses a directory
    swapped for a link under it. Root needs no permission to remove what a job made
    unremovable for its user (chmod 000); an unprivileged runner (jobs run as itself) opens
    such directories up first. Best effort: what cannot be removed is left."""
    if os.geteuid() != 0:
        _open_up(path)
    shutil.rmtree(path, ignore_errors=True)


def _open_up(path: str) -> None:
    """Give the owner back rwx on every directory in `path` (never through a link). Only
    where the runner is that same user: it can change nothing it could not anyway."""
    with contextlib.suppress(OSError):
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return
        os.chmod(path, 0o700)
        with os.scandir(path) as entries:
            subdirs = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        for subdir in subdirs:
            _open_up(subdir)


def remove_job_dir(path: str, owner: int | None = None) -> None:
    """Remove a directory a runner made, if it still is one: a real directory (not a link) of
    the runner's own user, or of `owner` (the job's user, for its Ray directory). The agent
    uses this for a runner that died; the path may have been taken by someone else since, and
    then it is left alone."""
    if not path:
        return
    try:
        info = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(info.st_mode) and info.st_uid in (os.geteuid(), owner):
        remove_tree(path)
