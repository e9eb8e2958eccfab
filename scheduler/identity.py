"""Who is calling: the peer's uid on the Unix socket, never a name the client claims."""

from __future__ import annotations

import os
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Any

from scheduler.config import Settings


@dataclass(frozen=True)
class Caller:
    user: str
    uid: int
    is_admin: bool


def peer_uid(sock: Any) -> int:
    """uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def caller_for_uid(uid: int, settings: Settings) -> Caller:
    """root, the uid the coordinator runs as, and configured admins may act for others."""
    name = user_name(uid)
    admin = uid == 0 or uid == os.getuid() or name in settings.admins
    return Caller(name, uid, admin)
