"""Every check of labq's settings, in one place: the key names, their types and their ranges.

`settings_problems` is what `Settings.load` refuses a daemon's settings for (from the file, the
`LABQ_*` environment and flags together); `file_problems` is what `labq config check FILE`
prints: every wrong key, type or range of one config.toml, one line each, not only the first.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scheduler.config import (
    _WHERE,
    PRIORITY_WEIGHT_KEYS,
    REDIS_SCHEMES,
    SECTIONS,
    ConfigError,
    Settings,
    check_type,
)

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")  # as accounts' names
_PREFIX = re.compile(r"[A-Za-z0-9_.:@-]*")

Rule = Callable[[Any], str | None]  # a value -> what is wrong with it (None: nothing)


def where(key: str) -> str:
    """A setting as config.toml names it: `[api] metrics_port`."""
    return _WHERE.get(key, key)


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def above(least: float, what: str = "seconds") -> Rule:
    def rule(value: Any) -> str | None:
        return None if _real(value) and value > least else f"give {what} above {least:g}"
    return rule


def whole(least: int, most: int | None = None, what: str = "a whole number") -> Rule:
    def rule(value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= least and (
                most is None or value <= most):
            return None
        return f"give {what} from {least} to {most}" if most is not None else \
            f"give {what} of at least {least}"
    return rule


def fraction(value: Any) -> str | None:
    return None if _real(value) and 0 <= value <= 1 else "give a number from 0 to 1"


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
                "password_file, and the user in [store] username")
    return None


def redis_prefix(value: Any) -> str | None:
    if isinstance(value, str) and _PREFIX.fullmatch(value):
        return None
    return "only letters, digits and _ . : @ - (it becomes a pattern in the store's ACL rules)"


def table_of(rule: Rule, what: str) -> Rule:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return "give a table"
        bad = [f"{k} = {_shown(v)}" for k, v in sorted(value.items()) if rule(v) is not None]
        return f"{', '.join(bad)}: {what}" if bad else None
    return check


def priority_weights(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "give a table"
    extra = sorted(set(value) - set(PRIORITY_WEIGHT_KEYS))
    if extra:
        return f"unknown weight(s) {', '.join(extra)} (known: {', '.join(PRIORITY_WEIGHT_KEYS)})"
    return table_of(lambda v: None if _real(v) and v >= 0 else "x",
                    "give numbers of zero or more")(value)


def semesters(value: Any) -> str | None:
    if not isinstance(value, list):
        return 'give [start, end] date pairs, e.g. [["2026-09-01", "2027-01-31"]]'
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            return 'give [start, end] date pairs, e.g. [["2026-09-01", "2027-01-31"]]'
        try:
            start, end = (dt.date.fromisoformat(str(day)) for day in pair)
        except ValueError:
            return f"{pair!r}: give dates as YYYY-MM-DD"
        if end < start:
            return f"{pair!r}: the end comes before the start"
    return None


PORT = whole(0, 65535, "a port")
# Every setting's own rule (its type is checked first, by config.check_type).
RULES: dict[str, Rule] = {
    "redis_url": redis_url,
    "redis_prefix": redis_prefix,
    "redis_password_file": absolute_path,
    "agent_redis_password_file": absolute_path,
    "socket_path": absolute_path,
    "api_host": host,
    "api_port": PORT,
    "api_bind": host,
    "tls_cert_file": absolute_path,
    "tls_key_file": absolute_path,
    "munge_socket": absolute_path,
    "metrics_port": PORT,
    "metrics_token_file": absolute_path,
    "heartbeat_interval_s": above(0),
    "node_timeout_s": above(0),
    "cycle_interval_s": above(0),
    "charge_interval_s": above(0),
    "default_time_limit_s": whole(1, what="a whole number of seconds"),
    "max_time_limit_s": whole(1, what="a whole number of seconds"),
    "default_account": account_name,
    "admins": names,
    "operators": names,
    "job_user_deny": names,
    "billing_weights": table_of(lambda v: None if _real(v) and v > 0 else "x",
                                "billing weights must be numbers above 0"),
    "qos_names": names,
    "qos_factors": table_of(fraction, "give factors from 0 to 1"),
    "priority_weights": priority_weights,
    "fairshare_algorithm": one_of("fair_now", "fair_tree", "classic"),
    "fair_now_past_weight": fraction,
    "semesters": semesters,
    "scavenger_billing_factor": fraction,
    "stop_grace_s": whole(0, what="a whole number of seconds"),
    "agent_state_dir": absolute_path,
    "cgroup_root": cgroup_root,
    "foreign_gpu_policy": one_of("avoid", "ignore"),
    "usage_half_life_s": above(0),
    "usage_reset": one_of("none", "month", "semester"),
    "idle_gpu_threshold": fraction,
    "idle_gpu_after_s": above(0),
    "idle_gpu_policy": one_of("off", "warn", "stop"),
    "idle_gpu_stop_after_s": above(0),
    "notify_timeout_s": above(0),
    "enforce_accounts": boolean,
    "private_data": boolean,
    "kill_invalid_depend": boolean,
    "confine_gpu_devices": boolean,
    "gpu_misuse_policy": one_of("stop", "warn"),
    "max_array_size": whole(1),
    "max_pending_jobs": whole(0),
    "max_request_bytes": whole(1024),
    "max_command_bytes": whole(1),
    "max_env_bytes": whole(0),
    "max_script_bytes": whole(1),
    "max_stored_jobs_per_user": whole(0),
    "max_stored_bytes_per_user": whole(0),
    "min_job_uid": whole(0),
    "max_connections": whole(16),
    "max_connections_per_uid": whole(1),
    "request_timeout_s": above(0),
    "keepalive_s": above(0),
    "launch_timeout_s": above(0),
    "store_max_memory_bytes": whole(0),
    "retention_s": above(0),
    "retention_jobs": whole(0),
    "retention_history_s": above(0),
}


def _shown(value: Any) -> str:
    text = repr(str(value) if isinstance(value, Path) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def value_problems(values: Mapping[str, Any]) -> list[str]:
    """What is wrong with these settings (by field name), one line each: each value's range,
    then the rules between settings (taking defaults for those not given)."""
    out = []
    for key, value in values.items():
        rule = RULES.get(key)
        problem = rule(value) if rule else None
        if problem:  # a table names its wrong entries itself
            shown = "" if isinstance(value, dict) or key == "semesters" else \
                f" = {_shown(value)}"
            out.append(f"{where(key)}{shown}: {problem}")
    merged = {f.name: getattr(_DEFAULTS, f.name) for f in fields(Settings) if f.name != "home"}
    merged.update(values)

    def number(key: str) -> float | None:
        value: Any = merged.get(key)
        return float(value) if _real(value) and RULES[key](value) is None else None

    pairs = (("idle_gpu_stop_after_s", "idle_gpu_after_s", "at least",
              "a job is stopped only after its GPUs have been reported idle"),
             ("max_time_limit_s", "default_time_limit_s", "at least",
              "the default may not exceed the most"),
             ("node_timeout_s", "heartbeat_interval_s", "above",
              "a node is DOWN after missing heartbeats, never between two"))
    for big, small, relation, why in pairs:
        b, s = number(big), number(small)
        if b is not None and s is not None and (b < s or (relation == "above" and b == s)):
            out.append(f"{where(big)} = {b:g} must be {relation} {where(small)} = {s:g}: {why}")
    cert, key_file = merged.get("tls_cert_file"), merged.get("tls_key_file")
    if bool(cert) != bool(key_file) and isinstance(cert, str) and isinstance(key_file, str):
        out.append(f"{where('tls_cert_file')} and {where('tls_key_file')}: set both (TLS) or "
                   "neither")
    return out


_DEFAULTS = Settings(home=Path("/"))


def settings_problems(settings: Settings) -> list[str]:
    """What is wrong with loaded settings (the file, the environment and flags together)."""
    values = {f.name: getattr(settings, f.name) for f in fields(Settings) if f.name != "home"}
    return value_problems(values)


def file_problems(path: Path) -> list[str]:
    """Every problem of one config.toml, one line each: the file itself, unknown sections and
    keys, wrong types, then values out of range."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        return [f"cannot read {path}: {exc.strerror or exc}"]
    except UnicodeDecodeError:
        return [f"{path} is not UTF-8 text"]
    except tomllib.TOMLDecodeError as exc:
        return [f"not TOML: {exc}"]
    out: list[str] = []
    values: dict[str, Any] = {}
    known = set(Settings.__dataclass_fields__) - {"home"}
    for name, value in data.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                out.append(f"[{name}] must be a section (a table of keys)")
                continue
            for key, item in value.items():
                if key in SECTIONS[name]:
                    field = SECTIONS[name][key]
                    if field in data:
                        out.append(f"[{name}] {key} is set twice: also as {field} at the top")
                    values[field] = item
                else:
                    out.append(f"unknown key {key!r} in [{name}] (known: "
                               f"{', '.join(SECTIONS[name])})")
        elif name in known:
            values[name] = value
        elif isinstance(value, dict):
            out.append(f"unknown section [{name}] (known: {', '.join(SECTIONS)})")
        else:
            out.append(f"unknown key {name!r} (not a setting)")
    typed: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and str(Settings.__dataclass_fields__[key].type) == \
                "dict[str, float]":  # each entry on its own: the good ones are checked on
            wrong = {k: v for k, v in value.items() if not _real(v) and not isinstance(v, float)}
            out += [f"{where(key)}: {k} = {_shown(v)}: expected a number"
                    for k, v in wrong.items()]
            value = {k: v for k, v in value.items() if k not in wrong}
        try:
            check_type(key, value, path)
        except ConfigError as exc:
            out.append(str(exc).replace(f" in {path}", ""))
            continue
        typed[key] = value
    return out + value_problems(typed)
