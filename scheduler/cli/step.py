"""`labq step` (like `srun` inside an allocation): from the head node of a job across nodes,
run a command on the job's nodes, each inside its part of the job (its cgroup, its GPUs, its
LABQ_NODE_RANK), through the step servers the other nodes run (agents.steps).

    labq step [--node NAME|RANK ...] -- COMMAND...

runs COMMAND on the chosen nodes (all of the job's nodes by default, the head too), at once,
in this directory; their output comes back as it is written, and `labq step` exits with the
first non-zero status (0 if all succeed). Stdin is not forwarded. A step proves it belongs to
the job with the job's token (RAY_AUTH_TOKEN_PATH), which only the job's user can read.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import click

from scheduler.cli.errors import LabqCommand
from scheduler.jobwire import EXIT, HEADER, OUTPUT, TokenError, read_token


class StepError(RuntimeError):
    """A step cannot be run (one line)."""


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
            kind, size = HEADER.unpack(await reader.readexactly(HEADER.size))
            data = await reader.readexactly(size)
            if kind == EXIT:
                return int(struct.unpack("!i", data)[0])
            out = sys.stdout.buffer if kind == OUTPUT else sys.stderr.buffer
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
    try:
        token = read_token(env.get("RAY_AUTH_TOKEN_PATH"))
    except TokenError as exc:
        raise StepError(str(exc)) from None
    here = int(env.get("LABQ_NODE_RANK", "0"))
    cwd = os.getcwd()
    codes = await asyncio.gather(*(
        _local(argv) if t.rank == here else _remote(t, token, argv, cwd) for t in where))
    return next((c for c in codes if c != 0), 0)




@click.command(cls=LabqCommand, context_settings={"allow_interspersed_args": False})
@click.option("--node", "-w", "nodes", multiple=True, metavar="NAME|RANK",
              help="run on this node of the job only (repeatable; default: every node)")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED,
                metavar="-- COMMAND...")
def step(nodes: tuple[str, ...], command: tuple[str, ...]) -> None:
    """Inside a job across nodes: run COMMAND on its nodes (like srun in an allocation).

    \b
    labq step -- hostname                  on every node of the job, the head too
    labq step --node 1 -- python serve.py  on the node of rank 1 only
    labq step -- sh -c 'torchrun --nnodes=$LABQ_NUM_NODES --node_rank=$LABQ_NODE_RANK \\
        --master_addr=$LABQ_HEAD_NODE --master_port=29500 train.py'
    """
    try:
        code = asyncio.run(run_steps(nodes, command))
    except StepError as exc:
        click.echo(f"labq step: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)
