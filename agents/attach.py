"""An interactive job's node side (`labq run`, like `srun --pty`): run the command on a
pseudo-terminal inside the job, and relay it to the caller's terminal.

    python -m agents.attach HOST:PORT -- COMMAND...

The caller (`labq run`, scheduler.cli.attach) listens on HOST:PORT before it submits the job
and gives the job a one-time token in its environment (`LABQRUN_TOKEN`: private to the user,
never logged, dropped at the job's end). Once the job is placed, its runner starts this as the
user in the job's cgroup with its GPUs and limits; it connects back to the caller (as Slurm's
step daemon connects back to `srun`), proves it is the job with the token, and runs COMMAND on
a new pseudo-terminal (its controlling terminal: Ctrl-C reaches it as SIGINT, a resize as
SIGWINCH), without the token in its environment. Input, output and window size go both ways
as frames; COMMAND's exit status ends the job and the caller's `labq run`. If the caller goes
away (its terminal closed, the connection lost), COMMAND gets SIGHUP, then SIGKILL after a
grace, and the job ends. So a user can attach only to a job they submitted: nobody else knows
its token, and the job connects only to the caller that made it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import socket
import struct
import sys
import termios
import time

from scheduler.jobwire import EOF, EXIT, INPUT, OUTPUT, TOKEN_ENV, WINSIZE, Frames, frame

HANGUP_GRACE_S = 5.0
FIRST_FRAME_S = 10.0


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def exit_status(wait_status: int) -> int:
    """A shell's exit status for a waitpid status (128 + signal when killed)."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _connect(where: str, token: str) -> socket.socket:
    host, _, port = where.rpartition(":")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
    sock.settimeout(None)
    sock.sendall(token.encode() + b"\n")
    return sock


def _hang_up(pid: int) -> int:
    """The caller went away: SIGHUP to the command's group, SIGKILL after the grace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGHUP)
    deadline = time.monotonic() + HANGUP_GRACE_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return exit_status(status)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return exit_status(os.waitpid(pid, 0)[1])


def _drain(master: int, sock: socket.socket) -> None:
    """Send what is left in the pty, without waiting on a child that still holds it open."""
    with contextlib.suppress(OSError):
        while select.select([master], [], [], 0.1)[0]:
            rest = os.read(master, 65536)
            if not rest:
                return
            sock.sendall(frame(OUTPUT, rest))


def _first_size(sock: socket.socket, frames: Frames) -> tuple[int, int] | None:
    """The caller's window size, which it sends first (0 x 0: not a terminal), so the command
    starts on a pty of the right size; None if the caller said nothing in time."""
    sock.settimeout(FIRST_FRAME_S)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return None
            got = frames.feed(data)
            if got:
                kind, body = got[0]
                frames.buffer = b"".join(frame(k, b) for k, b in got[1:]) + frames.buffer
                if kind == WINSIZE and len(body) == 4:
                    rows, cols = struct.unpack("!HH", body)
                    return (rows, cols) if rows and cols else None
                return None
    except TimeoutError:
        return None
    finally:
        sock.settimeout(None)


def relay(sock: socket.socket, command: list[str]) -> int:
    """Run `command` on a new pty and relay it over `sock` until it exits; its status."""
    frames = Frames()
    size = _first_size(sock, frames)
    pid, master = pty.fork()
    if pid == 0:  # the command: its own session, the pty its controlling terminal
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(2, f"labq run: {command[0]}: {exc.strerror}\r\n".encode())
        os._exit(127)
    if size:
        set_winsize(master, *size)
    status: int | None = None
    if frames.buffer:  # what the caller typed before the command started
        for kind, body in frames.feed(b""):
            if kind == INPUT:
                os.write(master, body)
    try:
        while status is None:
            ready, _, _ = select.select([master, sock.fileno()], [], [], 0.5)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the command (and all holding the pty) is gone
                    data = b""
                if data:
                    sock.sendall(frame(OUTPUT, data))
                else:
                    status = exit_status(os.waitpid(pid, 0)[1])
                    break
            if sock.fileno() in ready:
                data = sock.recv(65536)
                if not data:
                    os.close(master)
                    return _hang_up(pid)
                for kind, body in frames.feed(data):
                    if kind == INPUT:
                        os.write(master, body)
                    elif kind == EOF:
                        os.write(master, b"\x04")  # ^D: end of input, as a terminal's
                    elif kind == WINSIZE and len(body) == 4:
                        set_winsize(master, *struct.unpack("!HH", body))
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(pid, signal.SIGWINCH)
            if status is None:
                done, wait_status = os.waitpid(pid, os.WNOHANG)
                if done:  # exited; what it wrote last may still be in the pty
                    _drain(master, sock)
                    status = exit_status(wait_status)
        sock.sendall(frame(EXIT, struct.pack("!i", status)))
    except OSError:  # the caller's connection broke mid-write
        return _hang_up(pid) if status is None else status
    finally:
        with contextlib.suppress(OSError):
            os.close(master)
    return status


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m agents.attach HOST:PORT -- COMMAND...", file=sys.stderr)
        return 2
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        print(f"labq run: no {TOKEN_ENV}: this is started by `labq run`", file=sys.stderr)
        return 2
    try:
        sock = _connect(argv[0], token)
    except (OSError, ValueError) as exc:
        print(f"labq run: cannot reach the caller at {argv[0]}: {exc}", file=sys.stderr)
        return 1
    with sock:
        return relay(sock, argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
