"""Read the end of a job's output file, and follow it as it grows, in bounded memory."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from scheduler.model import TERMINAL_STATES

LOG_TAIL_BYTES = 1 << 20
CHUNK_BYTES = 1 << 16
ENDED_CHECK_S = 5.0  # `labq logs -f` asks the coordinator whether the job ended this often
TERMINAL = TERMINAL_STATES  # (the lifecycle is declared once, in scheduler.model)


def follow_file(path: str, tail_bytes: int, follow: bool, ended: Callable[[], bool],
                poll_s: float = 0.5, check_s: float = ENDED_CHECK_S) -> Iterator[bytes]:
    """Yield the last `tail_bytes` of `path` (0: all of it) in chunks of at most CHUNK_BYTES,
    then, with `follow`, what is appended until `ended()` says the job is over. Never holds
    more than one chunk: a job that printed gigabytes costs the reader no more memory.

    The file is polled every `poll_s` (a local read), the coordinator asked whether the job
    ended at most every `check_s`: a hundred students following their jobs cost the
    coordinator 20 requests a second, not 200, and never hold up its scheduling."""
    last_check = -float("inf")  # asked at once the first time the file has nothing new
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
            if time.monotonic() - last_check >= check_s:
                last_check = time.monotonic()
                if ended():
                    # The runner has closed the file: read what came after the last check.
                    while chunk := handle.read(CHUNK_BYTES):
                        yield chunk
                    return
            time.sleep(poll_s)
