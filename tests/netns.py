"""Hosts on one machine for multi-host tests: network namespaces joined by veth pairs to a
bridge in the first ("head") host, each with its own address in a private /24.

Only the network is separate (processes enter a host with `nsenter --net`): the filesystem,
the users and the process table are the machine's. Names carry a random suffix and the /24 is
picked at random, so two test runs on one machine never meet; `destroy()` removes every
namespace (and with it its veths and bridge), and is safe to call twice or after a failed
`create()`.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
from pathlib import Path


class NetnsError(RuntimeError):
    """The namespaces cannot be made here."""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def netns_unavailable() -> str:
    """Why network namespaces cannot be made here ("" if they can): not root, no `ip` or
    `nsenter`, or no CAP_NET_ADMIN / CAP_SYS_ADMIN (an unprivileged container)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter"):
        if not shutil.which(tool):
            return f"no {tool} on this machine"
    probe = f"lqprobe-{secrets.token_hex(4)}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"ip netns add failed (no CAP_NET_ADMIN/CAP_SYS_ADMIN?): {made.stderr.strip()}"
    try:
        veth = _ip("-n", probe, "link", "add", "lqa", "type", "veth", "peer", "name", "lqb")
        if veth.returncode != 0:
            return f"cannot make a veth pair: {veth.stderr.strip()}"
    finally:
        _ip("netns", "del", probe)
    return ""


class Hosts:
    """`names[0]` is the head: it holds the bridge (and the address .1); every other host is
    joined to it by a veth pair (`eth0` on the host's side) and gets .2, .3, ..."""

    def __init__(self, names: list[str]) -> None:
        self.suffix = secrets.token_hex(3)
        self.names = list(names)
        self.head = names[0]
        self.ns = {name: f"lq{self.suffix}-{name}" for name in names}
        # 10.A.B.0/24 with A in 160..239: away from the usual 10.0/16, 10.1/16 and 10.96/12
        self.net = f"10.{random.randint(160, 239)}.{random.randint(1, 254)}"
        self.addr = {name: f"{self.net}.{i + 1}" for i, name in enumerate(names)}
        self.made: list[str] = []

    def create(self) -> Hosts:
        try:
            for name in self.names:
                self._run("netns", "add", self.ns[name])
                self.made.append(name)
                self._run("-n", self.ns[name], "link", "set", "lo", "up")
            head = self.ns[self.head]
            self._run("-n", head, "link", "add", "br0", "type", "bridge")
            self._run("-n", head, "addr", "add", f"{self.addr[self.head]}/24", "dev", "br0")
            self._run("-n", head, "link", "set", "br0", "up")
            for name in self.names[1:]:
                port = f"v-{name}"[:15]
                self._run("-n", head, "link", "add", port, "type", "veth", "peer", "name",
                          "eth0", "netns", self.ns[name])
                self._run("-n", head, "link", "set", port, "master", "br0", "up")
                self._run("-n", self.ns[name], "addr", "add", f"{self.addr[name]}/24", "dev",
                          "eth0")
                self._run("-n", self.ns[name], "link", "set", "eth0", "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def _run(self, *args: str) -> None:
        done = _ip(*args)
        if done.returncode != 0:
            raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def enter(self, name: str) -> list[str]:
        """The argv prefix that runs a command in host `name`'s network (and nothing else)."""
        return ["nsenter", f"--net={Path('/run/netns') / self.ns[name]}", "--"]

    def link(self, name: str, up: bool) -> None:
        """Cut (or restore) host `name`'s only link to the others."""
        self._run("-n", self.ns[name], "link", "set", "eth0", "up" if up else "down")

    def partition(self, name: str, cut: bool) -> None:
        """Drop host `name`'s traffic silently (or stop dropping it): its link stays up, but
        its port on the head's bridge leaves the bridge, so nothing it sends arrives and
        nothing comes back; open TCP connections stall instead of failing (a switch that
        stopped forwarding, not a pulled cable)."""
        port = f"v-{name}"[:15]
        if cut:
            self._run("-n", self.ns[self.head], "link", "set", port, "nomaster")
        else:
            self._run("-n", self.ns[self.head], "link", "set", port, "master", "br0")

    def destroy(self) -> None:
        """Delete every namespace made (its veths and the bridge go with it)."""
        for name in reversed(self.made):
            _ip("netns", "del", self.ns[name])
        self.made = []

    def leftovers(self) -> list[str]:
        """This run's namespaces still present (for the test's own check)."""
        listed = _ip("netns", "list").stdout.split()
        return [ns for ns in self.ns.values() if ns in listed]
