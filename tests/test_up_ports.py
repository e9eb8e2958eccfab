"""`labq up`'s port choices: the metrics port and the agents' exporter ports never clash."""

from __future__ import annotations

import socket

import pytest

from scheduler.server.identity import _names, user_name
from scheduler.server.ports import PortError, choose_ports, free_port, port_free


def _free_run(count: int) -> int:
    """A port p with p .. p+count-1 free."""
    for _ in range(100):
        base = free_port()
        if all(port_free(base + i) for i in range(count)):
            return base
    raise AssertionError("no run of free ports")


def test_a_default_metrics_port_inside_the_exporter_range_moves() -> None:
    base = _free_run(3)
    port, exporters = choose_ports(None, base + 1, base, 3)
    assert exporters == [base, base + 1, base + 2]
    assert port not in exporters


def test_a_given_metrics_port_inside_the_exporter_range_is_refused() -> None:
    base = _free_run(2)
    with pytest.raises(PortError, match="include the metrics port"):
        choose_ports(base + 1, 9464, base, 2)


def test_an_exporter_port_in_use_is_refused() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        with pytest.raises(PortError, match="in use"):
            choose_ports(0, 9464, taken, 1)


def test_free_port_avoids_promised_ports() -> None:
    promised = [free_port() for _ in range(5)]
    assert all(free_port(avoid=promised) not in promised for _ in range(20))


def test_an_unknown_uid_is_not_cached() -> None:
    """A failed name lookup (maybe a passing LDAP error) is asked again next time."""
    uid = 2_000_000_123
    assert user_name(uid) == f"uid{uid}"
    assert uid not in _names
