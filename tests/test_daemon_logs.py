"""Daemon logs stay bounded (issue 18): each log statement speaks at most a burst per window and
then says how many it kept back; a message is cut to a bounded length; a log file the daemon's
stderr writes to is rotated by size (real processes writing real files)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
from pathlib import Path

from scheduler.server.daemonlog import MAX_MESSAGE_CHARS, RateLimit


def test_one_statement_speaks_a_burst_per_window_then_says_what_it_kept_back() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RateLimit(burst=3, window_s=0.5))
    logger = logging.getLogger("test.ratelimit")
    logger.addHandler(handler)
    logger.propagate = False

    def refused(i: int) -> None:
        logger.warning("refused connection %d", i)  # one statement, called many times

    try:
        for i in range(1000):
            refused(i)
        logger.warning("another statement")
        time.sleep(0.6)
        refused(1000)
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines == [
        "refused connection 0", "refused connection 1",
        "refused connection 2 (more like this are suppressed for up to 0.5 s)",
        "another statement",
        "refused connection 1000 (997 more like this were suppressed)"]


def test_a_huge_message_is_cut() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RateLimit())
    logger = logging.getLogger("test.huge")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("bad input %r", "x" * 1_000_000)
    finally:
        logger.removeHandler(handler)
    line = out.getvalue()
    assert line.count("\n") == 1 and len(line) < MAX_MESSAGE_CHARS + 100
    assert "1,000,012 characters" in line


DAEMON = r'''
import logging, sys
from scheduler.server.daemonlog import setup_logging
setup_logging("INFO", max_bytes=20_000, backups=2, burst=10**9)
log = logging.getLogger("daemon")
for i in range(3000):
    log.info("line %05d %s", i, "y" * 60)
print("printed after the last line", flush=True)
for i in range(20):
    log.warning("flood %d", i)
'''


def test_a_log_file_on_stderr_is_rotated_by_size(tmp_path: Path) -> None:
    log_path = tmp_path / "coordinator.log"
    with open(log_path, "ab") as log:  # as `labq up` starts a daemon
        subprocess.run([sys.executable, "-c", DAEMON], stdout=log, stderr=subprocess.STDOUT,
                       check=True, timeout=60, cwd=Path(__file__).parent.parent)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["coordinator.log", "coordinator.log.1", "coordinator.log.2"]
    for name in names:
        assert (tmp_path / name).stat().st_size <= 20_000 + 200
    current = log_path.read_text()
    assert "printed after the last line" in current  # stdout follows stderr into the new file
    assert "flood 19" in current.splitlines()[-1]
    older = (tmp_path / "coordinator.log.1").read_text().splitlines()
    numbers = [int(line.split("line ")[1][:5]) for line in older + current.splitlines()
               if "line " in line]
    assert numbers == list(range(numbers[0], 3000))  # nothing lost across the rotation
