"""The TCP API (issue 19): the caller's uid proven with MUNGE (a real munged with its own key)
or a per-user API token. Each attack is made by an unprivileged Unix user in its own process
against a real API server on real TCP and a real Valkey: refused with one line."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.client import request_binding
from scheduler.config import Settings
from scheduler.server.remote import munge_problem
from tests.munged import Munged, have_munge
from tests.security_server import ApiServer, can_switch_users, ensure_user, remote_as

pytestmark = pytest.mark.skipif(not (can_switch_users() and have_munge()),
                                reason="needs root, useradd, /usr/bin/python3 and munge")

ALICE, BOB = "labq-sec-rana", "labq-sec-rbo"
JOB = {"command": ["python", "train.py"], "workdir": "/tmp"}


@pytest.fixture(scope="module")
def munged() -> Iterator[Munged]:
    daemon = Munged().start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def other_munged() -> Iterator[Munged]:
    """Another cluster's munged: another key."""
    daemon = Munged().start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def server(valkey_url: str, munged: Munged) -> Iterator[ApiServer]:
    ensure_user(ALICE)
    ensure_user(BOB)
    srv = ApiServer(valkey_url, tcp=True, munge_socket=munged.socket,
                    enforce_accounts=False).start()
    yield srv
    srv.stop()


def one_line(answer: Any) -> str:
    message = answer["error"]
    assert message and "\n" not in message, answer
    return str(message)


