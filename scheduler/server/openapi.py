"""The API's OpenAPI description (served at /openapi.json; the fuzz tests read it too). The
submit request and the job record come from scheduler.wire."""

from __future__ import annotations

from typing import Any

from scheduler.wire import job_schema, submit_schema

_ERROR = {"description": "Refused: one line saying what is wrong and what to do",
          "content": {"application/json": {"schema": {
              "type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}}}}}
_OK = {"description": "OK", "content": {"application/json": {"schema": {}}}}
_JOB_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_NODE = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_DRAIN = {"type": "object", "required": ["reason"],
          "properties": {"reason": {"type": "string", "maxLength": 200}},
          "additionalProperties": False}


def _query(*names: str) -> list[dict[str, Any]]:
    kinds = {"all": {"enum": ["0", "1"]}, "done": {"enum": ["0", "1"]},
             "limit": {"type": "integer"}, "offset": {"type": "integer"},
             "since": {"type": "number"}, "until": {"type": "number"}}
    return [{"name": n, "in": "query", "required": False,
             "schema": kinds.get(n, {"type": "string"})} for n in names]


def _op(summary: str, *, body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None, ok: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params or [],
                          "responses": {"200": ok or _OK, "4XX": _ERROR}}
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": body}}}
    return op


_SUBMIT = submit_schema()
_ADMIN = {
    "type": "object", "required": ["target", "op"],
    "properties": {
        "target": {"enum": ["account", "user", "budget"]},
        "op": {"enum": ["add", "set", "rm", "topup"]},
        "name": {"type": "string"}, "parent": {"type": ["string", "null"]},
        "shares": {"type": ["number", "null"]}, "account": {"type": ["string", "null"]},
        "default_account": {"type": ["string", "null"]}, "admin": {"type": ["boolean", "null"]},
        "max_running_gpus": {"type": ["integer", "string", "null"]},
        "max_jobs": {"type": ["integer", "string", "null"]},
        "scope": {"enum": ["account", "user"]}, "limit": {"type": "number"},
        "add": {"type": "number"}, "period": {"type": ["string", "null"]},
    }}
_EMPTY = {"type": "object"}
_TOKEN = {"type": "object", "required": ["user"], "properties": {
    "user": {"type": "string"},
    "expires_s": {"type": "number", "description": "seconds from now; 0: never (default 90 "
                                                   "days)"}}}
_UPDATE = {"type": "object", "additionalProperties": False, "properties": {
    "time": {"type": "string"}, "name": {"type": "string"}, "gpus": {"type": "integer"},
    "gpu_type": {"type": ["string", "null"]}, "dependency": {"type": "string"},
    "account": {"type": "string"}, "qos": {"type": "string"}, "requeue": {"type": "boolean"},
}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "labq coordinator API", "version": "1",
             "description": "On a Unix socket: the caller is the peer uid. Over TCP (api_port) "
                            "every request carries `Authorization: MUNGE <credential>` (its "
                            "payload: labq-api-1, method, path and query, sha256 of the body, "
                            "each on a line, then a 32-hex-digit nonce) or `Authorization: "
                            "Bearer <API token>`. Every refusal is a 4xx with {\"error\": one "
                            "line}."},
    "paths": {
        "/v1/whoami": {"get": _op("The caller as the coordinator sees it (peer uid)")},
        "/v1/jobs": {
            "post": _op("Submit a job, a batch script (`script`, its arguments in `command`) "
                        "or an array (`array`: 0-99%8, one record)", body=_SUBMIT),
            "get": _op("The queue (?all=1, ?user=U, ?done=1&done_limit=N, ?expand=1: each "
                       "array task on its own line), in id order, at most ?limit= lines "
                       "(1,000 at most) after the id ?after=; no commands or environments; others' "
                       "commands, work directories and usage are null (private_data)",
                       params=_query("all", "user", "done", "done_limit", "limit", "after",
                                     "expand"),
                       ok={"description": "OK", "content": {"application/json": {
                           "schema": {"type": "array", "items": job_schema()}}}}),
        },
        "/v1/jobs/{id}": {"get": _op("One job, one array task (17_5), or an array as a whole "
                                     "(17: its state, highest exit code, tasks per state)",
                                     params=[_JOB_ID])},
        "/v1/jobs/{id}/cancel": {"post": _op("Cancel a job of yours (an array id: all its "
                                             "tasks)", params=[_JOB_ID], body=_EMPTY)},
        "/v1/jobs/{id}/update": {"post": _op(
            "Change a waiting job (time, name, gpus, gpu_type, dependency, account, qos, "
            "requeue), or a running job's time limit (down; admins also up)",
            params=[_JOB_ID], body=_UPDATE)},
        "/v1/jobs/{id}/requeue": {"post": _op("Stop a running job and queue it again",
                                              params=[_JOB_ID], body=_EMPTY)},
        "/v1/jobs/{id}/logs": {"get": _op("Where a job's output file is (its node and path)",
                                          params=[_JOB_ID])},
        "/v1/jobs/{id}/hold": {"post": _op("Hold a pending job (UserHold/AdminHold)",
                                           params=[_JOB_ID], body=_EMPTY)},
        "/v1/jobs/{id}/release": {"post": _op("Release a held job", params=[_JOB_ID],
                                              body=_EMPTY)},
        "/v1/nodes": {"get": _op("Nodes and their GPUs")},
        "/v1/quota": {"get": _op("Usage, fair share, budgets (?user=U&account=A&all=1)",
                                 params=_query("user", "account", "all"))},
        "/v1/priority": {"get": _op("Pending jobs' priority factors (?job=ID | ?all=1)",
                                    params=_query("job", "all"))},
        "/v1/history": {"get": _op(
            "Ended jobs from ?since= to ?until= (Unix seconds; default the last 7 days), from "
            "the hot store and the per-day history: the caller's own unless ?all=1 or ?user=; "
            "?account=, ?state=, ?name= (comma lists); the latest ?limit= (default 10,000), "
            "newest first; answers {since, until, complete, jobs}",
            params=_query("since", "until", "user", "account", "state", "name", "all",
                          "limit"))},
        "/v1/history/{id}": {"get": _op(
            "One job wherever it is kept: as GET /v1/jobs/{id} shows it, or from the history "
            "(`history` true; its command, environment, script and output paths null)",
            params=[_JOB_ID])},
        "/v1/report": {"get": _op(
            "GPU-seconds and billed units per account and user charged on the UTC days from "
            "?since= to ?until= (default the last 7 days), of ?user= and ?account=",
            params=_query("since", "until", "user", "account"))},
        "/v1/accounts": {"get": _op("The account tree, users and budgets in force")},
        "/v1/admin/accounts": {"post": _op("Admins: change accounts, users or budgets",
                                           body=_ADMIN)},
        "/v1/admin/tokens": {
            "post": _op("Root (or an operator): make an API token for a user; its text "
                        "(labq_<id>_<secret>) is in this answer only", body=_TOKEN),
            "get": _op("Admins: API tokens (id, user, created, expires; never secrets)",
                       params=_query("user")),
        },
        "/v1/admin/tokens/{id}/revoke": {"post": _op("Admins: revoke an API token",
                                                     params=[_JOB_ID], body=_EMPTY)},
        "/v1/admin/nodes/{name}/drain": {"post": _op(
            "Admins: drain a node (its jobs finish, nothing new starts there); answers "
            "{name, shown_state, drained_by, drain_reason, gpus_allocated, already}; 404 an "
            "unknown node", params=[_NODE], body=_DRAIN)},
        "/v1/admin/nodes/{name}/resume": {"post": _op(
            "Admins: let jobs start on a drained node again; answers {name, resumed, "
            "drained_by}; 409 a node nobody drained", params=[_NODE], body=_EMPTY)},
        "/v1/admin/nodes/{name}/remove": {"post": _op(
            "Admins: forget a retired node; answers {name, removed}; 409 while its agent "
            "reports or jobs hold it", params=[_NODE], body=_EMPTY)},
    },
}
