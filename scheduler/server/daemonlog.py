"""Daemon logs that stay bounded whatever callers do: each log statement may speak a few times a
minute, then says how many like it it kept back; and a log file the daemon writes to (its
stderr, as `labq up` sets it up: $LABQ_HOME/logs/NAME.log) is rotated by size.

Under systemd stderr is the journal, which rotates on its own; nothing is rotated then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
BURST = 100  # messages one log statement may write per window...
WINDOW_S = 60.0  # ...of this long; the rest are counted and the count said later
MAX_MESSAGE_CHARS = 2000  # a longer message (a huge input echoed) is cut
MAX_LOG_BYTES = 16 << 20  # a log file is rotated past this size...
LOG_BACKUPS = 3  # ...into NAME.log.1 .. NAME.log.3 (at most 64 MiB in all)


@dataclass
class _Window:
    start: float
    count: int = 0
    suppressed: int = 0


class RateLimit(logging.Filter):
    """At most `burst` records per log statement (logger, level, file and line) per window;
    the first kept after a quiet spell says how many were dropped."""

    def __init__(self, burst: int = BURST, window_s: float = WINDOW_S) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self._windows: dict[tuple[str, int, str, int], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.pathname, record.lineno)
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now - window.start >= self.window_s:
            dropped = window.suppressed if window is not None else 0
            self._windows[key] = _Window(now, 1)
            _reword(record, f" ({dropped:,} more like this were suppressed)" if dropped else "")
            return True
        window.count += 1
        if window.count < self.burst:
            _reword(record, "")
            return True
        if window.count == self.burst:
            _reword(record, f" (more like this are suppressed for up to {self.window_s:g} s)")
            return True
        window.suppressed += 1
        return False


def _reword(record: logging.LogRecord, note: str) -> None:
    """The record's message, formatted now, cut to MAX_MESSAGE_CHARS, with `note` after it."""
    try:
        text = record.getMessage()
    except Exception:  # a bad format string: leave it to the handler to report
        return
    if len(text) > MAX_MESSAGE_CHARS:
        text = f"{text[:MAX_MESSAGE_CHARS]}... ({len(text):,} characters)"
    record.msg, record.args = text + note, None


def _stderr_file() -> Path | None:
    """The path of the regular file stderr writes to, or None (a terminal, a pipe, the
    journal, a file deleted or renamed meanwhile)."""
    try:
        info = os.fstat(2)
        if not stat.S_ISREG(info.st_mode):
            return None
        path = Path(os.readlink("/proc/self/fd/2"))
        same = path.stat()
    except OSError:
        return None
    if not path.is_absolute() or (same.st_dev, same.st_ino) != (info.st_dev, info.st_ino):
        return None
    return path


class RotatingStderr(logging.StreamHandler):
    """Logs to stderr; when stderr is the regular file `path` and it grows past `max_bytes`,
    the file becomes path.1 (older ones shift up to path.`backups`) and stderr, with stdout
    when it shares the file, continues in a fresh path."""

    def __init__(self, path: Path, max_bytes: int = MAX_LOG_BYTES,
                 backups: int = LOG_BACKUPS) -> None:
        super().__init__(sys.stderr)
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        info = os.fstat(2)
        self._fds = [2]
        with contextlib.suppress(OSError):
            out = os.fstat(1)
            if (out.st_dev, out.st_ino) == (info.st_dev, info.st_ino):
                self._fds.append(1)

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        try:
            if os.fstat(2).st_size > self.max_bytes:
                self.rotate()
        except OSError as exc:
            self.max_bytes = sys.maxsize  # not again: rotation cannot work here
            sys.stderr.write(f"log rotation of {self.path} stopped: {exc}\n")

    def rotate(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for n in range(self.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
        os.replace(self.path, f"{self.path}.1")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            for target in self._fds:
                os.dup2(fd, target)
        finally:
            os.close(fd)


def setup_logging(level: str = "INFO", max_bytes: int = MAX_LOG_BYTES,
                  backups: int = LOG_BACKUPS, burst: int = BURST) -> None:
    """Log to stderr, rate-limited per log statement; rotated when stderr is a file."""
    path = _stderr_file()
    handler: logging.Handler = (RotatingStderr(path, max_bytes, backups) if path is not None
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RateLimit(burst))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