def bound(method: str, path: str, body: Any = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    return request_binding(method, path, data) + secrets.token_hex(16).encode()


def by_hand(server: ApiServer, user: str, credential: str, method: str = "GET",
            path: str = "/v1/whoami", body: Any = None) -> tuple[int, Any]:
    return remote_as(user, server.server, method, path, body,
                     headers={"Authorization": f"MUNGE {credential}",
                              **({"Content-Type": "application/json"} if body else {})})


def make_token(server: ApiServer, user: str, expires_s: float = 3600) -> str:
    status, answer = server.call("POST", "/v1/admin/tokens",
                                 {"user": user, "expires_s": expires_s})
    assert status == 200, answer
    return str(answer["token"])


# ------------------------------------------------------------------------------ MUNGE


def test_a_users_munge_credential_is_served_as_that_user(server: ApiServer,
                                                          munged: Munged) -> None:
    status, me = remote_as(ALICE, server.server, "GET", "/v1/whoami",
                           munge_socket=munged.socket)
    assert status == 200 and me["user"] == ALICE and me["admin"] is False
    status, made = remote_as(ALICE, server.server, "POST", "/v1/jobs",
                             {**JOB, "return_jobs": True}, munge_socket=munged.socket)
    assert status == 200, made
    assert made["jobs"][0]["user"] == ALICE  # the body was bound and read as sent


def test_the_unix_socket_still_says_who_calls(server: ApiServer) -> None:
    status, me = server.as_user(BOB, "GET", "/v1/whoami")
    assert status == 200 and me["user"] == BOB


def test_no_header_or_another_scheme_is_401(server: ApiServer) -> None:
    status, answer = remote_as(BOB, server.server, "GET", "/v1/whoami", headers={})
    assert status == 401 and "Authorization: MUNGE" in one_line(answer)
    status, answer = remote_as(BOB, server.server, "GET", "/v1/whoami",
                               headers={"Authorization": f"Basic {ALICE}"})
    assert status == 401
    one_line(answer)
    status, answer = remote_as(BOB, server.server, "GET", "/v1/whoami",
                               headers={"Authorization": "MUNGE not-a-credential"})
    assert status == 401
    one_line(answer)


def test_a_replayed_credential_is_refused(server: ApiServer, munged: Munged) -> None:
    credential = munged.credential(bound("GET", "/v1/whoami"), user=ALICE)
    status, me = by_hand(server, ALICE, credential)
    assert status == 200 and me["user"] == ALICE
    status, answer = by_hand(server, BOB, credential)  # bob saw it on the wire
    assert status == 401 and "used before" in one_line(answer)


def test_an_expired_credential_is_refused(server: ApiServer, munged: Munged) -> None:
    credential = munged.credential(bound("GET", "/v1/whoami"), user=ALICE, ttl=1)
    time.sleep(2.5)
    status, answer = by_hand(server, BOB, credential)
    assert status == 401 and "expired" in one_line(answer)


def test_a_credential_from_another_key_is_refused(server: ApiServer,
                                                  other_munged: Munged) -> None:
    # root on a host of another cluster (or a munged with a made-up key) claims to be root
    credential = other_munged.credential(bound("GET", "/v1/whoami"))
    status, answer = by_hand(server, BOB, credential)
    assert status == 401 and "MUNGE key" in one_line(answer)
    status, answer = remote_as(BOB, server.server, "GET", "/v1/whoami",
                               munge_socket=other_munged.socket)
    assert status == 0 and "MUNGE key" in one_line(answer)


def test_a_credential_for_another_request_is_refused(server: ApiServer, munged: Munged) -> None:
    """Alice's credential for a harmless GET, seen by bob before it was used, does not let bob
    cancel alice's job, nor submit as her, nor read another path."""
    status, made = remote_as(ALICE, server.server, "POST", "/v1/jobs",
                             {**JOB, "return_jobs": True}, munge_socket=munged.socket)
    job_id = made["jobs"][0]["id"]
    for method, path, body in (("POST", f"/v1/jobs/{job_id}/cancel", {}),
                               ("POST", "/v1/jobs", JOB),
                               ("GET", "/v1/quota", None),
                               ("GET", "/v1/whoami?x=1", None)):
        credential = munged.credential(bound("GET", "/v1/whoami"), user=ALICE)
        status, answer = by_hand(server, BOB, credential, method, path, body)
        assert status == 401 and "another request" in one_line(answer), (path, answer)
    # the same request with another body: the body's hash differs
    credential = munged.credential(bound("POST", "/v1/jobs", {**JOB, "name": "a"}), user=ALICE)
    status, answer = by_hand(server, BOB, credential, "POST", "/v1/jobs", {**JOB, "name": "b"})
    assert status == 401 and "another request" in one_line(answer)
    # a payload without a nonce, or none at all
    for payload in (request_binding("GET", "/v1/whoami", None), b""):
        credential = munged.credential(payload, user=ALICE)
        status, answer = by_hand(server, BOB, credential)
        assert status == 401, answer
    status, job = server.call("GET", f"/v1/jobs/{job_id}")
    assert job["state"] == "PENDING"


def test_root_over_munge_is_root(server: ApiServer, munged: Munged) -> None:
    status, answer = remote_as(0, server.server, "GET", "/v1/whoami",
                               munge_socket=munged.socket)
    assert status == 200 and answer["uid"] == 0 and answer["admin"] is True


# ------------------------------------------------------------------------------ tokens


def test_a_token_is_its_user_and_never_more(server: ApiServer) -> None:
    token = make_token(server, ALICE)
    status, me = remote_as(BOB, server.server, "GET", "/v1/whoami", token=token)
    assert status == 200 and me["user"] == ALICE and me["admin"] is False
    for method, path, body in (("POST", "/v1/admin/accounts",
                                {"target": "account", "op": "add", "name": "x"}),
                               ("POST", "/v1/admin/tokens", {"user": BOB}),
                               ("GET", "/v1/admin/tokens", None)):
        status, answer = remote_as(BOB, server.server, method, path, body, token=token)
        assert status == 0 and ALICE in one_line(answer), answer
    status, answer = server.as_user(ALICE, "POST", "/v1/admin/tokens", {"user": ALICE})
    assert status == 403 and "only root" in one_line(answer)


def test_a_revoked_a_wrong_or_an_expired_token_is_refused(server: ApiServer) -> None:
    token = make_token(server, ALICE)
    token_id = token.split("_")[1]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    status, answer = remote_as(BOB, server.server, "GET", "/v1/whoami", token=forged)
    assert status == 0 and "not valid" in one_line(answer)
    status, _ = server.call("POST", f"/v1/admin/tokens/{token_id}/revoke", {})
    assert status == 200
    status, answer = remote_as(BOB, server.server, "GET", "/v1/whoami", token=token)
    assert status == 0 and "not valid" in one_line(answer)
    short = make_token(server, ALICE, expires_s=1)
    assert remote_as(BOB, server.server, "GET", "/v1/whoami", token=short)[0] == 200
    time.sleep(1.5)
    status, answer = remote_as(BOB, server.server, "GET", "/v1/whoami", token=short)
    assert status == 0 and "not valid" in one_line(answer)


def test_tokens_are_stored_hashed(server: ApiServer) -> None:
    token = make_token(server, BOB)
    token_id, secret = token.split("_")[1], token.split("_", 2)[2]

    async def raw() -> dict[str, str]:
        return dict(await server.store.r.hgetall(server.store.keys.token(token_id)))

    stored = server.run(raw())
    assert stored["user"] == BOB and secret not in json.dumps(stored)
    status, listed = server.call("GET", f"/v1/admin/tokens?user={BOB}")
    assert status == 200 and token_id in [t["id"] for t in listed]
    assert secret not in json.dumps(listed)


# ------------------------------------------------------------------------------ TLS


def test_tls_with_the_ca_file(valkey_url: str, munged: Munged) -> None:
    folder = Path(tempfile.mkdtemp(prefix="labq-tls-"))  # other users reach the CA file
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    cert.chmod(0o644)
    folder.chmod(0o755)
    srv = ApiServer(valkey_url, tcp=True, munge_socket=munged.socket,
                    tls_cert_file=str(cert), tls_key_file=str(key)).start()
    try:
        assert srv.server.startswith("https://")
        status, me = remote_as(ALICE, srv.server, "GET", "/v1/whoami",
                               munge_socket=munged.socket, ca=str(cert))
        assert status == 200 and me["user"] == ALICE, me
        status, answer = remote_as(ALICE, srv.server, "GET", "/v1/whoami",
                                   munge_socket=munged.socket)  # no CA: not trusted
        assert status == 0 and "TLS" in one_line(answer)
    finally:
        srv.stop()
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------ labq up


@pytest.mark.e2e
def test_labq_up_opens_the_tcp_api(munged: Munged, other_munged: Munged) -> None:
    """A single-machine stack with LABQ_API_PORT (what `labq up --api-port P` sets): a user's
    own `labq` reaches it over TCP with MUNGE, as on a login node; the socket works as before."""
    from scheduler.server.ports import free_port
    from tests.e2e_stack import Stack

    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="labq-e2e-"))
    (home / "config.toml").write_text(f'[api]\nmunge_socket = "{munged.socket}"\n')
    (home / "config.toml").chmod(0o644)
    stack = Stack("1x1:RTX3090", home=home, LABQ_API_PORT=str(port)).start()
    try:
        ensure_user(ALICE)
        local = dict(stack.env)
        stack.env.update(LABQ_SERVER=f"127.0.0.1:{port}", LABQ_MUNGE_SOCKET=munged.socket)
        me = stack.labq("whoami", user=ALICE)
        assert me.stdout.startswith(f"{ALICE} (uid "), me.stderr
        job = stack.labq("submit", "--time", "1m", "--", "true", user=ALICE).stdout.strip()
        stack.env.update(LABQ_MUNGE_SOCKET=other_munged.socket)
        foreign = stack.labq("whoami", user=ALICE, check=False)
        assert foreign.returncode == 1 and "MUNGE key" in foreign.stderr
        assert len(foreign.stderr.strip().splitlines()) == 1
        stack.env = local
        assert job in stack.labq("queue", "--all", "--done").stdout
        assert stack.labq("whoami", user=ALICE).stdout.startswith(ALICE)  # the socket
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


