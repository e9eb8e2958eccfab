"""What a setting's value may be: its type (from the field's annotation) and its range (a rule
the field declares). Each check answers what is wrong, in words for one line, or None."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """The configuration cannot be used as written."""


Rule = Callable[[Any], str | None]  # a value -> what is wrong with it (None: nothing)

REDIS_SCHEMES = ("redis", "rediss", "unix")
PRIORITY_WEIGHT_KEYS = ("fairshare", "age", "size", "qos", "max_age_s")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")  # as accounts' names
_PREFIX = re.compile(r"[A-Za-z0-9_.:@-]*")


def real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def above(least: float, what: str = "seconds") -> Rule:
    def rule(value: Any) -> str | None:
        return None if real(value) and value > least else f"give {what} above {least:g}"
    return rule


def whole(least: int, most: int | None = None, what: str = "a whole number") -> Rule:
    def rule(value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= least and (
                most is None or value <= most):
            return None
        return f"give {what} from {least} to {most}" if most is not None else \
            f"give {what} of at least {least}"
    return rule


PORT = whole(0, 65535, "a port")
SECONDS = above(0)


def fraction(value: Any) -> str | None:
    return None if real(value) and 0 <= value <= 1 else "give a number from 0 to 1"


def one_of(*choices: str) -> Rule:
    def rule(value: Any) -> str | None:
        return None if value in choices else f"use {' or '.join(choices)}"
    return rule


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "use true or false"


def absolute_path(value: Any) -> str | None:
    """"" (the default) or an absolute path: a daemon's working directory is no place to
    look for its files."""
    if value in ("", None) or (isinstance(value, str | Path) and Path(value).is_absolute()):
        return None
    return "give an absolute path (from /)"


def names(value: Any) -> str | None:
    if isinstance(value, list | tuple) and all(isinstance(v, str) and v.strip() for v in value):
        return None
    return "give a list of names (none empty)"


def host_ports(value: Any) -> str | None:
    """A list of host:port (Sentinels)."""
    if isinstance(value, list | tuple) and all(
            isinstance(v, str) and v.rpartition(":")[0] and v.rpartition(":")[2].isdigit()
            and 0 < int(v.rpartition(":")[2]) < 65536 for v in value):
        return None
    return 'give a list of host:port, e.g. ["10.0.0.1:26379", "10.0.0.2:26379"]'


def host(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "give a host name or address"


def account_name(value: Any) -> str | None:
    if isinstance(value, str) and _NAME.match(value) and value != "root":
        return None
    return "give an account name (letters, digits, _ . @ -; not root)"


def cgroup_root(value: Any) -> str | None:
    if value in ("auto", "none") or (isinstance(value, str) and value.startswith("/")):
        return None
    return 'use "auto", "none" or an absolute directory of the cgroup v2 tree'


def redis_url(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        return "give a URL"
    url = urlsplit(value)
    if url.scheme not in REDIS_SCHEMES:
        return "use redis://HOST:PORT/DB, rediss://... (TLS) or unix:///PATH/TO/SOCKET"
    if url.password:
        return ("holds a password: put it in a file of mode 0600 named by [store] "
                "password_file (redis_password_file), and the user in [store] username")
    return None


def redis_prefix(value: Any) -> str | None:
    if isinstance(value, str) and _PREFIX.fullmatch(value):
        return None
    return "only letters, digits and _ . : @ - (it becomes a pattern in the store's ACL rules)"


def shown(value: Any) -> str:
    text = repr(str(value) if isinstance(value, Path) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def table_of(rule: Rule, what: str) -> Rule:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return "give a table"
        bad = [f"{k} = {shown(v)}" for k, v in sorted(value.items()) if rule(v) is not None]
        return f"{', '.join(bad)}: {what}" if bad else None
    return check


def priority_weights(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "give a table"
    extra = sorted(set(value) - set(PRIORITY_WEIGHT_KEYS))
    if extra:
        return f"unknown weight(s) {', '.join(extra)} (known: {', '.join(PRIORITY_WEIGHT_KEYS)})"
    return table_of(lambda v: None if real(v) and v >= 0 else "x",
                    "give numbers of zero or more")(value)


_PAIRS = 'give [start, end] date pairs, e.g. [["2026-09-01", "2027-01-31"]]'


def semesters(value: Any) -> str | None:
    if not isinstance(value, list):
        return _PAIRS
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            return _PAIRS
        try:
            start, end = (dt.date.fromisoformat(str(day)) for day in pair)
        except ValueError:
            return f"{pair!r}: give dates as YYYY-MM-DD"
        if end < start:
            return f"{pair!r}: the end comes before the start"
    return None


def wrong_type(kind: str, value: Any) -> str | None:
    """What a value of a field annotated `kind` should have been ("a number"), or None."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind.startswith("str") or kind.startswith("Path"):
        ok = isinstance(value, str | Path) or (kind.endswith("None") and value is None)
        return None if ok else "a string"
    if kind == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else \
            "a whole number"
    if kind == "float":
        return None if number else "a number"
    if kind == "bool":
        return None if isinstance(value, bool) else "true or false"
    if kind in ("list[str]", "tuple[str, ...]"):
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        return None if ok else "a list of strings"
    if kind == "list[list[str]]":
        ok = isinstance(value, list) and all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(d, str) for d in v)
            for v in value)
        return None if ok else \
            'a list of [start, end] date pairs, e.g. [["2026-09-01", "2027-01-31"]]'
    if kind == "dict[str, float]":
        ok = isinstance(value, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values())
        return None if ok else "a table of numbers"
    raise TypeError(f"no type check for a setting of type {kind}")


def yes_no(text: str) -> bool:
    value = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    try:
        return value[text.strip().lower()]
    except KeyError:
        raise ValueError(text) from None


def comma_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


# How an environment variable's text becomes a value of the field's type.
ENV_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": str, "str | None": str, "Path | None": str, "int": int, "float": float,
    "bool": yes_no, "list[str]": comma_list,
}
