"""`labq logs -f` follows a job's output file locally and asks the coordinator whether the
job ended only every few seconds, so many followers never load the scheduler's process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from scheduler.cli.logtail import follow_file


def test_following_reads_what_is_appended_and_asks_seldom_whether_the_job_ended(
        tmp_path: Path) -> None:
    out = tmp_path / "labq-7.out"
    out.write_bytes(b"epoch 0\n")
    done = threading.Event()
    asked: list[float] = []

    def writer() -> None:
        with out.open("ab") as handle:
            for epoch in range(1, 6):
                time.sleep(0.1)
                handle.write(f"epoch {epoch}\n".encode())
                handle.flush()
        done.set()

    def ended() -> bool:
        asked.append(time.monotonic())
        return done.is_set()

    thread = threading.Thread(target=writer)
    began = time.monotonic()
    thread.start()
    text = b"".join(follow_file(str(out), 0, True, ended, poll_s=0.02, check_s=0.4))
    thread.join()
    assert text == b"".join(f"epoch {i}\n".encode() for i in range(6))
    # asked at once, then at most once per check_s (a slow machine asks less, never more)
    assert len(asked) <= 2 + (time.monotonic() - began) / 0.4
    assert all(b - a >= 0.4 for a, b in zip(asked, asked[1:], strict=False))


def test_a_job_that_already_ended_is_read_to_its_end_at_once(tmp_path: Path) -> None:
    out = tmp_path / "labq-8.out"
    out.write_bytes(b"x" * 100_000)
    began = time.monotonic()
    chunks = list(follow_file(str(out), 0, True, lambda: True, check_s=60.0))
    assert b"".join(chunks) == b"x" * 100_000
    assert time.monotonic() - began < 30  # not a wait for the next check
