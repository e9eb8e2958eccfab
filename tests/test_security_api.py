"""Issue 10's attacks, each made by an unprivileged Unix user against the API on its Unix socket
(real Valkey, real socket, real uids): refused with one clear line, and nothing changed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.security_server import ApiServer, can_switch_users, ensure_user, unused_uid

pytestmark = pytest.mark.skipif(not can_switch_users(),
                                reason="needs root, useradd and /usr/bin/python3")

ANN, BEN = "labq-sec-ann", "labq-sec-ben"  # ann: in account vision; ben: not configured
JOB = {"command": ["python", "train.py"], "workdir": "/tmp"}


@pytest.fixture(scope="module")
def users() -> None:
    ensure_user(ANN)
    ensure_user(BEN)


@pytest.fixture(scope="module")
def server(valkey_url: str, users: None) -> Iterator[ApiServer]:
    srv = ApiServer(valkey_url).start()
    for change in ({"target": "account", "op": "add", "name": "vision"},
                   {"target": "account", "op": "add", "name": "nlp"},
                   {"target": "user", "op": "add", "name": ANN, "account": "vision"}):
        assert srv.call("POST", "/v1/admin/accounts", change)[0] == 200
    yield srv
    srv.stop()


def refused(server: ApiServer, user: str | int, method: str, path: str, body: Any = None,
            raw: str | None = None) -> tuple[int, str]:
    """Make the request as `user`; it must be refused with one line and change nothing."""
    before = server.state()
    status, answer = server.as_user(user, method, path, body, raw=raw)
    assert 400 <= status < 500, (status, answer)
    message = answer["error"]
    assert message and "\n" not in message
    assert server.state() == before
    return status, message


def submit(server: ApiServer, user: str, **fields: Any) -> dict[str, Any]:
    status, answer = server.as_user(user, "POST", "/v1/jobs",
                                    {**JOB, "return_jobs": True, **fields})
    assert status == 200, answer
    return dict(answer["jobs"][0])


# ------------------------------------------------------------------------------ identity


def test_a_uid_without_a_name_is_refused_not_given_a_fresh_identity(server: ApiServer) -> None:
    uid = unused_uid()
    status, message = refused(server, uid, "POST", "/v1/jobs", JOB)
    assert status == 403 and f"uid {uid} has no user name" in message
    assert refused(server, uid, "GET", "/v1/whoami")[0] == 403


def test_submit_tokens_are_scoped_to_their_user(server: ApiServer) -> None:
    token = "shared-token-1"
    first = server.as_user(ANN, "POST", "/v1/jobs", {**JOB, "token": token})[1]["ids"]
    again = server.as_user(ANN, "POST", "/v1/jobs", {**JOB, "token": token})[1]["ids"]
    assert again == first  # a retry by its owner: the same jobs, not new ones
    status, answer = server.as_user(BEN, "POST", "/v1/jobs", {**JOB, "token": token})
    assert status == 200 and answer["ids"] != first  # ben's own job, not ann's ids
    assert server.call("GET", f"/v1/jobs/{answer['ids'][0]}")[1]["user"] == BEN
    assert server.call("GET", f"/v1/jobs/{first[0]}")[1]["user"] == ANN


def test_a_user_cannot_submit_as_another(server: ApiServer) -> None:
    status, message = refused(server, ANN, "POST", "/v1/jobs", {**JOB, "as_user": BEN})
    assert status == 403 and "only root acts for another user" in message


def test_an_admin_of_the_tree_cannot_run_jobs_as_another_user(valkey_url: str,
                                                              users: None) -> None:
    """Issue 18: a TA made a labq admin ran jobs --as postgres and --as daemon. Acting for
    another Unix user is root's (or an operator's), and no job runs as a system uid."""
    srv = ApiServer(valkey_url, admins=[ANN]).start()
    try:
        assert srv.as_user(ANN, "GET", "/v1/whoami")[1]["admin"] is True
        for target in (BEN, "postgres", "daemon"):
            status, message = refused(srv, ANN, "POST", "/v1/jobs", {**JOB, "as_user": target})
            assert status == 403 and "only root acts for another user" in message
        for target in ("postgres", "daemon", "root"):  # not even root makes a system uid's job
            status, answer = srv.call("POST", "/v1/jobs", {**JOB, "as_user": target})
            assert status == 400 and ("system uid" in answer["error"]
                                      or "never runs a job as root" in answer["error"]), answer
        assert srv.state()["jobs"] == {}
    finally:
        srv.stop()
    operator = ApiServer(valkey_url, operators=[ANN], job_user_deny=["labq-sec-ben"]).start()
    try:
        status, answer = operator.as_user(ANN, "POST", "/v1/jobs", {**JOB, "as_user": BEN})
        assert status == 400 and "job_user_deny" in answer["error"]
        assert operator.as_user(ANN, "POST", "/v1/jobs", {**JOB, "as_user": ANN})[0] == 200
    finally:
        operator.stop()


# ------------------------------------------------------------------------------ accounts


def test_the_root_account_is_never_charged(server: ApiServer) -> None:
    for user in (ANN, BEN):
        status, message = refused(server, user, "POST", "/v1/jobs", {**JOB, "account": "root"})
        assert status == 403 and "root of the account tree is never charged" in message


def test_an_unconfigured_user_charges_only_the_default_account(server: ApiServer) -> None:
    for name in ("fresh-name-1", "vision"):  # a new label (fresh fair share), someone's account
        status, message = refused(server, BEN, "POST", "/v1/jobs", {**JOB, "account": name})
        assert status == 403 and "may charge only 'default'" in message
    assert submit(server, BEN)["account"] == "default"
    assert submit(server, BEN, account="default")["account"] == "default"


def test_a_configured_user_charges_only_their_accounts(server: ApiServer) -> None:
    status, message = refused(server, ANN, "POST", "/v1/jobs", {**JOB, "account": "nlp"})
    assert status == 403 and "not in account 'nlp' (yours: vision)" in message
    assert submit(server, ANN)["account"] == "vision"


def test_the_admin_api_is_refused_to_users_and_reads_booleans_strictly(
        server: ApiServer) -> None:
    make_admin = {"target": "user", "op": "set", "name": ANN, "admin": True}
    status, message = refused(server, ANN, "POST", "/v1/admin/accounts", make_admin)
    assert status == 403 and "only admins" in message
    before = server.state()
    for value in ("false", "true", 0, 1, [], {}):
        status, answer = server.call("POST", "/v1/admin/accounts", {**make_admin, "admin": value})
        assert status == 400 and "JSON boolean" in answer["error"], (value, answer)
    assert server.state() == before
    assert server.as_user(ANN, "GET", "/v1/whoami")[1]["admin"] is False


@pytest.mark.parametrize("body", [
    {"target": "account", "op": "set", "name": "nlp", "shares": float("inf")},
    {"target": "account", "op": "set", "name": "nlp", "shares": "3"},
    {"target": "account", "op": "add", "name": ["x"]},
    {"target": "account", "op": "add", "name": "x", "parent": {"a": 1}},
    {"target": "budget", "op": "set", "scope": "account", "name": "nlp", "limit": 1e308 * 10},
    {"target": "user", "op": "set", "name": ANN, "max_jobs": True},
], ids=["inf-shares", "string-shares", "list-name", "dict-parent", "inf-limit", "bool-limit"])
def test_admin_requests_with_bad_values_are_refused_whole(server: ApiServer,
                                                          body: dict[str, Any]) -> None:
    before = server.state()
    status, answer = server.call("POST", "/v1/admin/accounts", body)
    assert status == 400 and "\n" not in answer["error"], answer
    assert server.state() == before


# ------------------------------------------------------------------------------ limits


@pytest.mark.parametrize(("fields", "status", "words"), [
    ({"array": "0-9999"}, 400, "max_array_size"),
    ({"array": "0-1000"}, 400, "more than 1,000 tasks (max_array_size)"),
    ({"command": ["echo", "x" * 70_000]}, 400, "max_command_bytes"),
    ({"command": ["echo", "x" * (2 << 20)]}, 413, "max_request_bytes"),
    ({"env": {f"V{i}": "x" * 1000 for i in range(80)}}, 400, "max_env_bytes"),
    ({"name": "x" * 129}, 400, "at most 128 characters"),
    ({"name": "\x1b[2J\x1b[31mowned"}, 400, "U+001B"),
    ({"name": "evil\u202etxt.exe"}, 400, "U+202E"),
    ({"name": "two\u2028lines"}, 400, "U+2028"),
    ({"account": "vision\u200b"}, 400, "bad --account"),
    ({"workdir": "/tmp/\nx"}, 400, "U+000A"),
    ({"command": ["echo", "a\x00b"]}, 400, "U+0000"),
    ({"token": "t" * 200}, 400, "token must be at most 128"),
    ({"requeue": "false"}, 400, "JSON boolean"),
    ({"return_jobs": "yes"}, 400, "JSON boolean"),
    ({"gpus": 1.5}, 400, "must be a whole number"),
], ids=["array-10000", "array-1001", "command-70k", "body-2M", "env-80k", "name-long",
        "name-escape", "name-bidi", "name-line-sep", "account-zero-width", "workdir-newline",
        "command-nul", "token-long", "requeue-string", "return-jobs-string", "gpus-half"])
def test_limits_are_refused_with_the_limit_named(server: ApiServer, fields: dict[str, Any],
                                                 status: int, words: str) -> None:
    got, message = refused(server, ANN, "POST", "/v1/jobs", {**JOB, **fields})
    assert got == status and words in message, message


@pytest.mark.parametrize(("raw", "words"), [
    ('{"command": ["x"], "gpus": NaN}', "NaN"),
    ('{"command": ["x"], "gpus": Infinity}', "Infinity"),
    ('["not", "an", "object"]', "must be a JSON object"),
    ('{"command": ["\\ud800"]}', "lone surrogate"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("{not json", "not valid JSON"),
])
def test_malformed_bodies_are_refused(server: ApiServer, raw: str, words: str) -> None:
    assert words in refused(server, ANN, "POST", "/v1/jobs", raw=raw)[1]


def test_unknown_routes_and_methods_answer_json(server: ApiServer) -> None:
    status, message = refused(server, ANN, "GET", "/v1/nothing-here")
    assert status == 404 and "/openapi.json" in message
    assert refused(server, ANN, "DELETE", "/v1/jobs")[0] == 405


def test_one_users_pending_jobs_are_capped(valkey_url: str, users: None) -> None:
    srv = ApiServer(valkey_url, max_pending_jobs=5).start()
    try:
        assert srv.as_user(BEN, "POST", "/v1/jobs", {**JOB, "array": "0-3"})[0] == 200
        status, message = refused(srv, BEN, "POST", "/v1/jobs", {**JOB, "array": "0-1"})
        assert status == 429 and "has 4 waiting jobs and may have 5 (max_pending_jobs)" in message
        assert srv.as_user(BEN, "POST", "/v1/jobs", JOB)[0] == 200  # the fifth fits
        assert srv.as_user(ANN, "POST", "/v1/jobs", {**JOB, "array": "0-4"})[0] == 200  # per user
    finally:
        srv.stop()


# ------------------------------------------------------------------------------ private data


def test_other_users_jobs_show_only_their_public_part(server: ApiServer) -> None:
    secret = submit(server, BEN, command=["python", "secret-plan.py"], workdir="/srv/ben-thesis",
                    env={"HF_TOKEN": "hf_123"}, name="ben-run")
    job_id = secret["id"]
    for path in (f"/v1/jobs/{job_id}", "/v1/jobs?all=1", f"/v1/jobs?user={BEN}"):
        status, answer = server.as_user(ANN, "GET", path)
        assert status == 200
        job = answer if isinstance(answer, dict) else next(j for j in answer if j["id"] == job_id)
        assert job["command"] is None and job["workdir"] is None and job["env"] is None
        assert job["private"] is True
        assert (job["user"], job["state"], job["gpus"]) == (BEN, "PENDING", 1)
        assert job["submitted_at"] > 0
        assert "secret-plan" not in str(answer) and "HF_TOKEN" not in str(answer)
    own = server.as_user(BEN, "GET", f"/v1/jobs/{job_id}")[1]
    assert own["command"] == ["python", "secret-plan.py"] and own["private"] is False
    assert server.call("GET", f"/v1/jobs/{job_id}")[1]["workdir"] == "/srv/ben-thesis"  # admin


def test_other_users_usage_and_priority_factors_are_private(server: ApiServer) -> None:
    submit(server, BEN)
    status, message = refused(server, ANN, "GET", f"/v1/quota?user={BEN}")
    assert status == 403 and "private" in message
    assert server.as_user(BEN, "GET", f"/v1/quota?user={BEN}")[0] == 200
    assert "bad user name" in refused(server, ANN, "GET", "/v1/quota?user=%0Ax")[1]
    rows = server.as_user(ANN, "GET", "/v1/priority?all=1")[1]
    others = [r for r in rows if r["user"] == BEN]
    assert others and all(r["factors"] is None and r["priority"] is None for r in others)
    mine = server.as_user(BEN, "GET", "/v1/priority")[1]
    assert mine and all(r["factors"] is not None for r in mine)


def test_private_data_off_shows_everything(valkey_url: str, users: None) -> None:
    srv = ApiServer(valkey_url, private_data=False, enforce_accounts=False).start()
    try:
        status, answer = srv.as_user(BEN, "POST", "/v1/jobs",
                                     {**JOB, "account": "any-label", "return_jobs": True})
        assert status == 200 and answer["jobs"][0]["account"] == "any-label"  # open behaviour
        job = srv.as_user(ANN, "GET", f"/v1/jobs/{answer['ids'][0]}")[1]
        assert job["command"] == JOB["command"] and job["private"] is False
        assert srv.as_user(ANN, "GET", f"/v1/quota?user={BEN}")[0] == 200
        assert refused(srv, BEN, "POST", "/v1/jobs", {**JOB, "account": "root"})[0] == 403
    finally:
        srv.stop()


def test_what_runs_on_a_gpu_is_private_but_that_it_is_busy_is_not(server: ApiServer) -> None:
    from scheduler.model import GpuInfo, GpuProcess, NodeReport

    busy = GpuInfo(index=0, uuid="GPU-pv-0", model="NVIDIA A100-SXM4-80GB",
                   memory_total_bytes=1 << 30, memory_used_bytes=1 << 20, utilization=0.5,
                   processes=[GpuProcess(pid=4242, used_memory_bytes=1 << 20,
                                         name="bens-secret-model", labq_job=None)])
    server.run(server.store.heartbeat(NodeReport(name="pv", gpus=[busy], simulated=True),
                                      time.time()))
    status, nodes = server.as_user(ANN, "GET", "/v1/nodes")
    assert status == 200
    node = next(n for n in nodes if n["name"] == "pv")
    [proc] = node["gpus"][0]["processes"]
    assert (proc["pid"], proc["name"]) == (4242, None)  # busy, by something not hers
    assert node["foreign_processes"] == [{"gpu": 0, "pid": 4242, "name": None}]
    assert "bens-secret-model" not in str(nodes)
    admin = next(n for n in server.call("GET", "/v1/nodes")[1] if n["name"] == "pv")
    assert admin["gpus"][0]["processes"][0]["name"] == "bens-secret-model"  # root: an admin
