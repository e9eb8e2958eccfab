"""The API's front door: who may hold a connection, and for how long.

Connections are accepted here, not by asyncio's server: the peer uid is read (SO_PEERCRED)
the moment a connection is accepted, and one over its uid's cap (`max_connections_per_uid`) or
over the process's cap (`max_connections`, kept below the open-file limit, which is set here)
is answered with one line and closed before any byte of HTTP is read. An admitted connection
must deliver each request whole, headers and body, within `request_timeout_s` of its first
byte (else 408 and closed), and is closed after `keepalive_s` idle. Refusals are logged once
per uid, then counted: a minute's worth in one line.

On the TCP API no kernel names the caller when a connection is accepted: there the cap at accept
is per remote address (`per_address`: several users share a login node's address), and each
connection is counted against its user's cap once a request on it authenticates
(`Gate.claim_user`, from scheduler.server.remote). TLS, when given, is set up here too.

The sockets themselves are made in scheduler.server.listen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from scheduler.config import Settings
from scheduler.server.identity import peer_uid, remember_peer, user_name
from scheduler.server.listen import BACKLOG
from scheduler.server.listen import DoorError as DoorError  # (raised here too)

log = logging.getLogger(__name__)

RESERVED_FDS = 256  # open files besides connections: the store's pool, logs, notify commands
METRICS_MAX_CONNECTIONS = 64  # the metrics port (Prometheus needs one or two)
PER_ADDRESS = 16  # a remote address may hold this many times the per-uid cap (a login node)
ACCEPT_BATCH = 256  # accepted per wake-up, then other work runs
ACCEPT_PAUSE_S = 0.5  # out of files or memory when accepting: wait this long
REPORT_S = 60.0  # refusals of one kind are summed up this often


@dataclass(frozen=True)
class DoorLimits:
    max_connections: int  # open at once through this door
    per_uid: int  # open at once per peer uid (a TCP peer has none: one pool)
    request_timeout_s: float  # from a request's first byte to its last
    keepalive_s: float  # idle between requests


def plan_limits(settings: Settings) -> tuple[DoorLimits, DoorLimits]:
    """The API's and the metrics port's limits. Raises the open-file limit to what they need
    (the soft limit up to the hard one; root may raise both) and keeps the API's connections
    below what it allows. Logs what was chosen."""
    wanted = settings.max_connections
    need = wanted + METRICS_MAX_CONNECTIONS + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY or hard >= need else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < need and os.geteuid() == 0:
            with contextlib.suppress(ValueError, OSError):  # past fs.nr_open: keep the hard one
                resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = (wanted if soft == resource.RLIM_INFINITY
            else soft - METRICS_MAX_CONNECTIONS - RESERVED_FDS)
    most = max(1, min(wanted, room))
    per_uid = min(settings.max_connections_per_uid, most)
    shown_hard = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    if most < wanted:
        log.warning("max_connections = %d does not fit the open-file limit %d (hard %s): at "
                    "most %d API connections", wanted, soft, shown_hard, most)
    log.info("open files: limit %s (was %s, hard %s); API connections: at most %d in all, %d "
             "per uid; a request must arrive whole within %g s; idle connections close after "
             "%g s", soft, before, shown_hard, most, per_uid, settings.request_timeout_s,
             settings.keepalive_s)
    api = DoorLimits(most, per_uid, settings.request_timeout_s, settings.keepalive_s)
    metrics = DoorLimits(METRICS_MAX_CONNECTIONS, METRICS_MAX_CONNECTIONS,
                         settings.request_timeout_s, settings.keepalive_s)
    return api, metrics


def _http_error(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode() + b"\n"
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


Peer = int | str | None  # a Unix peer's uid, a TCP peer's address, or (metrics) one pool


def _who(uid: Peer) -> str:
    if isinstance(uid, str):
        return f"address {uid}"
    return "TCP peers" if uid is None else f"uid {uid} ({user_name(uid)})"


class FrontDoor:
    """Accepts connections on a listening socket for `factory`'s protocols (aiohttp's request
    handlers), within `limits`."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], limits: DoorLimits,
                 what: str, tls: ssl.SSLContext | None = None, by_address: bool = False) -> None:
        self.factory = factory
        self.limits = limits
        self.what = what
        self.tls = tls
        self.by_address = by_address  # TCP peers counted per address, and per user later
        self.per_address = min(limits.max_connections, limits.per_uid * PER_ADDRESS)
        self.open = 0
        self.by_uid: dict[Peer, int] = {}
        self.by_user: dict[int, int] = {}  # authenticated TCP connections per uid
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._counts: dict[tuple[str, Peer], int] = {}  # events since the last report
        self._report: asyncio.TimerHandle | None = None
        self._names: dict[Peer, str] = {}  # a name looked up once per report period

    def who(self, uid: Peer) -> str:
        """How the peer is named in answers and logs (a refusal never asks NSS again)."""
        known = self._names.get(uid)
        if known is None:
            known = self._names[uid] = _who(uid)
        return known

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def serve(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._sock = sock
        self.loop.add_reader(sock.fileno(), self._accept_some)

    def close(self) -> None:
        for handle in (self._paused, self._report):
            if handle is not None:
                handle.cancel()
        if self._sock is not None:
            self.loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _accept_some(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM: wait, then go on
                self.note("accept", None, f"{self.what}: cannot accept connections now "
                          f"({exc.strerror}); pausing {ACCEPT_PAUSE_S} s")
                self.loop.remove_reader(sock.fileno())
                self._paused = self.loop.call_later(ACCEPT_PAUSE_S, self._resume)
                return
            self._admit(conn)

    def _resume(self) -> None:
        self._paused = None
        if self._sock is not None:
            self.loop.add_reader(self._sock.fileno(), self._accept_some)

    def _admit(self, conn: socket.socket) -> None:
        try:
            uid: Peer = peer_uid(conn) if conn.family == socket.AF_UNIX else None
            if uid is None and self.by_address:
                uid = str(conn.getpeername()[0])
        except OSError:
            conn.close()
            return
        held = self.by_uid.get(uid, 0)
        cap = self.per_address if isinstance(uid, str) else self.limits.per_uid
        if self.open >= self.limits.max_connections:
            self._refuse(conn, "full", None, 503, "Service Unavailable",
                         f"{self.what} has {self.open} connections open, its limit "
                         "(max_connections): try again in a few seconds")
        elif held >= cap:
            what = ("max_connections_per_uid x " + str(PER_ADDRESS) if isinstance(uid, str)
                    else "max_connections_per_uid")
            self._refuse(conn, "cap", uid, 429, "Too Many Requests",
                         f"{self.who(uid)} has {held} connections open to {self.what}, its limit "
                         f"({what}): close some (idle ones close after "
                         f"{self.limits.keepalive_s:g} s)")
        else:
            self.open += 1
            self.by_uid[uid] = held + 1
            gate = Gate(self, uid, self.factory())
            task = self.loop.create_task(self._connect(gate, conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, gate: Gate, conn: socket.socket) -> None:
        try:
            if self.tls is None:
                await self.loop.connect_accepted_socket(lambda: gate, sock=conn)
            else:
                await self.loop.connect_accepted_socket(
                    lambda: gate, sock=conn, ssl=self.tls,
                    ssl_handshake_timeout=self.limits.request_timeout_s)
        except Exception as exc:  # the peer left meanwhile
            log.debug("%s: connection lost while set up: %s", self.what, exc)
            gate.release()
            conn.close()

    def _refuse(self, conn: socket.socket, kind: str, uid: Peer, status: int,
                reason: str, message: str) -> None:
        """Answer with one line and close, reading nothing but what is already there (so that
        the client reads the answer rather than a reset)."""
        self.note(kind, uid, message)
        try:
            conn.setblocking(False)
            conn.send(_http_error(status, reason, message))
            conn.recv(65536)
        except OSError:
            pass
        conn.close()

    def release(self, uid: Peer) -> None:
        self.open -= 1
        left = self.by_uid[uid] - 1
        if left:
            self.by_uid[uid] = left
        else:
            del self.by_uid[uid]

    def note(self, kind: str, uid: Peer, line: str) -> None:
        """Log `line` the first time this kind of event happens to this uid; after that only
        count, and say the count once per REPORT_S while it goes on."""
        key = (kind, uid)
        if key in self._counts:
            self._counts[key] += 1
            return
        self._counts[key] = 0
        log.warning("%s", line)
        if self._report is None:
            self._report = self.loop.call_later(REPORT_S, self._report_counts)

    def _report_counts(self) -> None:
        self._report = None
        self._names.clear()
        words = {"full": "connections refused over max_connections",
                 "cap": "connections refused over max_connections_per_uid",
                 "slow": "connections closed for not sending a whole request in time",
                 "accept": "failed accepts"}
        for key, count in list(self._counts.items()):
            if not count:
                del self._counts[key]  # quiet for a whole period: the next one is logged again
                continue
            kind, uid = key
            who = "" if kind in ("full", "accept") else f" from {self.who(uid)}"
            log.warning("%s: %d more %s%s in the last %.0f s", self.what, count, words[kind],
                        who, REPORT_S)
            self._counts[key] = 0
        if self._counts:
            self._report = self.loop.call_later(REPORT_S, self._report_counts)


class Gate(asyncio.Protocol):
    """One admitted connection: passes everything to aiohttp's handler, holds the request
    deadline, and gives the connection's place back when it closes."""

    def __init__(self, door: FrontDoor, uid: Peer, inner: asyncio.Protocol) -> None:
        self.door = door
        self.uid = uid
        self.user: int | None = None  # a TCP connection's authenticated uid (claim_user)
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.expired = False
        self._timer: asyncio.TimerHandle | None = None
        self._released = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if isinstance(self.uid, int):
            remember_peer(transport, self.uid)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is None and not self.expired:  # a request starts: its clock runs
            self._timer = self.door.loop.call_later(self.door.limits.request_timeout_s,
                                                    self._expire)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.request_read()
        self.release()
        self.inner.connection_lost(exc)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.door.release(self.uid)
            self._drop_user()

    def claim_user(self, uid: int) -> bool:
        """Count this TCP connection against `uid`'s cap, as a request on it proved `uid`;
        False when that uid holds its cap of connections already."""
        if self.user == uid or self._released:
            return True
        self._drop_user()
        held = self.door.by_user.get(uid, 0)
        if held >= self.door.limits.per_uid:
            return False
        self.door.by_user[uid] = held + 1
        self.user = uid
        return True

    def _drop_user(self) -> None:
        if self.user is not None:
            left = self.door.by_user[self.user] - 1
            if left:
                self.door.by_user[self.user] = left
            else:
                del self.door.by_user[self.user]
            self.user = None

    def request_read(self) -> None:
        """The request is whole (its body read): the next one's clock starts at its first
        byte."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.expired = True
        limit = self.door.limits.request_timeout_s
        door = self.door
        door.note("slow", self.uid, f"{door.what}: {door.who(self.uid)} did not send a whole "
                  f"request within {limit:g} s (request_timeout_s): closed")
        transport.write(_http_error(408, "Request Timeout", f"the request did not arrive whole "
                                    f"within {limit:g} s (request_timeout_s)"))
        transport.close()


def gate_of(request: web.Request) -> Gate | None:
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, Gate) else None


@web.middleware
async def whole_request_in_time(request: web.Request, handler: Any) -> web.StreamResponse:
    """Reads the body before the handler runs, so that the gate knows when the request is
    whole; a client too slow for that has been answered 408 by the gate."""
    gate = gate_of(request)
    if gate is None:
        return await handler(request)
    try:
        await request.read()
    except ConnectionError:
        if gate.expired:
            return web.Response(status=408)  # the gate answered and closed: nothing to send
        raise
    finally:
        gate.request_read()
    return await handler(request)


def guard(app: web.Application) -> web.Application:
    """Install the request deadline in `app` (before it is set up)."""
    app.middlewares.append(whole_request_in_time)
    return app


def runner_for(app: web.Application, limits: DoorLimits) -> web.AppRunner:
    return web.AppRunner(guard(app), access_log=None, keepalive_timeout=limits.keepalive_s)


class DoorSite(web.BaseSite):
    """A listening socket served through a FrontDoor, as an aiohttp site of `runner`."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, limits: DoorLimits,
                 what: str, tls: ssl.SSLContext | None = None, by_address: bool = False) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self.sock = sock
        self.tls = tls
        self.by_address = by_address
        self.limits = limits
        self.what = what
        self.door: FrontDoor | None = None

    @property
    def name(self) -> str:
        return self.what

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self.door = FrontDoor(server, self.limits, self.what, self.tls, self.by_address)
        self.door.serve(self.sock)

    async def stop(self) -> None:
        if self.door is not None:
            self.door.close()
        await super().stop()
