"""A fake coordinator API on a Unix socket, for CLI tests without a stack: it records every
request and answers from a table the test sets (`FakeApi.answer`)."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

Answer = Callable[[str, str, Any], tuple[int, Any]]


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    api: FakeApi


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        api = self.server.api
        api.requests.append((self.command, self.path, body))
        status, answer = api.answer(self.command, self.path, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _handle
    do_POST = _handle


class FakeApi:
    """Serves `answer(method, path, body) -> (status, json)` at `socket`; `requests` is every
    (method, path, body) it was sent. The default answers a submit with job "17"."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.requests: list[tuple[str, str, Any]] = []
        self.answer: Answer = self.default
        self.server = _Server(str(socket), _Handler)
        self.server.api = self
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @staticmethod
    def default(method: str, path: str, body: Any) -> tuple[int, Any]:
        if (method, path) == ("POST", "/v1/jobs"):
            return 200, {"ids": ["17"], "warnings": []}
        if path == "/v1/whoami":
            return 200, {"user": "alice", "uid": 1000, "admin": False}
        return 404, {"error": f"no route {method} {path}"}

    def posted(self, path: str = "/v1/jobs") -> list[Any]:
        return [body for method, p, body in self.requests if method == "POST" and p == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