# ------------------------------------------------------------------------------ caps


def test_tcp_connections_are_capped_per_address_and_per_user(valkey_url: str) -> None:
    import http.client

    from scheduler.server.frontdoor import PER_ADDRESS

    srv = ApiServer(valkey_url, tcp=True, max_connections_per_uid=2).start()
    conns: list[http.client.HTTPConnection] = []
    try:
        token = make_token(srv, ALICE)
        port = int(srv.server.rsplit(":", 1)[1])

        def whoami(conn: http.client.HTTPConnection) -> tuple[int, Any]:
            conn.request("GET", "/v1/whoami", headers={"Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())

        for _ in range(2):  # alice's cap: 2 connections once they authenticate
            conns.append(http.client.HTTPConnection("127.0.0.1", port, timeout=10))
            assert whoami(conns[-1])[0] == 200
        third = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        status, answer = whoami(third)
        assert status == 429 and "max_connections_per_uid" in one_line(answer)
        third.close()  # the server closed it
        time.sleep(0.3)
        # the address's cap, at accept: PER_ADDRESS x the per-uid cap
        for _ in range(2 * PER_ADDRESS - 2):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.connect()
            conns.append(conn)
        time.sleep(0.3)
        over = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        over.request("GET", "/v1/whoami")
        resp = over.getresponse()
        assert resp.status == 429 and "address 127.0.0.1" in one_line(json.loads(resp.read()))
        over.close()
    finally:
        for conn in conns:
            conn.close()
        srv.stop()


def test_the_coordinator_says_at_start_when_munge_does_not_work(tmp_path: Path) -> None:
    """A startup check (issue 19, item 6): a munged that answers, and one that is not there."""
    daemon = Munged().start()
    try:
        assert munge_problem(Settings(tmp_path, munge_socket=daemon.socket)) is None
    finally:
        daemon.stop()
    problem = munge_problem(Settings(tmp_path, munge_socket=str(tmp_path / "no-munged")))
    assert problem is not None and "munge" in problem and "\n" not in problem
