"""Who is calling: the peer's uid on the Unix socket, never a name the client claims."""

from __future__ import annotations

import os
import pwd
import socket
import struct
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from scheduler.config import Settings

# A uid's name is looked up again after this long: a renamed account shows within a minute,
# and a stream of requests does not read /etc/passwd (or ask NSS/LDAP) once per request.
NAME_TTL_S = 60.0


@dataclass(frozen=True)
class Caller:
    user: str
    uid: int
    is_admin: bool


_K = TypeVar("_K")
_V = TypeVar("_V")
_names: dict[int, tuple[float, str]] = {}
_uids: dict[str, tuple[float, int]] = {}
# The peer of a connection never changes: ask the kernel once per connection, not per request.
_peers: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def peer_uid(sock: Any) -> int:
    """uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def connection_uid(transport: Any) -> int | None:
    """The peer uid of an asyncio transport's Unix socket, remembered for the connection;
    None when it is not a Unix socket (a TCP peer has no uid to trust)."""
    try:
        return _peers[transport]
    except KeyError:
        pass
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    uid = _peers[transport] = peer_uid(sock)
    return uid


def remember_peer(transport: Any, uid: int) -> None:
    """Record the peer uid read when the connection was accepted (the front door asks the
    kernel once, before any byte of HTTP is read)."""
    _peers[transport] = uid


class UnknownUser(LookupError):
    """A uid with no user name here: refused, never given an identity of its own."""


def known_user_name(uid: int) -> str | None:
    """The uid's user name, or None when it cannot be resolved now (not cached: a passing
    NSS/LDAP failure is asked again next time)."""
    return _looked_up(_names, uid, lambda u: pwd.getpwuid(u).pw_name)


def known_uid(name: str) -> int | None:
    """The user's uid, or None when there is no such user now (not cached: a user added is
    found at once; a known one is asked again after NAME_TTL_S)."""
    return _looked_up(_uids, name, lambda n: pwd.getpwnam(n).pw_uid)


def _looked_up(table: dict[_K, tuple[float, _V]], key: _K,
               lookup: Callable[[_K], _V]) -> _V | None:
    """`lookup(key)` as last answered within NAME_TTL_S, else asked again (KeyError: None,
    and nothing kept)."""
    now = time.monotonic()
    known = table.get(key)
    if known is not None and now - known[0] < NAME_TTL_S:
        return known[1]
    try:
        value = lookup(key)
    except KeyError:
        return None
    table[key] = (now, value)
    return value


def user_name(uid: int) -> str:
    """The uid's name, or `uid<N>` for display when it has none."""
    return known_user_name(uid) or f"uid{uid}"


def caller_for_uid(uid: int, settings: Settings) -> Caller:
    """root, the uid the coordinator runs as, and configured admins may act for others.

    A uid whose name cannot be resolved is refused (`UnknownUser`): charged under a made-up
    name it would be a second identity of its user, with fresh fair share and no limits."""
    name = known_user_name(uid)
    if name is None:
        raise UnknownUser(f"uid {uid} has no user name on the coordinator's host (getpwuid "
                          "failed): ask an admin to make the account known there (passwd, "
                          "LDAP or sssd), then try again")
    admin = uid == 0 or uid == os.getuid() or name in settings.admins
    return Caller(name, uid, admin)
