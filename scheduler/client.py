"""A small, fast client for the coordinator API over its Unix socket (stdlib only).

Kept free of heavy imports so that `labq submit` starts in a few tens of milliseconds.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
from pathlib import Path
from typing import Any


class ClientError(RuntimeError):
    """The coordinator answered with an error, or could not be reached."""


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


class Client:
    def __init__(self, socket_path: str | Path, timeout: float = 30.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._conn: UnixConnection | None = None

    def request(self, method: str, path: str, body: Any = None, retries: int = 2) -> Any:
        """One JSON request; safe to retry because every write carries its own idempotency."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in range(retries + 1):
            try:
                conn = self._connection()
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                self.close()
                raise ClientError(
                    f"labq is not running here (no coordinator at {self.socket_path}): "
                    "start it with `labq up`, or set LABQ_HOME to the one in use"
                ) from exc
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt == retries:
                    raise ClientError(f"lost the connection to the coordinator: {exc}") from exc
        try:
            decoded = json.loads(data) if data else None
        except json.JSONDecodeError as exc:
            raise ClientError(f"coordinator sent something not JSON: {data[:200]!r}") from exc
        if response.status >= 400:
            message = decoded.get("error") if isinstance(decoded, dict) else None
            raise ClientError(message or f"coordinator error HTTP {response.status}")
        return decoded

    def _connection(self) -> UnixConnection:
        if self._conn is None:
            self._conn = UnixConnection(self.socket_path, self.timeout)
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
