"""What a job's own processes say to each other across hosts, over one TCP connection each:
an interactive job and its caller (`labq run`: agents.attach on the node, scheduler.cli.attach
at the terminal), and a job's steps (`labq step`: agents.steps on the other nodes,
scheduler.cli.step on the head). Frames of 1 byte kind, 4 bytes length, data; the job's token
proves a caller belongs to the job. Standard library only."""

from __future__ import annotations

import os
import struct

INPUT, EOF, WINSIZE = b"I", b"C", b"W"  # caller -> job: keys typed, end of input, rows/cols
OUTPUT, ERROR, EXIT = b"O", b"E", b"X"  # -> caller: output, a step's stderr, exit status
HEADER = struct.Struct("!cI")
TOKEN_ENV = "LABQRUN_TOKEN"  # the job's one-time token (LABQ_* never reach a job)


def frame(kind: bytes, data: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(data)) + data


class Frames:
    """Whole frames out of a byte stream read piecemeal."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buffer += data
        out = []
        while len(self.buffer) >= HEADER.size:
            kind, size = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < HEADER.size + size:
                break
            out.append((kind, self.buffer[HEADER.size:HEADER.size + size]))
            self.buffer = self.buffer[HEADER.size + size:]
        return out


class TokenError(RuntimeError):
    """The job's token cannot be read (one line)."""


def read_token(path: str | None = None) -> str:
    """A job's token across nodes: the file its runner wrote (`RAY_AUTH_TOKEN_PATH`: 0600,
    the user's, the same on each of the job's nodes)."""
    path = path or os.environ.get("RAY_AUTH_TOKEN_PATH", "")
    if not path:
        raise TokenError("not inside a labq job across nodes (no RAY_AUTH_TOKEN_PATH)")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise TokenError(f"cannot read the job's token {path}: {exc.strerror}") from None
