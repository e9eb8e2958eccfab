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

    python -m agents.steps run [--node NAME|RANK ...] -- COMMAND...   (the head: `labq step`)

runs COMMAND on the chosen nodes (all of the job's nodes by default, the head too), at once,
and exits with the first non-zero status (0 if all succeed). Stdin is not forwarded.
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
from dataclasses import dataclass
from typing import Any

HELLO_TIMEOUT_S = 10.0  # a caller must send its request whole within this
MAX_REQUEST = 1 << 20
STOP_GRACE_S = 5.0
OUT, ERR, EXIT = b"O", b"E", b"X"


class StepError(RuntimeError):
    """A step cannot be run (one line, for the caller)."""


def read_token(path: str | None = None) -> str:
    """The job's token: the file its runner wrote (`RAY_AUTH_TOKEN_PATH`)."""
    path = path or os.environ.get("RAY_AUTH_TOKEN_PATH", "")
    if not path:
        raise StepError("not inside a labq job across nodes (no RAY_AUTH_TOKEN_PATH)")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise StepError(f"cannot read the job's token {path}: {exc.strerror}") from None


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
            await _frame(writer, ERR, b"labq step: no command\n")
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
            await _frame(writer, ERR, f"labq step: {argv[0]}: {exc.strerror}\n".encode())
            await _frame(writer, EXIT, struct.pack("!i", 127))
            return
        assert proc.stdout is not None and proc.stderr is not None
        lock = asyncio.Lock()
        pumps: asyncio.Future[Any] = asyncio.gather(_pump(proc.stdout, writer, OUT, lock),
                                                    _pump(proc.stderr, writer, ERR, lock))
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


# ------------------------------------------------------------------------------ the caller


@dataclass(frozen=True)
class Target:
    rank: int
    name: str  # the node's labq name
    address: str  # where its step server listens
    port: int


def targets(env: dict[str, str], chosen: Sequence[str] = ()) -> list[Target]:
    """The job's nodes from its environment (LABQ_NODES, LABQ_NODE_NAMES, LABQ_STEP_PORT),
    all of them or those `chosen` (names or ranks)."""
    addresses = [a for a in env.get("LABQ_NODES", "").split(",") if a]
    names = [n for n in env.get("LABQ_NODE_NAMES", "").split(",") if n]
    if len(addresses) < 2 or len(names) != len(addresses) or not env.get("LABQ_STEP_PORT"):
        raise StepError("not inside a labq job across nodes (no LABQ_NODES/LABQ_STEP_PORT)")
    base = int(env["LABQ_STEP_PORT"])
    every = [Target(rank, name, addr, base + rank)
             for rank, (name, addr) in enumerate(zip(names, addresses, strict=True))]
    if not chosen:
        return every
    picked = []
    for want in chosen:
        match = [t for t in every if want in (t.name, str(t.rank))]
        if not match:
            raise StepError(f"the job has no node {want!r} (its nodes: {', '.join(names)})")
        picked += [t for t in match if t not in picked]
    return picked


async def _remote(target: Target, token: str, argv: Sequence[str], cwd: str) -> int:
    try:
        reader, writer = await asyncio.open_connection(target.address, target.port)
    except OSError as exc:
        print(f"labq step: cannot reach node {target.name} at {target.address}:{target.port}:"
              f" {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 255
    try:
        request = {"token": token, "argv": list(argv), "cwd": cwd}
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        while True:
            head = await reader.readexactly(5)
            data = await reader.readexactly(struct.unpack("!I", head[1:])[0])
            if head[:1] == EXIT:
                return int(struct.unpack("!i", data)[0])
            out = sys.stdout.buffer if head[:1] == OUT else sys.stderr.buffer
            out.write(data)
            out.flush()
    except (asyncio.IncompleteReadError, OSError):
        print(f"labq step: node {target.name} closed the connection (not this job's token, "
              "or its part of the job ended)", file=sys.stderr, flush=True)
        return 255
    finally:
        writer.close()


async def _local(argv: Sequence[str]) -> int:
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
    except OSError as exc:
        print(f"labq step: {argv[0]}: {exc.strerror}", file=sys.stderr, flush=True)
        return 127
    return await proc.wait()


async def run_steps(chosen: Sequence[str], argv: Sequence[str],
                    env: dict[str, str] | None = None) -> int:
    """Run `argv` on the chosen nodes of the job at once; the first non-zero status."""
    env = dict(os.environ) if env is None else env
    where = targets(env, chosen)
    token = read_token(env.get("RAY_AUTH_TOKEN_PATH"))
    here = int(env.get("LABQ_NODE_RANK", "0"))
    cwd = os.getcwd()
    codes = await asyncio.gather(*(
        _local(argv) if t.rank == here else _remote(t, token, argv, cwd) for t in where))
    return next((c for c in codes if c != 0), 0)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "serve":
        command = argv[4:] if len(argv) > 3 and argv[3] == "--" else []
        try:
            return asyncio.run(serve(argv[1], int(argv[2]), read_token(), command))
        except (StepError, OSError) as exc:
            print(f"labq: the job's step server on {argv[1]}:{argv[2]} cannot start: {exc}",
                  file=sys.stderr, flush=True)
            return 1
    if argv and argv[0] == "run" and "--" in argv:
        split = argv.index("--")
        options, command = argv[1:split], argv[split + 1:]
        chosen = [options[i + 1] for i, o in enumerate(options[:-1]) if o == "--node"]
        if not command or len(options) != 2 * len(chosen):
            print("usage: labq step [--node NAME|RANK ...] -- COMMAND...", file=sys.stderr)
            return 2
        try:
            return asyncio.run(run_steps(chosen, command))
        except StepError as exc:
            print(f"labq step: {exc}", file=sys.stderr)
            return 1
    print("usage: steps serve ADDRESS PORT [-- COMMAND...] | steps run [--node N ...] -- CMD",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
