"""`labq run`'s caller side: wait for the interactive job to be placed, take its connection
(proven by the job's one-time token), and relay the terminal (agents.attach is the node side).

The caller listens before it submits: on the address it reaches the coordinator from (its
host's address on that route; loopback for a local socket), a port the kernel picks. While the
job waits, one line on stderr says why; Ctrl-C then cancels it. Once attached, the terminal is
raw (the job's pty does the line editing and turns Ctrl-C into SIGINT there), its size follows
the caller's window, and `labq run` exits with the command's status.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import select
import signal
import socket
import struct
import sys
import termios
import tty
from collections.abc import Callable
from typing import Any

from scheduler.client import address_towards
from scheduler.jobwire import EOF, EXIT, INPUT, OUTPUT, WINSIZE, Frames, frame

ACCEPT_TOKEN_S = 10.0
POLL_S = 1.0


def listen_address(server_host: str = "") -> str:
    """Where the job's node can reach this caller: this host's address on the route to the
    coordinator (`server_host`), or loopback when it is local."""
    if not server_host:
        return "127.0.0.1"
    # nothing better known: every address (the job's token still guards the connection)
    return address_towards(server_host, 9) or "0.0.0.0"  # noqa: S104


def listener(address: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.listen(4)
    return sock


def accept_job(lsock: socket.socket, token: str, still_waiting: Callable[[], bool]
               ) -> socket.socket | None:
    """The job's connection once it proves itself, or None if `still_waiting()` says the job
    ended first. Connections without the token are closed and ignored."""
    while True:
        ready, _, _ = select.select([lsock], [], [], POLL_S)
        if not ready:
            if not still_waiting():
                return None
            continue
        conn, _ = lsock.accept()
        conn.settimeout(ACCEPT_TOKEN_S)
        try:
            line = b""
            while not line.endswith(b"\n") and len(line) < 200:
                chunk = conn.recv(200 - len(line))
                if not chunk:
                    break
                line += chunk
            if hmac.compare_digest(line.strip(), token.encode()):
                conn.settimeout(None)
                return conn
        except OSError:
            pass
        conn.close()


def _winsize(fd: int) -> bytes:
    """The terminal's own size (not $LINES/$COLUMNS, which a shell may leave stale)."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return struct.pack("!HH", 24, 80)
    return struct.pack("!HH", size.lines, size.columns)


def relay(conn: socket.socket, stdin: Any = None, stdout: Any = None) -> int:
    """Relay the terminal to the job until it sends its exit status (255: connection lost)."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    in_fd, out_fd = stdin.fileno(), stdout.fileno()
    interactive = os.isatty(in_fd)
    saved = termios.tcgetattr(in_fd) if interactive else None
    frames = Frames()
    previous_winch: Any = None
    # first of all, the window's size (0 x 0: not a terminal): the job's pty starts with it
    conn.sendall(frame(WINSIZE, _winsize(in_fd) if interactive else struct.pack("!HH", 0, 0)))
    if interactive:
        previous_winch = signal.signal(
            signal.SIGWINCH, lambda *_: conn.sendall(frame(WINSIZE, _winsize(in_fd))))
        tty.setraw(in_fd)
    watch = [conn.fileno(), in_fd]
    try:
        while True:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if in_fd in ready:
                data = os.read(in_fd, 65536)
                if data:
                    conn.sendall(frame(INPUT, data))
                else:  # end of input (a pipe): the job's terminal gets ^D
                    conn.sendall(frame(EOF))
                    watch = [conn.fileno()]
            if conn.fileno() in ready:
                data = conn.recv(65536)
                if not data:
                    return _lost(saved, in_fd)
                for kind, body in frames.feed(data):
                    if kind == OUTPUT:
                        os.write(out_fd, body)
                    elif kind == EXIT:
                        return int(struct.unpack("!i", body)[0])
    except OSError:
        return _lost(saved, in_fd)
    finally:
        if saved is not None:
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        if interactive:
            signal.signal(signal.SIGWINCH, previous_winch or signal.SIG_DFL)


def _lost(saved: Any, in_fd: int) -> int:
    if saved is not None:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
    print("\r\nlabq run: the connection to the job was lost", file=sys.stderr, flush=True)
    return 255


def wait_message(job: dict[str, Any], shown: set[str]) -> None:
    """One line on stderr each time the job's reason for waiting changes."""
    reason = str(job.get("reason") or job.get("state") or "")
    if reason and reason not in shown:
        shown.add(reason)
        print(f"labq run: job {job['id']} waiting ({reason})", file=sys.stderr, flush=True)

