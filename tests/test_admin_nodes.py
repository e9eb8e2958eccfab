"""The admin's node routes on the real API (real Valkey, real Unix socket, real uids): a user
who is not an admin is refused drain, resume and remove, and nothing changes; a user given the
admin role drains; a node whose agent still reports is not removed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security_server import ApiServer, can_switch_users, ensure_user

pytestmark = pytest.mark.skipif(not can_switch_users(),
                                reason="needs root, useradd and /usr/bin/python3")

ANN, BEN = "labq-node-ann", "labq-node-ben"  # ann: given the admin role; ben: a user


@pytest.fixture(scope="module")
def server(valkey_url: str) -> Iterator[ApiServer]:
    ensure_user(ANN)
    ensure_user(BEN)
    srv = ApiServer(valkey_url, nodes=(("n1", 2, "NVIDIA A100-SXM4-80GB"),))
    srv.start()
    for change in ({"target": "account", "op": "add", "name": "lab"},
                   {"target": "user", "op": "add", "name": ANN, "account": "lab"},
                   {"target": "user", "op": "set", "name": ANN, "admin": True}):
        assert srv.call("POST", "/v1/admin/accounts", change)[0] == 200
    yield srv
    srv.stop()


def n1(server: ApiServer) -> dict[str, object]:
    return next(n for n in server.call("GET", "/v1/nodes")[1] if n["name"] == "n1")


@pytest.mark.parametrize(("act", "what"), [("drain", "drain nodes"),
                                           ("resume", "resume nodes"),
                                           ("remove", "remove nodes")])
def test_a_user_who_is_not_an_admin_is_refused(server: ApiServer, act: str, what: str) -> None:
    before = n1(server)
    status, answer = server.as_user(BEN, "POST", f"/v1/admin/nodes/n1/{act}", {"reason": "x"})
    assert status == 403
    assert answer == {"error": f"only admins {what} ({BEN} is not an admin)"}
    after = n1(server)
    assert (after["shown_state"], after["drained_by"]) == (before["shown_state"],
                                                          before["drained_by"])


def test_an_admin_drains_and_root_resumes_and_a_live_node_stays(server: ApiServer) -> None:
    status, answer = server.as_user(ANN, "POST", "/v1/admin/nodes/n1/drain",
                                    {"reason": "new PSU"})
    assert status == 200, answer
    assert (answer["shown_state"], answer["drained_by"], answer["already"]) == (
        "DRAINED", ANN, False)
    assert (n1(server)["drained_by"], n1(server)["drain_reason"]) == (ANN, "new PSU")
    status, answer = server.call("POST", "/v1/admin/nodes/n1/remove")
    assert status == 409 and "stop `labq agent` on n1 first" in answer["error"]
    assert n1(server)["shown_state"] == "DRAINED"  # still there
    status, answer = server.call("POST", "/v1/admin/nodes/n1/resume")
    assert (status, answer["drained_by"]) == (200, ANN)
    assert n1(server)["shown_state"] == "UP"
    status, answer = server.call("POST", "/v1/admin/nodes/n1/drain", {"reason": 5})
    assert (status, answer) == (400, {"error": "--reason must be text"})
