"""Several coordinators in LABQ_SERVER (`a:7777,b:7777`): a request goes to the first that
answers and stays with it; one line names every coordinator tried when none answers. Real
sockets: a tiny HTTP server plays the coordinator that is up."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from scheduler.client import Client, ClientError, parse_servers

pytestmark = pytest.mark.unit


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"who": self.server.server_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def up() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    """A port nothing listens on (bound and closed: connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_first_coordinator_that_answers_serves_and_keeps_serving(up: int) -> None:
    down = closed_port()
    client = Client(server=f"127.0.0.1:{down},127.0.0.1:{up}", token="t")
    assert client.request("GET", "/v1/whoami") == {"who": up}
    assert client.where == f"127.0.0.1:{up}"
    assert client.request("GET", "/v1/whoami") == {"who": up}  # stays with it
    # the one that answers may be listed first too
    assert Client(server=f"127.0.0.1:{up}, 127.0.0.1:{down}", token="t").request(
        "GET", "/v1/x") == {"who": up}


def test_none_answering_names_every_one_tried() -> None:
    first, second = closed_port(), closed_port()
    client = Client(server=f"127.0.0.1:{first},127.0.0.1:{second}", token="t")
    with pytest.raises(ClientError) as err:
        client.request("GET", "/v1/whoami")
    assert str(err.value) == (f"no coordinator answers at 127.0.0.1:{first}, "
                              f"127.0.0.1:{second} (LABQ_SERVER or /etc/labq/client.toml): "
                              "is its API port open?")


def test_server_lists_are_checked() -> None:
    assert parse_servers("a:1, https://b:2") == [("a", 1, False), ("b", 2, True)]
    for bad in (",", "a:1,b", "a:1,b:0"):
        with pytest.raises(ClientError, match="give host:port"):
            parse_servers(bad)
