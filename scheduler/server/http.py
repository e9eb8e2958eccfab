"""The API's HTTP plumbing: one-line JSON errors for every refusal, strict JSON bodies, and
the path and query values handlers read."""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions as redis_errors
from aiohttp import web

from scheduler.server.identity import UnknownUser
from scheduler.server.validation import InputError

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_REQUEST_BYTES = web.AppKey("max_request_bytes", int)
_MAX_DIGITS = sys.get_int_max_str_digits() or 4300


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InputError as exc:
        return _error(400, str(exc))
    except ApiError as exc:
        return _error(exc.status, str(exc))
    except UnknownUser as exc:
        return _error(403, str(exc))
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_REQUEST_BYTES]
        return _error(413, f"request body is over the limit of {limit:,} bytes "
                           "(max_request_bytes): put long input in a file")
    except web.HTTPException as exc:  # aiohttp's own: unknown route, wrong method
        if exc.status < 400:
            raise
        return _error(exc.status, f"{request.method} {request.path}: {exc.reason}; see "
                                  "GET /openapi.json for the routes")
    except (redis_errors.ConnectionError, redis_errors.TimeoutError,
            redis_errors.BusyLoadingError) as exc:
        # The store is down, restarting or failing over: nothing was done; the CLI tries again.
        log.warning("%s %s: the store did not answer: %s", request.method, request.path,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return web.json_response(
            {"error": "the store is not answering (restarting or failing over?): nothing "
                      "was done; try again in a moment"}, status=503,
            headers={"Retry-After": "1"})


def _no_constants(name: str) -> Any:
    raise InputError(f"request body has {name}, which JSON does not allow: send a number")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_unicode(value: Any) -> None:
    """Refuse lone surrogates (valid in JSON escapes, not in UTF-8: nothing could store them)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise InputError("request body has text with a lone surrogate (\\udXXX), which "
                                 "is not Unicode: send UTF-8 text")
        elif isinstance(item, dict):
            todo += list(item) + list(item.values())
        elif isinstance(item, list):
            todo += item


def _finite(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise InputError(f"request body has the number {_shown(text)}, too large for a "
                         "number here: send a smaller one")
    return value


def _shown(text: str, most: int = 24) -> str:
    return text if len(text) <= most else f"{text[:most]}... ({len(text):,} characters)"


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (strict: no NaN or Infinity, no number too large to
    read, valid Unicode only)."""
    raw = await request.read()
    try:
        body = json.loads(raw, parse_constant=_no_constants, parse_float=_finite)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError("request body is not valid JSON") from None
    except RecursionError:
        raise InputError("request body is nested too deeply") from None
    except InputError:
        raise
    except ValueError:  # an integer past Python's digit limit (sys.get_int_max_str_digits)
        raise InputError(f"request body has an integer of over {_MAX_DIGITS:,} digits: send "
                         "a smaller number") from None
    if not isinstance(body, dict):
        raise InputError("request body must be a JSON object")
    _check_unicode(body)
    return body


_JOB_ID_TEXT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def job_id_of(text: str) -> str:
    """A job id as typed; anything that cannot be one is no job (and is not echoed raw)."""
    if not _JOB_ID_TEXT.match(text):
        shown = text if len(text) <= 64 else text[:64] + "..."
        raise ApiError(404, f"no job {shown!r}: job ids are numbers; see `labq queue --all`")
    return text


_QUERY_INT = re.compile(r"^[+-]?[0-9]{1,18}$")


def int_query(request: web.Request, name: str, default: int) -> int:
    """A whole number in the query (ASCII digits, 18 at most); below 0 counts as 0."""
    text = request.query.get(name)
    if text is None:
        return default
    if not _QUERY_INT.match(text):
        raise InputError(f"?{name}={_shown(text)!r} must be a whole number of at most 18 digits")
    return max(0, int(text))
