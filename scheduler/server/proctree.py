"""`labq up`'s hold on everything it starts: it is a child subreaper, so no process of the
stack ever leaves its process tree.

The agents start each job's runner in a session of its own, and a runner outlives its agent (as
on a real node); a job may double-fork (`setsid nohup ... &`). With PR_SET_CHILD_SUBREAPER set
on `labq up`, an orphan anywhere below it is re-parented to it instead of to init: whatever the
stack started, and whatever that started, is a descendant of `labq up` until it ends, whatever
uid, session or environment it has. Stopping walks that tree; nothing depends on a variable a
job could unset or a cgroup an unprivileged `labq up` does not have.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Collection
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants. False where the kernel
    refuses (then orphans go to init, as before)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def die_with(parent: int) -> Callable[[], None]:
    """A `preexec_fn` for a child of `parent` (a single-threaded `labq up`): SIGTERM to the
    child when `parent` dies, killed so that it could not stop its children (the OOM killer,
    SIGKILL), so that no Valkey or daemon goes on alone (a second `labq up` would start a second
    Valkey on the same data). A runner is not a child of `labq up`: the jobs go on, and the
    next `labq up`'s agent adopts them."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, not in the child

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # it died before the line above
            os._exit(1)

    return preexec


def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process, from one pass over /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(fields[1]), fields[0].decode())
    return table


def descendants(root: int, exclude: Collection[int] = ()) -> dict[int, str]:
    """pid -> state of every process below `root` (not below a pid in `exclude`, nor those)."""
    children: dict[int, list[int]] = {}
    table = _table()
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    todo = [p for p in children.get(root, []) if p not in exclude]
    while todo:
        pid = todo.pop()
        found[pid] = table[pid][1]
        todo += [p for p in children.get(pid, []) if p not in exclude and p not in found]
    return found


def children() -> list[int]:
    """This process's children (its own and adopted ones), from /proc/self/task/*/children
    where the kernel has it (cheap: no pass over every process), else from /proc."""
    try:
        found = []
        for task in os.scandir("/proc/self/task"):
            with open(os.path.join(task.path, "children")) as handle:
                found += [int(pid) for pid in handle.read().split()]
        return found
    except OSError:
        me = os.getpid()
        return [pid for pid, (ppid, _) in _table().items() if ppid == me]


def reap_adopted(keep: Collection[int]) -> None:
    """Collect the exit of adopted orphans that ended (runners whose agent died, a job's
    double-forked processes whose runner died); `keep` are the children whose exit their
    `Popen` collects."""
    for pid in children():
        if pid not in keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def kill_descendants(grace: float, exclude: Collection[int] = (),
                     keep: Collection[int] = ()) -> list[int]:
    """SIGTERM every live process below this one (but those below `exclude`), wait up to
    `grace` seconds, then SIGKILL what is left until nothing is (a process forking meanwhile
    included), reaping the orphans that come to this process. Returns the pids still alive
    after 10 s more of trying (a process stuck in the kernel), normally none."""
    me = os.getpid()

    def alive() -> list[int]:
        reap_adopted(keep)
        return [p for p, s in descendants(me, exclude).items() if s != "Z"]

    for pid in alive():
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    deadline = time.monotonic() + 10.0
    while (left := alive()) and time.monotonic() < deadline:
        for pid in left:
            _kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return alive()


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


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
        _kill(pid, signal.SIGKILL)
