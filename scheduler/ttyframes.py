"""The frames an interactive job (`labq run`) and its caller exchange over one TCP connection
(agents.attach on the node, scheduler.cli.attach at the terminal): 1 byte kind, 4 bytes
length, data. Standard library only."""

from __future__ import annotations

import struct

INPUT, EOF, WINSIZE = b"I", b"C", b"W"  # caller -> job: keys typed, end of input, rows/cols
OUTPUT, EXIT = b"O", b"X"  # job -> caller: what the terminal shows, the command's status
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
