"""The TCP API: who calls, proven per request, where no kernel can say it.

On the Unix socket the kernel names the caller (SO_PEERCRED). Over TCP every request carries

* `Authorization: MUNGE <credential>`: made by `munge` on the caller's host with the cluster's
  MUNGE key, as Slurm does. The coordinator decodes it with `unmunge` (its local munged): the
  uid is munged's word, not the client's. The credential's payload binds it to this one request
  (`scheduler.client.request_binding`: method, path and query, sha256 of the body, then a
  random nonce), so a credential seen in flight cannot be used for another request; munged
  refuses it a second time (its replay cache: EMUNGE_CRED_REPLAYED), once expired (its TTL),
  and when it was made with another key; or
* `Authorization: Bearer labq_<id>_<secret>`: a per-user API token (`labq admin token create`,
  stored hashed, revocable, with an expiry), for hosts without MUNGE. It is its user, nothing
  more: an admin only when that user is one.

No header, or anything else: 401, one line. The uid is then a user as on the socket
(`identity.caller_for_uid`: a uid with no name on the coordinator's host is refused).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import pwd
import re
import shutil
import socket
import ssl
import time
from typing import Any

from aiohttp import web

from scheduler.client import request_binding
from scheduler.config import Settings
from scheduler.server.frontdoor import DoorError, gate_of
from scheduler.server.http import ApiError
from scheduler.store import Store

log = logging.getLogger(__name__)

# The request's keys: the uid its credential or token proved, and which ("munge", "token").
REMOTE_UID = web.RequestKey("labq_remote_uid", int)
REMOTE_VIA = web.RequestKey("labq_remote_via", str)
MAX_CREDENTIAL = 4096  # characters of a MUNGE credential (a request's is ~200)
NONCE_RE = re.compile(rb"[0-9a-f]{32}")
UNMUNGE_TIMEOUT_S = 5.0
UNMUNGE_AT_ONCE = 16  # decodes running at once; more wait their turn

# unmunge's exit status is the MUNGE error code (munge.h)
_MUNGE_ERRORS = {
    15: "the MUNGE credential has expired (its TTL): make a new one for each request, and "
        "check that the clocks agree",
    16: "the MUNGE credential was made in the future (a rewound clock): check that the "
        "clocks of the caller's host and the coordinator's agree",
    17: "the MUNGE credential was used before (a replay): each request needs a new one",
}


def _refuse(message: str) -> ApiError:
    return ApiError(401, message)


class RemoteAuth:
    """Authenticates the TCP API's requests (see the module)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.unmunge = shutil.which("unmunge") or ""
        self._slots = asyncio.Semaphore(UNMUNGE_AT_ONCE)

    async def authenticate(self, request: web.Request) -> tuple[int, str]:
        """(uid, how) the request proves, or ApiError 401 (one line)."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if not header:
            raise _refuse("over TCP every request needs `Authorization: MUNGE <credential>` or "
                          "`Authorization: Bearer <API token>`: run labq where munge works, or "
                          "set LABQ_TOKEN (ask an admin: labq admin token create USER)")
        if scheme.upper() == "MUNGE" and value:
            body = await request.read()
            return await self.munge_uid(value, request_binding(request.method,
                                                                request.raw_path, body)), "munge"
        if scheme.lower() == "bearer" and value:
            return await self.token_uid(value), "token"
        raise _refuse("Authorization: use `MUNGE <credential>` or `Bearer <API token>`")

    async def munge_uid(self, credential: str, binding: bytes) -> int:
        """The uid of a credential whose payload is `binding` and a nonce."""
        if len(credential) > MAX_CREDENTIAL or not credential.startswith("MUNGE:"):
            raise _refuse("not a MUNGE credential (MUNGE:...)")
        if not self.unmunge:
            raise _refuse("MUNGE is not installed on the coordinator's host (no unmunge): use "
                          "an API token (Authorization: Bearer), or ask an admin to install munge")
        argv = [self.unmunge, "--numeric"]
        if self.settings.munge_socket:
            argv += ["--socket", self.settings.munge_socket]
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            try:
                out, err = await asyncio.wait_for(proc.communicate(credential.encode()),
                                                  UNMUNGE_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise ApiError(503, f"munged did not decode the credential within "
                                    f"{UNMUNGE_TIMEOUT_S:g} s: is munged running?") from None
        if proc.returncode in (6, 7):  # EMUNGE_SOCKET, EMUNGE_TIMEOUT: munged, not the caller
            log.warning("unmunge cannot reach munged (%s): MUNGE callers are refused",
                        err.decode(errors="replace").strip())
            raise ApiError(503, "the coordinator cannot reach its munged now: try again, or "
                                "tell an admin (is munged running on the coordinator's host?)")
        if proc.returncode in _MUNGE_ERRORS:
            raise _refuse(_MUNGE_ERRORS[proc.returncode])
        if proc.returncode != 0:
            why = err.decode(errors="replace").strip().splitlines()
            said = why[-1].removeprefix("unmunge: Error: ") if why else f"status {proc.returncode}"
            raise _refuse(f"the MUNGE credential was refused ({said}): was it made with this "
                          "cluster's MUNGE key?")
        meta, payload = parse_unmunge(out)
        bound, nonce = payload[:len(binding)], payload[len(binding):]
        if not hmac.compare_digest(bound, binding) or not NONCE_RE.fullmatch(nonce):
            raise _refuse("the MUNGE credential was made for another request (its payload does "
                          "not match this request's method, path and body)")
        try:
            return int(meta["UID"])
        except (KeyError, ValueError):
            raise _refuse("unmunge gave no uid") from None

    async def token_uid(self, text: str) -> int:
        record = await self.store.check_token(text, time.time())
        if record is None:
            raise _refuse("the API token is not valid (unknown, revoked or expired): ask an "
                          "admin for a new one (labq admin token create USER)")
        try:
            return pwd.getpwnam(record.user).pw_uid
        except KeyError:
            raise ApiError(403, f"the API token's user {record.user} has no account on the "
                                "coordinator's host") from None

    def middleware(self) -> Any:
        @web.middleware
        async def remote_caller(request: web.Request, handler: Any) -> web.StreamResponse:
            if not is_tcp(request):
                return await handler(request)
            uid, via = await self.authenticate(request)
            gate = gate_of(request)
            if gate is not None and not gate.claim_user(uid):
                limit = gate.door.limits.per_uid
                refused = web.json_response(
                    {"error": f"uid {uid} has {limit} connections open to the API, its limit "
                              "(max_connections_per_uid): close some"}, status=429)
                refused.force_close()  # this connection's place is given back
                return refused
            request[REMOTE_UID] = uid
            request[REMOTE_VIA] = via
            return await handler(request)

        return remote_caller


def parse_unmunge(out: bytes) -> tuple[dict[str, str], bytes]:
    """unmunge --numeric's output: `KEY: value` lines, a blank line, the payload."""
    head, _, payload = out.partition(b"\n\n")
    meta: dict[str, str] = {}
    for line in head.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        meta[key.strip()] = value.strip()
    return meta, payload


