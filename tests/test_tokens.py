"""Per-user API tokens (issue 19): made by root with `labq admin token create`, stored hashed,
listed without their secrets, revocable, with an expiry; a token is its user and never more.
Real Valkey, a real API server on a Unix socket and on TCP, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.store import Store
from scheduler.store.tokens import split_token
from tests.security_server import ApiServer, can_switch_users, ensure_user, remote_as

USER, OTHER = "labq-sec-tok", "labq-sec-tok2"


async def test_store_keeps_only_a_hash(store: Store) -> None:
    now = time.time()
    record, text = await store.create_token("ann", now, now + 60)
    parts = split_token(text)
    assert parts is not None and parts[0] == record.id
    raw = await store.r.hgetall(store.keys.token(record.id))
    assert parts[1] not in json.dumps(raw) and raw["user"] == "ann"
    assert (await store.check_token(text, now)) == record
    assert await store.check_token(text, now + 61) is None  # expired
    assert await store.check_token(text[:-1] + ("x" if text[-1] != "x" else "y"), now) is None
    assert await store.check_token("labq_nonsense", now) is None
    never, _ = await store.create_token("ben", now + 1, 0.0)
    assert [t.id for t in await store.tokens()] == [record.id, never.id]
    assert [t.id for t in await store.tokens("ben")] == [never.id]
    assert (await store.revoke_token(record.id)) == record
    assert await store.check_token(text, now) is None
    assert await store.revoke_token(record.id) is None
    assert [t.id for t in await store.tokens()] == [never.id]


@pytest.fixture(scope="module")
def server(valkey_url: str) -> Iterator[ApiServer]:
    if not can_switch_users():
        pytest.skip("needs root and useradd")
    ensure_user(USER)
    ensure_user(OTHER)
    srv = ApiServer(valkey_url, tcp=True, enforce_accounts=False).start()
    yield srv
    srv.stop()


def labq(server: ApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABQ_SOCKET": server.socket, "LABQ_HOME": str(server.dir)}
    env.pop("LABQ_SERVER", None)
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_create_list_revoke(server: ApiServer) -> None:
    made = labq(server, "admin", "token", "create", USER, "--expires", "30d")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert split_token(token) is not None and "expires" in made.stderr
    token_id = token.split("_")[1]
    listed = labq(server, "admin", "token", "list", USER)
    assert listed.returncode == 0 and token_id in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout
    as_json = json.loads(labq(server, "admin", "token", "list", "--json").stdout)
    assert any(t["id"] == token_id and t["user"] == USER for t in as_json)
    assert remote_as(OTHER, server.server, "GET", "/v1/whoami", token=token)[1]["user"] == USER
    revoked = labq(server, "admin", "token", "revoke", token_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    status, answer = remote_as(OTHER, server.server, "GET", "/v1/whoami", token=token)
    assert status == 0 and "not valid" in answer["error"]


@pytest.mark.parametrize("args", [
    ("create", "labq-sec-tok", "--expires", "soon"),
    ("create", "no-such-user-here"),
    ("create", "root"),
    ("revoke", "zz"),
    ("revoke", "0123456789abcdef"),
])
def test_cli_bad_input_is_one_line(server: ApiServer, args: tuple[str, ...]) -> None:
    result = labq(server, "admin", "token", *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("labq: error:"), \
        result.stderr


def test_a_token_is_admin_only_when_its_user_is(server: ApiServer) -> None:
    status, made = server.call("POST", "/v1/admin/tokens", {"user": OTHER, "expires_s": 600})
    assert status == 200
    token = made["token"]
    me = remote_as(USER, server.server, "GET", "/v1/whoami", token=token)[1]
    assert me == {"user": OTHER, "uid": me["uid"], "admin": False}
    change: dict[str, Any] = {"target": "user", "op": "set", "name": OTHER, "admin": True}
    assert server.call("POST", "/v1/admin/accounts",
                       {"target": "account", "op": "add", "name": "tk"})[0] == 200
    assert server.call("POST", "/v1/admin/accounts",
                       {"target": "user", "op": "add", "name": OTHER, "account": "tk"})[0] == 200
    assert server.call("POST", "/v1/admin/accounts", change)[0] == 200
    time.sleep(1.1)  # the account tree is read at most a second ago
    assert remote_as(USER, server.server, "GET", "/v1/whoami", token=token)[1]["admin"] is True
    # an admin of the account tree is not root: no token for another user, so none to be them
    status, answer = remote_as(USER, server.server, "POST", "/v1/admin/tokens",
                               {"user": USER}, token=token)
    assert status == 0 and "only root" in answer["error"]
