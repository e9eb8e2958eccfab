"""Read the end of a job's output file, and follow it as it grows, in bounded memory."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from scheduler.model import TERMINAL_STATES

LOG_TAIL_BYTES = 1 << 20
CHUNK_BYTES = 1 << 16
TERMINAL = TERMINAL_STATES  # (the lifecycle is declared once, in scheduler.model)


def follow_file(path: str, tail_bytes: int, follow: bool, ended: Callable[[], bool],
                poll_s: float = 0.5) -> Iterator[bytes]:
    """Yield the last `tail_bytes` of `path` (0: all of it) in chunks of at most CHUNK_BYTES,
    then, with `follow`, what is appended until `ended()` says the job is over. Never holds
    more than one chunk: a job that printed gigabytes costs the reader no more memory."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if tail_bytes and size > tail_bytes:
            handle.seek(size - tail_bytes)
        while True:
            chunk = handle.read(CHUNK_BYTES)
            if chunk:
                yield chunk
                continue
            if not follow:
                return
            if ended():
                # The runner has closed the file: read what came after the last check.
                while chunk := handle.read(CHUNK_BYTES):
                    yield chunk
                return
            time.sleep(poll_s)
