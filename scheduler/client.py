"""A small, fast client for the coordinator API (stdlib only): over its Unix socket, where the
kernel tells the server who calls, or over TCP (`LABQ_SERVER=host:port`, optionally TLS), where
each request carries a MUNGE credential bound to it (`request_binding`) or a per-user API token.

Kept free of heavy imports so that `labq submit` starts in a few tens of milliseconds.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import shutil
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

MUNGE_TIMEOUT_S = 10.0
# Connecting to one of several coordinators (LABQ_SERVER=a:p,b:p): a host that does not answer
# within this long is skipped for the next (a request, once connected, has the full timeout).
CONNECT_TIMEOUT_S = 5.0
STORE_RETRIES = 4  # a 503 (the store away): tried again after 1, 2, 4, 4 s


def request_binding(method: str, path: str, body: bytes | None) -> bytes:
    """What a MUNGE credential's payload starts with for one request (a random nonce of 32 hex
    digits follows): the server makes the same from the request it reads and refuses a
    credential made for any other."""
    digest = hashlib.sha256(body or b"").hexdigest()
    return f"labq-api-1\n{method.upper()}\n{path}\n{digest}\n".encode()


class ClientError(RuntimeError):
    """The coordinator answered with an error (`status`: its HTTP status), or could not be
    reached (`status` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UnixConnection(http.client.HTTPConnection):
    """HTTP over the API's Unix socket (the kernel tells the server who calls)."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("labq", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A blocking connect bounded by SO_SNDTIMEO waits its turn in the server's accept
        # queue (full while someone floods the socket); a socket with a Python timeout is
        # non-blocking underneath and would fail at once with EAGAIN.
        seconds = float(self.timeout) if isinstance(self.timeout, int | float) else 30.0
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", int(seconds), int(seconds % 1 * 1e6)))
        sock.connect(self._path)
        sock.settimeout(seconds)
        self.sock = sock


def _connect_quickly(address: tuple[str, int], timeout: Any = None,
                     source_address: Any = None) -> socket.socket:
    """socket.create_connection with at most CONNECT_TIMEOUT_S to connect; the socket then
    keeps the request's own timeout."""
    full = float(timeout) if isinstance(timeout, int | float) else None
    sock = socket.create_connection(
        address, min(full, CONNECT_TIMEOUT_S) if full else CONNECT_TIMEOUT_S, source_address)
    sock.settimeout(full)
    return sock


class Client:
    """The API over the Unix socket `socket_path`, or over TCP when `server` (host:port) is
    given: with TLS when `tls_ca_file` is (or `server` starts https://), authenticated by
    `token` when given, else by a MUNGE credential per request (`munge_socket`: munged's).
    `server` may list several coordinators (`a:7777,b:7777`, each serving the API whether it
    leads or not): a request goes to the first that answers, and stays with it."""

    def __init__(self, socket_path: str | Path = "", timeout: float = 30.0, *,
                 server: str = "", tls_ca_file: str = "", token: str = "",
                 munge_socket: str = "") -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self.server = server
        self.tls_ca_file = tls_ca_file
        self.token = token
        self.munge_socket = munge_socket
        self._conn: http.client.HTTPConnection | None = None
        self.host, self.port, self.tls = "", 0, False
        self.servers = parse_servers(server) if server else []
        if self.servers:
            self._use(0)

    def _use(self, index: int) -> None:
        self._at = index
        self.host, self.port, self.tls = self.servers[index]
        self.tls = self.tls or bool(self.tls_ca_file)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}" if self.server else self.socket_path

    def _auth(self, method: str, path: str, body: bytes | None) -> dict[str, str]:
        if not self.server:
            return {}
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        return {"Authorization": f"MUNGE {munge_credential(method, path, body, self.munge_socket)}"}

    def request(self, method: str, path: str, body: Any = None, retries: int = 2) -> Any:
        """One JSON request; safe to retry because every write carries its own idempotency."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        unanswered: list[str] = []  # coordinators that did not answer this request
        attempt = store_waits = 0
        while True:
            try:
                conn = self._connection()
                # A new credential each try: munged refuses one used before.
                conn.request(method, path, body=payload,
                             headers={**headers, **self._auth(method, path, payload)})
                response = conn.getresponse()
                data = response.read()
                if response.status == 503 and store_waits < STORE_RETRIES:
                    # the store is restarting or failing over: nothing was done; again soon
                    store_waits += 1
                    time.sleep(min(0.5 * 2 ** store_waits, 4.0))
                    continue
                break
            except (FileNotFoundError, ConnectionRefusedError, TimeoutError) as exc:
                self.close()
                if isinstance(exc, TimeoutError) and not self.server:
                    if attempt == retries:  # the local socket's queue stayed full
                        raise ClientError(f"the coordinator at {self.where} is too busy to "
                                          "answer: try again") from exc
                    attempt += 1
                    continue
                if self.server:
                    unanswered.append(self.where)
                    if len(unanswered) < len(self.servers):  # the next coordinator listed
                        self._use((self._at + 1) % len(self.servers))
                        continue
                    raise ClientError(f"no coordinator answers at {', '.join(unanswered)} "
                                      "(LABQ_SERVER or /etc/labq/client.toml): is its API "
                                      "port open?") from exc
                raise ClientError(
                    f"labq is not running here (no coordinator at {self.socket_path}): "
                    "start it with `labq up`, or set LABQ_HOME to the one in use"
                ) from exc
            except ssl.SSLError as exc:
                self.close()
                raise ClientError(f"TLS with {self.where} failed: {exc.reason or exc} (is "
                                  "tls_ca_file the CA of the coordinator's certificate?)") from exc
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt == retries:
                    raise ClientError(f"lost the connection to the coordinator: {exc}") from exc
                attempt += 1
                if len(self.servers) > 1:  # it went away mid-request: try the next one
                    self._use((self._at + 1) % len(self.servers))
        try:
            decoded = json.loads(data) if data else None
        except json.JSONDecodeError as exc:
            raise ClientError(f"coordinator sent something not JSON: {data[:200]!r}") from exc
        if response.status >= 400:
            message = decoded.get("error") if isinstance(decoded, dict) else None
            raise ClientError(message or f"coordinator error HTTP {response.status}",
                              response.status)
        return decoded

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if not self.server:
                self._conn = UnixConnection(self.socket_path, self.timeout)
            elif self.tls:
                try:
                    context = ssl.create_default_context(cafile=self.tls_ca_file or None)
                except (OSError, ssl.SSLError) as exc:
                    raise ClientError(f"cannot use the CA file {self.tls_ca_file!r} "
                                      f"(tls_ca_file, LABQ_TLS_CA_FILE): "
                                      f"{getattr(exc, 'strerror', None) or exc}") from None
                self._conn = http.client.HTTPSConnection(self.host, self.port,
                                                         timeout=self.timeout, context=context)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout)
            if len(self.servers) > 1:
                self._conn._create_connection = _connect_quickly  # type: ignore[attr-defined]
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


PAGE = 1000  # GET /v1/jobs serves at most this many lines a request


def list_jobs(client: Client, query: str = "") -> list[Any]:
    """Every line of GET /v1/jobs?query, page after page (the server's pages are bounded)."""
    lines: list[Any] = []
    after = ""
    while True:
        params = "&".join(p for p in (query, f"limit={PAGE}", after) if p)
        page = client.request("GET", f"/v1/jobs?{params}")
        lines += page
        if len(page) < PAGE:
            return lines
        after = f"after={page[-1]['id']}"


def parse_server(server: str) -> tuple[str, int, bool]:
    """`host:port`, `[v6]:port`, or either after https:// (TLS) or http://: (host, port, tls)."""
    text = server.strip()
    tls = text.startswith("https://")
    text = text.removeprefix("https://").removeprefix("http://").rstrip("/")
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClientError(f"LABQ_SERVER/server = {server!r}: give host:port (e.g. "
                          "head.lab:7777)")
    return host, int(port), tls


def address_towards(host: str, port: int) -> str:
    """This host's IP address on the route to `host` (no packet is sent): the interface the
    other side reaches it by. "" if `host` cannot be resolved or routed to."""
    try:
        family, _, _, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(where)
            return str(probe.getsockname()[0])
    except OSError:
        return ""


def parse_servers(text: str) -> list[tuple[str, int, bool]]:
    """One coordinator (`host:port`) or several, comma-separated, each as `parse_server`."""
    servers = [parse_server(part) for part in text.split(",") if part.strip()]
    if not servers:
        raise ClientError(f"LABQ_SERVER/server = {text!r}: give host:port (e.g. head.lab:7777)")
    return servers


def munge_credential(method: str, path: str, body: bytes | None, munge_socket: str = "") -> str:
    """A MUNGE credential for one request, from the local munged (as this process's uid)."""
    munge = shutil.which("munge")
    if munge is None:
        raise ClientError("the coordinator is reached over TCP, which needs MUNGE (munge is not "
                          "installed here) or an API token: set LABQ_TOKEN, or put it in "
                          "~/.config/labq/token (mode 0600); an admin makes one with "
                          "`labq admin token create USER`")
    argv = [munge]
    if munge_socket:
        argv += ["--socket", munge_socket]
    payload = request_binding(method, path, body) + secrets.token_hex(16).encode()
    try:
        done = subprocess.run(argv, input=payload, capture_output=True,
                              timeout=MUNGE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClientError(f"munge failed: {exc}") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise ClientError(f"munge could not make a credential ({why[-1] if why else 'status '}"
                          f"{'' if why else done.returncode}): is munged running here?")
    return done.stdout.decode().strip()


def read_token_file(path: Path) -> str:
    """An API token from `path` (the user's own, mode 0600: a token others can read is not
    used); "" when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ClientError(f"cannot read the API token {path}: {exc.strerror}") from None
    with os.fdopen(fd) as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise ClientError(f"{path} is readable by others or not yours: chmod 600 it (and "
                              "ask an admin to revoke that token if others may have read it)")
        return handle.read().strip()
