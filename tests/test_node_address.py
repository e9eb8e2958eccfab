"""Where a node's peers reach it (agents.agent.node_address), and the job's Ray head refusing
a port that is already taken on its node (agents.rayjob)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from agents.agent import node_address
from agents.rayjob import port_taken

pytestmark = pytest.mark.unit


def test_the_address_on_the_route_to_the_store() -> None:
    assert node_address("redis://127.0.0.1:6379/0") == "127.0.0.1"
    assert node_address("unix:///run/valkey.sock") == "127.0.0.1"
    # an override (LABQ_NODE_ADDRESS) wins over the route
    assert node_address("redis://127.0.0.1:6379/0", "10.0.0.7") == "10.0.0.7"
    # a store name that does not resolve: no address (the hostname is used instead)
    assert node_address("redis://no-such-host.invalid:6379/0") == ""


def test_a_taken_port_is_seen_and_the_head_refuses_it() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert port_taken("127.0.0.1", port)
        done = subprocess.run(
            [sys.executable, "-m", "agents.rayjob", "head", "127.0.0.1", str(port), "1", "1",
             "--", "true"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"labq: port {port} on 127.0.0.1 is taken: the job's Ray "
                                   "head cannot start there (submit the job again)")
    assert not port_taken("127.0.0.1", port)
