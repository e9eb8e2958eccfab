"""An agent cut off from the store logs its outage in two lines, not a traceback per try
(issue 21, item 6): one when it starts, one when it ends."""

from __future__ import annotations

import logging

import pytest
import redis.exceptions as redis_errors

from scheduler.trouble import Trouble


def agent_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name in ("agents.agent", "scheduler.trouble")]


def fail(trouble: Trouble, exc: Exception) -> None:
    try:
        raise exc
    except Exception:
        trouble.failed()


def test_an_hour_long_outage_is_two_lines(caplog: pytest.LogCaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("scheduler.trouble.time.monotonic", lambda: clock[0])
    trouble = Trouble("heartbeat")
    with caplog.at_level(logging.INFO, logger="scheduler.trouble"):
        for i in range(1800):  # an hour of tries, one every 2 s
            refused = redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:6379.\n"
                                                   "Connection refused.")
            fail(trouble, refused if i % 2 else redis_errors.ConnectionError("closed"))
            clock[0] += 2.0
        trouble.ok()
    lines = agent_lines(caplog)
    assert [r.getMessage() for r in lines] == [
        "heartbeat failing: ConnectionError: closed; retrying (one line when it works again)",
        "heartbeat works again after 3600 s (1800 failed tries)"]
    assert not any(r.exc_info for r in lines)  # the store away is no fault of labq's
    trouble.ok()  # working on: nothing more is said
    assert len(agent_lines(caplog)) == 2


def test_a_new_kind_of_failure_is_said_once_and_a_fault_has_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    trouble = Trouble("running this node's jobs")
    with caplog.at_level(logging.INFO, logger="scheduler.trouble"):
        fail(trouble, redis_errors.TimeoutError("Timeout reading from socket"))
        for _ in range(50):
            fail(trouble, KeyError("gpus"))  # the store back, but something in labq is wrong
            fail(trouble, redis_errors.TimeoutError("Timeout reading from socket"))
        trouble.ok()
        fail(trouble, OSError(28, "No space left on device"))  # a second outage: its own lines
    lines = agent_lines(caplog)
    messages = [r.getMessage() for r in lines]
    assert len(messages) == 4, messages
    assert messages[0].startswith("running this node's jobs failing: TimeoutError: Timeout")
    assert "still failing after 0 s, now with KeyError: 'gpus'" in messages[1]
    assert messages[2] == "running this node's jobs works again after 0 s (101 failed tries)"
    assert "failing: OSError: [Errno 28] No space left on device" in messages[3]
    assert [bool(r.exc_info) for r in lines] == [False, True, False, False]
