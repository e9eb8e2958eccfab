"""The wire types (scheduler.wire) are what the API serves, and what its OpenAPI says."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import fields

import jsonschema
import pytest

from scheduler.server.openapi import OPENAPI
from scheduler.wire import JOB_FIELDS, OPTIONAL_JOB_FIELDS, JobJson, SubmitRequest, job_schema
from tests.security_server import ApiServer, ensure_user


@pytest.fixture(scope="module")
def server(valkey_url: str) -> Iterator[ApiServer]:
    ensure_user("alice")  # the job below is submitted for her: a known user of this host
    srv = ApiServer(valkey_url).start()
    yield srv
    srv.stop()


def test_the_api_serves_exactly_the_declared_job_record(server: ApiServer) -> None:
    request = SubmitRequest(command=["sleep", "1"], name="wire", workdir="/tmp",
                            env={"K": "v"}, token="wire-1", as_user="alice")
    status, answer = server.call("POST", "/v1/jobs", request.to_json())
    assert status == 200, answer
    status, job = server.call("GET", f"/v1/jobs/{answer['ids'][0]}")
    assert status == 200
    assert set(JOB_FIELDS) <= set(job) <= set(JOB_FIELDS) | set(OPTIONAL_JOB_FIELDS)
    jsonschema.validate(job, job_schema())  # the OpenAPI schema describes what is served
    assert job["env"] == ["K"]  # names only
    assert set(typing.get_type_hints(JobJson)) >= set(JOB_FIELDS)  # clients' view covers it


def test_openapi_uses_the_wire_schemas() -> None:
    post = OPENAPI["paths"]["/v1/jobs"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {f.name for f in fields(SubmitRequest)}
    listed = OPENAPI["paths"]["/v1/jobs"]["get"]["responses"]["200"]["content"]
    assert listed["application/json"]["schema"]["items"] == job_schema()
    jsonschema.validate(SubmitRequest(command=["true"]).to_json(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"command": "true"}, schema)


def test_the_openapi_document_lists_every_route_the_api_serves() -> None:
    from pathlib import Path
    from typing import Any

    from scheduler.config import Settings
    from scheduler.server.api import Api

    store: Any = None  # the routes are made without touching the store
    app = Api(store, Settings(Path("/nonexistent")), lambda: None).app()
    served = {(route.method.lower(), route.resource.canonical)
              for route in app.router.routes()
              if route.resource is not None and route.method != "HEAD"}
    documented = {(method, path) for path, ops in OPENAPI["paths"].items() for method in ops}
    assert served - {("get", "/openapi.json")} == documented
