"""The HTTP API fuzzed from its own OpenAPI description (schemathesis), and job specs fuzzed
field by field (hypothesis): every bad input gets a 4xx with a one-line message, never a 5xx,
and is refused whole (nothing half-written); every good one is stored exactly as sent."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scheduler.accounts.tree import Accounts
from scheduler.model import Job
from scheduler.server.openapi import OPENAPI
from tests.security_server import ApiServer

schema = schemathesis.openapi.from_dict(OPENAPI)
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def server(valkey_url: str) -> Iterator[ApiServer]:
    srv = ApiServer(valkey_url, nodes=(("n1", 4, "NVIDIA A100-SXM4-80GB"),
                                       ("n2", 2, "NVIDIA GeForce RTX 3090")),
                    max_array_size=20).start()
    srv.call("POST", "/v1/admin/accounts", {"target": "account", "op": "add", "name": "lab"})
    yield srv
    srv.stop()


def check_answer(status: int, answer: Any, what: str) -> None:
    assert status < 500, f"{what}: HTTP {status} {answer}"
    if status >= 400:
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str), (what, answer)
        assert answer["error"] and "\n" not in answer["error"], (what, answer)


@schema.parametrize()
@FUZZ
def test_every_operation_answers_bad_input_with_a_4xx_and_a_message(
        case: Any, server: ApiServer) -> None:
    """As root (an admin), so the admin operations are reached too."""
    sent = case.as_transport_kwargs(base_url="http://labq")
    path = urllib.parse.urlsplit(sent["url"]).path
    if sent.get("params"):
        path += "?" + urllib.parse.urlencode(sent["params"], doseq=True)
    raw = json.dumps(sent["json"]).encode() if "json" in sent else sent.get("data")
    if isinstance(raw, str):
        raw = raw.encode()
    status, answer = server.call(sent["method"], path, raw=raw)
    check_answer(status, answer, f"{case.method} {path} {raw!r:.300}")


def test_what_the_fuzzing_left_is_whole(server: ApiServer) -> None:
    """After any mix of requests: every queued job is a whole record, the account tree loads."""
    async def read() -> tuple[list[str], list[Job], Accounts]:
        active, waiting = await server.store.queue_ids()
        return active + waiting, await server.store.get_jobs(active + waiting), \
            await server.store.accounts()

    ids, jobs, accounts = server.run(read())
    assert len(jobs) == len(ids)  # no id without its job
    for job in jobs:
        assert job.command and job.gpus >= 1 and job.user and job.account
    for account in accounts.accounts.values():
        assert account.parent == "root" or account.parent in accounts.accounts


# ---------------------------------------------------------------------------- job specs

TEXT = st.text(max_size=40)
ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                        allow_infinity=False) | TEXT,
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)
# Each field: values a user may send (good and bad ones they would type), or any JSON at all.
FIELDS: dict[str, Any] = {
    "command": st.lists(st.sampled_from(["python", "train.py", "--lr", "3e-4"]) | TEXT,
                        min_size=1, max_size=4),
    "gpus": st.integers(-1, 9),
    "gpu_type": st.sampled_from(["A100", "a100", "RTX3090", "H100", ""]),
    "time": st.sampled_from(["30s", "2h", "1-00:00:00", "8d", "0", "soon"]),
    "account": st.sampled_from(["default", "root", "new-label", "a b", "lab"]),
    "qos": st.sampled_from(["normal", "scavenger", "urgent"]),
    "name": TEXT,
    "workdir": st.sampled_from(["/tmp", "relative", "/a\nb", "/data/x y"]),
    "env": st.dictionaries(st.sampled_from(["SEED", "LABQ_JOB_ID", "1X", "A-B", "LR"]) | TEXT,
                           TEXT, max_size=3),
    "array": st.integers(0, 22),
    "requeue": st.booleans(),
    "token": st.text(min_size=1, max_size=20),
    "as_user": st.sampled_from(["alice", "bad name", ""]),
}


@st.composite
def job_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A request body: most fields as a user would send them, sometimes one of any JSON."""
    body = draw(st.fixed_dictionaries({"command": FIELDS["command"]},
                                      optional={k: v for k, v in FIELDS.items()
                                                if k != "command"}))
    if draw(st.booleans()):
        body[draw(st.sampled_from(sorted(FIELDS)))] = draw(ANY_JSON)
    return body


@given(body=job_specs())
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_a_job_spec_is_stored_exactly_or_refused_whole(server: ApiServer,
                                                       body: dict[str, Any]) -> None:
    before = server.state()
    status, answer = server.call("POST", "/v1/jobs", {**body, "return_jobs": True})
    check_answer(status, answer, json.dumps(body)[:300])
    event(f"HTTP {status}")
    after = server.state()
    if status >= 400:
        assert after == before
        return
    new = {k: v for k, v in after["jobs"].items() if k not in before["jobs"]}
    if isinstance(body.get("token"), str) and body["token"] and not new:
        return  # a repeated token: the earlier jobs are the answer
    assert sorted(new) == sorted(answer["ids"])
    assert len(new) == int(body.get("array", 1))
    for job in new.values():
        assert job["command"] == body["command"] and job["state"] == "PENDING"
        assert job["name"] == (body.get("name") or "")
        assert job["env"] == (body.get("env") or {})