def is_tcp(request: web.Request) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TCP API's TLS, when tls_cert_file and tls_key_file are set (both or neither)."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if not cert and not key:
        return None
    if not (cert and key):
        raise DoorError("set both tls_cert_file and tls_key_file for TLS on the API port, or "
                        "neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise DoorError(f"cannot load the API's TLS certificate {cert} and key {key}: "
                        f"{getattr(exc, 'strerror', None) or exc}") from None
    return context


def munge_problem(settings: Settings, timeout_s: float = 5.0) -> str | None:
    """Why MUNGE does not work on this host (None when a credential made here decodes here):
    said once at start, so an admin learns of a missing munged or a broken key before a user
    does. Remote users can still use API tokens."""
    import subprocess

    munge, unmunge = shutil.which("munge"), shutil.which("unmunge")
    if not munge or not unmunge:
        return "MUNGE is not installed here (no munge/unmunge): remote users need API tokens"
    socket_args = ["--socket", settings.munge_socket] if settings.munge_socket else []
    try:
        made = subprocess.run([munge, "--no-input", *socket_args], capture_output=True,
                              timeout=timeout_s)
        if made.returncode:
            return f"munge fails here: {made.stderr.decode(errors='replace').strip()[:200]}"
        read = subprocess.run([unmunge, *socket_args], input=made.stdout, capture_output=True,
                              timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"munge does not answer here: {exc}"
    if read.returncode:
        return f"unmunge fails here: {read.stderr.decode(errors='replace').strip()[:200]}"
    return None
