"""The API's listening sockets: `claim_unix_socket` never replaces a socket something still
answers on (a second coordinator on the same home refuses instead); `listen_unix` and
`listen_tcp` listen (scheduler.server.frontdoor accepts on them)."""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from pathlib import Path
from typing import IO

BACKLOG = 1024  # connections the kernel queues until they are accepted
PROBE_TIMEOUT_S = 2.0


class DoorError(RuntimeError):
    """A socket cannot be served as asked (one line)."""


def _probe(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket `path` (a listener with a
    full queue counts: it is alive, only busy)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT_S)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:  # a timeout, a full queue, no permission: not known dead, so kept
        return True
    finally:
        probe.close()
    return True


def claim_unix_socket(path: Path) -> IO[str]:
    """The lock that says this process serves the Unix socket `path` (`path`.lock, held while
    the process lives), with `path` made free for `listen_unix`.

    A socket something answers on is never unlinked: DoorError, one line. Only a dead socket
    file (its server gone) is removed; anything else at `path` is left alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    busy = (f"another coordinator is serving {path} (LABQ_HOME={path.parent}); it was left "
            "running: stop it first, or give this one another LABQ_HOME or socket")
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise DoorError(f"cannot open the lock {lock_path}: {exc.strerror}") from None
    lock = os.fdopen(fd, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DoorError(busy) from None
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return lock
    if not stat.S_ISSOCK(mode):
        lock.close()
        raise DoorError(f"{path} exists and is not a socket: move it away, or set another "
                        "socket path")
    if _probe(path):
        lock.close()
        raise DoorError(busy)
    path.unlink()  # a dead socket: its server is gone
    return lock


def listen_unix(path: Path) -> socket.socket:
    """A listening Unix socket at `path` (claimed first), mode 0666: every local user may
    connect; the peer uid says who calls."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o666)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise DoorError(f"cannot listen on {path}: {exc.strerror}") from None
    return sock


def listen_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (OSError when it cannot be bound)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)
