"""`labq up`'s port choices: the metrics port and the agents' exporter ports never clash."""

from __future__ import annotations

import socket
import subprocess

import pytest

from scheduler.server.identity import _names, user_name
from scheduler.server.ports import PortError, choose_ports, free_port, held_by, port_free
from tests.security_server import can_switch_users, ensure_user


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


def test_a_taken_metrics_port_never_stops_labq_up_from_starting() -> None:
    """Given on the command line, it is kept (the coordinator binds it once it is free): a user
    holding it cannot keep the stack down; configured, a free one is used instead."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        assert choose_ports(taken, 9464, None, 1) == (taken, [])
        port, _ = choose_ports(None, taken, None, 1)
        assert port != taken and port_free(port)


@pytest.mark.skipif(not can_switch_users(), reason="needs root and useradd")
def test_who_holds_a_port_is_named() -> None:
    uid = ensure_user("labq-sec-eve")
    code = ("import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
            "print(s.getsockname()[1], flush=True); sys.stdin.read()")
    holder = subprocess.Popen(["/usr/bin/python3", "-c", code], user=uid, cwd="/",
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        assert held_by(port) == f" by labq-sec-eve (uid {uid})"
    finally:
        holder.kill()
        holder.wait()
    assert held_by(free_port()) == ""
