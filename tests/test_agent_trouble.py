"""An agent cut off from the store logs its trouble in a few lines, not a traceback per try."""

from __future__ import annotations

import logging

import pytest

from agents.agent import Trouble


def test_a_long_outage_is_a_few_lines(caplog: pytest.LogCaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("agents.agent.time.monotonic", lambda: clock[0])
    trouble = Trouble("heartbeat")
    with caplog.at_level(logging.WARNING, logger="agents.agent"):
        for _ in range(1800):  # an hour of tries, one every 2 s
            try:
                raise ConnectionError("store unreachable")
            except ConnectionError:
                trouble.failed()
            clock[0] += 2.0
        trouble.ok()
    lines = [r for r in caplog.records if r.name == "agents.agent"]
    assert len(lines) <= 62  # the first in full, one a minute, the recovery
    assert lines[0].exc_info is not None and "heartbeat failed" in lines[0].getMessage()
    assert sum(1 for r in lines if r.exc_info) == 1
    assert "works again after 3600 s (1800 failed tries)" in lines[-1].getMessage()
    trouble.ok()  # working on: nothing more is said
    assert len([r for r in caplog.records if r.name == "agents.agent"]) == len(lines)
