"""`labq up`'s TCP ports: the coordinator's metrics port and the agents' exporter ports, all
free and distinct; and who holds a port that is not."""

from __future__ import annotations

import pwd
import socket
from collections.abc import Sequence


class PortError(RuntimeError):
    """A port asked for on the command line cannot be used."""


def free_port(avoid: Sequence[int] = ()) -> int:
    """A port free now, from the kernel's ephemeral range, not one of `avoid` (ports promised
    to processes that have not bound them yet, e.g. the agents' exporters)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def choose_ports(metrics_port: int | None, configured: int, exporter_port: int | None,
                 agents: int) -> tuple[int, list[int]]:
    """The coordinator's metrics port and the agents' exporter ports, distinct. A metrics port
    given on the command line is kept as given even when someone holds it now (the coordinator
    binds it once it is free: a squatted port must not keep the stack from starting); the
    configured one is replaced by a free one when taken."""
    port = metrics_port if metrics_port is not None else configured
    if port == 0 or (not metrics_port and not port_free(port)):
        port = free_port()
    exporter_ports = _exporter_ports(exporter_port, agents)
    if port in exporter_ports:
        if metrics_port:
            raise PortError(f"--exporter-port {exporter_port}: the agents' ports "
                            f"{exporter_ports[0]}-{exporter_ports[-1]} include the metrics port "
                            f"{port}; pick another")
        port = free_port(avoid=exporter_ports)
    return port, exporter_ports


def _exporter_ports(base: int | None, count: int) -> list[int]:
    """Ports of the agents' GPU exporters: `base`, `base + 1`, ... (one per node), all free."""
    if base is None:
        return []
    ports = list(range(base, base + count))
    if ports[-1] > 65535:
        raise PortError(f"--exporter-port {base}: {count} agents need ports up to {ports[-1]}, "
                        "past 65535; pick a lower port")
    taken = [p for p in ports if not port_free(p)]
    if taken:
        raise PortError(f"--exporter-port {base}: port(s) {', '.join(map(str, taken))} in use; "
                        f"the agents need {count} consecutive free ports from it")
    return ports


def listener_uids(port: int) -> set[int]:
    """The uids of the sockets listening on TCP `port` (any address), from /proc/net."""
    uids = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
            if len(fields) > 7 and fields[3] == "0A" and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                uids.add(int(fields[7]))
    return uids


def held_by(port: int) -> str:
    """`" by eve (uid 1001)"`: who listens on `port`, for a message; "" when unknown."""
    names = []
    for uid in sorted(listener_uids(port)):
        try:
            names.append(f"{pwd.getpwuid(uid).pw_name} (uid {uid})")
        except KeyError:
            names.append(f"uid {uid}")
    return f" by {', '.join(names)}" if names else ""
