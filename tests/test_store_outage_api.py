"""A store that stops answering delays only what needs it (issue 21, item 6): the API answers
a request that needs the store with a one-line JSON 503 (nothing done) instead of a server
error page, and the CLI's client tries again with backoff, so a store restarting under a
`labq` command makes it slower, not fail. A real API on a real Valkey of the test's own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import scheduler.client as client_module
from scheduler.client import Client, ClientError
from tests.security_server import ApiServer
from tests.valkey_proc import Valkey

pytestmark = pytest.mark.store


@pytest.fixture
def served() -> Iterator[tuple[Valkey, ApiServer]]:
    valkey = Valkey().start()
    server = ApiServer(valkey.url).start()
    yield valkey, server
    server.stop()
    valkey.stop()


def test_a_store_outage_is_a_503_and_the_cli_tries_again(
        served: tuple[Valkey, ApiServer], monkeypatch: pytest.MonkeyPatch) -> None:
    valkey, server = served
    api = Client(server.socket)
    assert api.request("GET", "/v1/jobs") == []
    valkey.stop()
    monkeypatch.setattr(client_module, "STORE_RETRIES", 0)
    with pytest.raises(ClientError) as err:
        api.request("GET", "/v1/jobs")
    assert str(err.value) == ("the store is not answering (restarting or failing over?): "
                              "nothing was done; try again in a moment")
    monkeypatch.setattr(client_module, "STORE_RETRIES", 4)
    back = threading.Timer(1.5, valkey.start)
    back.start()
    began = time.monotonic()
    try:
        assert api.request("GET", "/v1/jobs") == []  # answered once the store is back
    finally:
        back.join()
    assert time.monotonic() - began >= 1.0
