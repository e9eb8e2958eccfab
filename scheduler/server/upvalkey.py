"""The Valkey server `labq up` embeds: its configuration (a Unix socket only, AOF on, a memory
ceiling at which writes are refused and nothing is evicted) and a login check."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from scheduler.config import Settings
from scheduler.server import homecheck

HASH_VALUE_BYTES = 1024  # the longest value a compact hash holds (Valkey's default: 64)


def valkey_config(folder: Path, unix_socket: Path, max_memory: int) -> str:
    """The embedded Valkey's configuration: a Unix socket only, AOF on and fsynced before each
    answer (`always`: a submit waits for its fsync, WAITAOF, and `everysec` would make that
    wait ~100 ms), and a memory ceiling at which writes are refused (noeviction: no job or usage
    is ever dropped to make room). A job's record stays a compact hash (listpack) with values
    up to HASH_VALUE_BYTES: a waiting job's reasons (~150 bytes) would otherwise turn its
    record into a full hash table, 2.6 KB instead of ~1 KB a job."""
    return "\n".join([
        "port 0", f"unixsocket {quoted(unix_socket)}", "unixsocketperm 700",
        f"dir {quoted(folder)}", f"aclfile {quoted(folder / 'users.acl')}",
        "appendonly yes", "appendfsync always", 'save ""', "protected-mode yes",
        "daemonize no", f"maxmemory {max_memory}", "maxmemory-policy noeviction",
        f"hash-max-listpack-value {HASH_VALUE_BYTES}", ""])


def store_max_memory(settings: Settings) -> int:
    """`store_max_memory_bytes`, or (0) a quarter of the memory this machine gives labq up:
    its RAM, or its cgroup's memory.max where that is lower (a container)."""
    if settings.store_max_memory_bytes:
        return settings.store_max_memory_bytes
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in _cgroup_memory_limits():
        total = min(total, limit)
    return max(total // 4, 64 << 20)


def _cgroup_memory_limits() -> list[int]:
    """The memory limits of this process's cgroup that can be read: v2's memory.max (pure or
    hybrid mount), v1's memory.limit_in_bytes."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, group = line.split(":", 2)
            group = group.lstrip("/")
            if controllers == "":
                files = [Path("/sys/fs/cgroup", group, "memory.max"),
                         Path("/sys/fs/cgroup/unified", group, "memory.max")]
            elif "memory" in controllers.split(","):
                files = [Path("/sys/fs/cgroup/memory", group, "memory.limit_in_bytes")]
            else:
                continue
            for file in files:
                with contextlib.suppress(OSError, ValueError):
                    found.append(int(file.read_text().strip()))  # ("max": no limit)
    return found


def ping(path: Path, username: str, password_file: Path) -> bool:
    import redis

    client = redis.Redis(unix_socket_path=str(path), username=username,
                         password=homecheck.read_private(password_file), socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def quoted(path: Path) -> str:
    """A path as a quoted string of the Valkey config file."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'
