"""Steps of a job across nodes (like `srun` inside an allocation): run a command on the job's
other nodes, inside their part of the job, from its head node.

A job across K nodes runs its command on the head node (rank 0); every other rank runs

    python -m agents.steps serve ADDRESS PORT [-- COMMAND...]

as the job's user, in that node's job cgroup with that node's GPUs: a small server on the
node's address (what its agent reports), port `LABQ_STEP_PORT + rank`, that runs the commands
the head sends (`labq step`), and COMMAND beside them if given (the job's Ray worker), exiting
when COMMAND does. A caller proves it belongs to the job with the job's token (the file
`RAY_AUTH_TOKEN_PATH`, 0600 and the user's, the same on each node): anyone else's connection
is closed unanswered. A step inherits the node's job environment (`LABQ_NODE_RANK` is that
node's) and runs in the caller's directory; its output comes back as it is written, its exit
status at the end; a caller that goes away (Ctrl-C) stops its step (SIGTERM, then SIGKILL).

The caller is `labq step` (scheduler.cli.step); the frames and the token are
scheduler.jobwire's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import signal
import struct
import sys
from collections.abc import Sequence
from typing import Any

from scheduler.jobwire import ERROR, EXIT, OUTPUT, TokenError, read_token

HELLO_TIMEOUT_S = 10.0  # a caller must send its request whole within this
MAX_REQUEST = 1 << 20
STOP_GRACE_S = 5.0


# ------------------------------------------------------------------------------ the server


async def _frame(writer: asyncio.StreamWriter, kind: bytes, data: bytes) -> None:
    writer.write(kind + struct.pack("!I", len(data)) + data)
    await writer.drain()


async def _pump(stream: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: bytes,
                lock: asyncio.Lock) -> None:
    while chunk := await stream.read(65536):
        async with lock:
            await _frame(writer, kind, chunk)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """The step's process group: SIGTERM, then SIGKILL after STOP_GRACE_S."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), wait)
            return
        except TimeoutError:
            continue


async def _serve_one(token: str, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    try:
        line = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT_S)
        request = json.loads(line[:MAX_REQUEST]) if line.endswith(b"\n") else {}
        given = request.get("token", "") if isinstance(request, dict) else ""
        if not isinstance(given, str) or not hmac.compare_digest(given, token):
            return  # not the job's: closed unanswered
        argv = request.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            await _frame(writer, ERROR, b"labq step: no command\n")
            await _frame(writer, EXIT, struct.pack("!i", 2))
            return
        cwd = request.get("cwd") if isinstance(request.get("cwd"), str) else None
        if cwd and not os.path.isdir(cwd):
            cwd = None  # not on this node: the job's directory
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)
        except OSError as exc:
            await _frame(writer, ERROR, f"labq step: {argv[0]}: {exc.strerror}\n".encode())
            await _frame(writer, EXIT, struct.pack("!i", 127))
            return
        assert proc.stdout is not None and proc.stderr is not None
        lock = asyncio.Lock()
        pumps: asyncio.Future[Any] = asyncio.gather(_pump(proc.stdout, writer, OUTPUT, lock),
                                                    _pump(proc.stderr, writer, ERROR, lock))
        gone: asyncio.Future[Any] = asyncio.ensure_future(reader.read())  # EOF: caller left
        done, _ = await asyncio.wait({pumps, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone in done and pumps not in done:
            await _stop(proc)
            pumps.cancel()
            return
        gone.cancel()
        code = await proc.wait()
        await _frame(writer, EXIT, struct.pack("!i", code if code >= 0 else 128 - code))
    except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
        return
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def serve(address: str, port: int, token: str, command: Sequence[str] = ()) -> int:
    """Serve steps until COMMAND exits (its status), or forever without one."""
    server = await asyncio.start_server(
        lambda r, w: _serve_one(token, r, w), address, port, reuse_address=True)
    async with server:
        if not command:
            await server.serve_forever()
            return 0
        proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.DEVNULL)
        return await proc.wait()


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "serve":
        command = argv[4:] if len(argv) > 3 and argv[3] == "--" else []
        try:
            return asyncio.run(serve(argv[1], int(argv[2]), read_token(), command))
        except (TokenError, OSError) as exc:
            print(f"labq: the job's step server on {argv[1]}:{argv[2]} cannot start: {exc}",
                  file=sys.stderr, flush=True)
            return 1
    print("usage: python -m agents.steps serve ADDRESS PORT [-- COMMAND...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
