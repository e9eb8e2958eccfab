"""Settings: flags > environment (`LABQ_*`) > `$LABQ_HOME/config.toml` (else
`/etc/labq/config.toml`) > defaults."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Billing weight per GPU family: how many billing units one GPU-second costs.
DEFAULT_BILLING_WEIGHTS: dict[str, float] = {
    "B200": 6.0, "H200": 5.0, "H100": 4.0, "A100": 3.0, "L40S": 2.5, "A6000": 2.0,
    "L40": 2.0, "A40": 2.0, "V100": 1.5, "RTX4090": 1.5, "RTX3090": 1.0, "A10": 1.0,
    "L4": 1.0, "T4": 0.5,
}
_FAMILY = re.compile(
    r"(?<![A-Z0-9])(B200|H200|H100|A100|L40S|L40|A6000|A40|A10|V100|L4|T4|RTX\s?\d{4})(?!\d)", re.I
)


def gpu_family(model: str) -> str:
    """`NVIDIA A100-SXM4-80GB` -> `A100`; `GeForce RTX 3090` -> `RTX3090`; else the model."""
    match = _FAMILY.search(model)
    return match.group(1).upper().replace(" ", "") if match else model.upper()


def gpu_type_matches(requested: str, model: str) -> bool:
    """A requested type matches a model by exact name or by family (`a100` fits `A100-80GB`)."""
    req = requested.strip().upper().replace(" ", "")
    return req in (model.upper().replace(" ", ""), gpu_family(model))


@dataclass
class Settings:
    home: Path
    redis_url: str | None = None
    redis_prefix: str = "labq:"
    # The store's ACL user and the file (mode 0600) holding its password; never the password
    # itself, nor in the URL. A node agent uses agent_redis_* when set (user name default
    # labq-agent-<node>), so one config.toml may serve a coordinator and an agent.
    redis_username: str = ""
    redis_password_file: str = ""
    agent_redis_username: str = ""
    agent_redis_password_file: str = ""
    socket_path: Path | None = None
    api_host: str = "127.0.0.1"
    # The TCP API for other hosts (0: none): callers prove their uid with a MUNGE credential,
    # or a per-user API token; TLS when both files are set.
    api_port: int = 0
    api_bind: str = "0.0.0.0"
    tls_cert_file: str = ""
    tls_key_file: str = ""
    munge_socket: str = ""  # "" = munged's default socket
    metrics_port: int = 9464
    heartbeat_interval_s: float = 2.0
    # A node whose agent is silent this long is DOWN and its jobs end NodeLost (or requeue);
    # Slurm's SlurmdTimeout. Its jobs keep running meanwhile: a restarted agent adopts them.
    node_timeout_s: float = 300.0
    cycle_interval_s: float = 1.0
    charge_interval_s: float = 5.0
    default_time_limit_s: int = 3600
    max_time_limit_s: int = 7 * 86400
    default_account: str = "default"
    admins: list[str] = field(default_factory=list)
    billing_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BILLING_WEIGHTS))
    qos_names: tuple[str, ...] = ("normal", "scavenger")
    fairshare_algorithm: str = "fair_now"  # or "fair_tree", "classic" (policy.fairnow, fairshare)
    # fair_now: the part (0..1) of the fair-share factor that is Fair Tree's on past usage
    fair_now_past_weight: float = 0.2
    semesters: list[list[str]] = field(default_factory=list)  # [["2026-09-01", "2027-01-31"]]
    scavenger_billing_factor: float = 0.0  # scavenger jobs run free on idle GPUs
    stop_grace_s: int = 10  # SIGTERM, then SIGKILL this much later (cancel, timeout, preempt)
    # Node agents: where they keep their runners' state ("" = $LABQ_HOME/agent/<node>), which
    # cgroup v2 directory they own ("auto": the agent's delegated cgroup under systemd, else
    # <cgroup2 mount>/labq/<node>; "none": no cgroups, a subreaper runner), and what a GPU on
    # which a process runs that labq did not start gets: "avoid" (no new job until it is free)
    # or "ignore".
    agent_state_dir: str = ""
    cgroup_root: str = "auto"
    foreign_gpu_policy: str = "avoid"
    usage_half_life_s: float = 7 * 86400.0
    usage_reset: str = "none"  # or month, semester: fair share forgets usage of past periods
    # keys: fairshare, age, size, qos, max_age_s (see policy.priority.PriorityWeights)
    priority_weights: dict[str, float] = field(default_factory=dict)
    qos_factors: dict[str, float] = field(
        default_factory=lambda: {"normal": 0.5, "scavenger": 0.0})
    # Idle GPUs (scheduler.coordinator.idle): allocated GPUs below this utilization this long.
    idle_gpu_threshold: float = 0.05
    idle_gpu_after_s: float = 1800.0
    idle_gpu_policy: str = "warn"  # "off" | "warn" (show, notify) | "stop" (also stop the job)
    idle_gpu_stop_after_s: float = 3600.0  # under "stop": idle this long, the job is stopped
    # An admin's command line (`sh -c`), run by the leader on idle events; the event's data
    # reaches it only as LABQ_NOTIFY_* environment variables, never inside the command text.
    notify_command: str = ""
    notify_timeout_s: float = 30.0
    # Security and limits (README "Security and limits"). Accounts enforced: a user charges
    # only their own accounts (a user not configured: `default_account` only); false is the
    # open behaviour (any account name that is not configured).
    enforce_accounts: bool = True
    private_data: bool = True  # others' commands, env, workdirs and usage hidden (non-admins)
    max_array_size: int = 1000
    max_pending_jobs: int = 5000  # per user, pending and held; 0: no cap
    max_request_bytes: int = 1 << 20  # one API request body
    max_command_bytes: int = 64 << 10  # a job's command, all words together
    max_env_bytes: int = 64 << 10  # a job's environment (exported and --env) names and values
    max_script_bytes: int = 256 << 10  # a batch script captured at submit
    # What one user may keep in the store: every job they have there (waiting, running and
    # ended, array tasks not made yet included) counts; 0: no cap.
    max_stored_jobs_per_user: int = 20_000
    # ...and the bytes of their commands, environments and scripts together (an ended job keeps
    # its command only); 0: no cap.
    max_stored_bytes_per_user: int = 256 << 20
    # Who a job may run as: never root, never a uid below min_job_uid (0: read UID_MIN from
    # /etc/login.defs, else 1000), never a user in job_user_deny. Acting for another user
    # (`--as`) is root's alone, or an operator's (an explicit list; every use is logged).
    min_job_uid: int = 0
    job_user_deny: list[str] = field(default_factory=list)
    operators: list[str] = field(default_factory=list)
    # The API's front door (per process): connections open at once in all and per uid,
    # seconds a client has to send a whole request, and keep-alive between requests.
    max_connections: int = 4096
    max_connections_per_uid: int = 64
    request_timeout_s: float = 10.0
    keepalive_s: float = 5.0
    # A job the coordinator started whose node never reports it running within this long ends
    # FAILED, reason LaunchTimeout (its GPUs are freed).
    launch_timeout_s: float = 300.0
    # The embedded Valkey's memory ceiling (`labq up`; maxmemory with noeviction: writes are
    # refused, never data evicted); 0: a quarter of the machine's memory.
    store_max_memory_bytes: int = 0
    # Under private_data, /metrics serves per-user series only to a scraper sending this file's
    # token (Authorization: Bearer); "" = $LABQ_HOME/secrets/metrics-token, made at start.
    metrics_token_file: str = ""
    # A job's process seen on a GPU it was not given: "stop" its job (reason GpuMisuse) or only
    # "warn"; either way no new job goes to that GPU until it is free. On cgroup v2 nodes a BPF
    # device program also refuses the job every GPU device but its own (confine_gpu_devices).
    gpu_misuse_policy: str = "stop"
    confine_gpu_devices: bool = True
    # A job whose dependency can never be met (afterok on a job that failed): cancelled at once
    # when true (Slurm's kill_invalid_depend); otherwise it waits, saying why, until changed.
    kill_invalid_depend: bool = False
    # Retention: a finished job stays in the store this long, and only the newest this many;
    # then the leader leaves a compact record of it in the history (see Store.expire_done),
    # kept this long after the day it ended. Usage and budgets never depend on either.
    retention_s: float = 30 * 86400.0
    retention_jobs: int = 100_000
    retention_history_s: float = 400 * 86400.0

    @property
    def socket(self) -> Path:
        return self.socket_path or self.home / "labq.sock"

    @property
    def run_file(self) -> Path:
        """Written by `labq up`: where its store and API are."""
        return self.home / "run.json"

    def billing_weight(self, model: str) -> float:
        family = gpu_family(model)
        weights = {k.upper(): v for k, v in self.billing_weights.items()}
        return weights.get(model.upper(), weights.get(family, 1.0))

    @classmethod
    def load(cls, home: str | Path | None = None, **overrides: Any) -> Settings:
        env = os.environ
        home_path = Path(home or env.get("LABQ_HOME") or Path.home() / ".labq").expanduser()
        values: dict[str, Any] = {}
        config_file = home_path / "config.toml"
        if not config_file.exists() and SYSTEM_CONFIG.exists():
            config_file = SYSTEM_CONFIG  # a node's or head's own, as the systemd units expect
        if config_file.exists():
            try:
                values.update(flatten(tomllib.loads(config_file.read_text()), config_file))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{config_file}: {exc}; fix or remove that file") from exc
            except PermissionError:
                pass  # the daemons' own (mode 0600): a user's CLI needs only the socket
        for key, env_name, conv in _ENV:
            if env.get(env_name):
                try:
                    values[key] = conv(env[env_name])
                except ValueError:
                    raise ConfigError(f"{env_name}={env[env_name]!r} is not a valid {key}: "
                                      "fix or unset that environment variable") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in {config_file}")
        for key, value in values.items():
            check_type(key, value, config_file)
        if "socket_path" in values and values["socket_path"]:
            values["socket_path"] = Path(values["socket_path"])
        if "billing_weights" in values:
            values["billing_weights"] = {**DEFAULT_BILLING_WEIGHTS, **values["billing_weights"]}
        if "qos_names" in values:
            values["qos_names"] = tuple(values["qos_names"])
        elif "qos_factors" in values:
            values["qos_names"] = tuple(values["qos_factors"])
        settings = cls(home=home_path, **values)
        _check_idle(settings)
        _check_fair_now(settings)
        _check_limits(settings)
        _check_store(settings)
        if settings.gpu_misuse_policy not in ("stop", "warn"):
            raise ConfigError(f"gpu_misuse_policy = {settings.gpu_misuse_policy!r}: use stop "
                              "or warn")
        if not isinstance(settings.confine_gpu_devices, bool):
            raise ConfigError("confine_gpu_devices: use true or false")
        if settings.foreign_gpu_policy not in ("avoid", "ignore"):
            raise ConfigError(f"foreign_gpu_policy = {settings.foreign_gpu_policy!r}: use avoid "
                              "or ignore")
        for key in ("request_timeout_s", "keepalive_s", "launch_timeout_s"):
            value = getattr(settings, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{key} = {value!r}: give a number of seconds above 0")
        if settings.node_timeout_s <= 0 or settings.stop_grace_s < 0:
            raise ConfigError("node_timeout_s must be > 0 and stop_grace_s >= 0 seconds")
        from scheduler.configcheck import settings_problems  # (it imports this module)

        problems = settings_problems(settings)  # every key's range (`labq config check`)
        if problems:
            raise ConfigError(f"{'; '.join(problems)} (in {config_file} or LABQ_*)")
        return settings

    def job_uid_floor(self) -> int:
        """The lowest uid a job may run as: `min_job_uid`, else UID_MIN of /etc/login.defs
        (the first uid `useradd` gives a person), else 1000."""
        return self.min_job_uid or login_defs_uid_min()

    def agent_dir(self, node: str) -> Path:
        """Where the agent of `node` keeps its runners' directories."""
        return Path(self.agent_state_dir) if self.agent_state_dir else self.home / "agent" / node


SYSTEM_CONFIG = Path("/etc/labq/config.toml")


class ConfigError(ValueError):
    """The configuration cannot be used as written."""


# config.toml is grouped in sections; each key of a section is one setting. (A file may also
# name settings at the top level by their full names, as earlier versions wrote them.)
SECTIONS: dict[str, dict[str, str]] = {
    "store": {"url": "redis_url", "prefix": "redis_prefix", "username": "redis_username",
              "password_file": "redis_password_file",
              "agent_username": "agent_redis_username",
              "agent_password_file": "agent_redis_password_file"},
    "api": {"socket": "socket_path", "host": "api_host", "metrics_port": "metrics_port",
            "port": "api_port", "bind": "api_bind", "tls_cert_file": "tls_cert_file",
            "tls_key_file": "tls_key_file", "munge_socket": "munge_socket",
            "metrics_token_file": "metrics_token_file",
            "admins": "admins"},
    "scheduler": {"cycle_interval_s": "cycle_interval_s",
                  "charge_interval_s": "charge_interval_s",
                  "default_time_limit_s": "default_time_limit_s",
                  "max_time_limit_s": "max_time_limit_s", "default_account": "default_account",
                  "stop_grace_s": "stop_grace_s",
                  "kill_invalid_depend": "kill_invalid_depend",
                  "launch_timeout_s": "launch_timeout_s"},
    "nodes": {"heartbeat_interval_s": "heartbeat_interval_s", "timeout_s": "node_timeout_s",
              "gpu_misuse_policy": "gpu_misuse_policy",
              "confine_gpu_devices": "confine_gpu_devices",
              "state_dir": "agent_state_dir", "cgroup_root": "cgroup_root",
              "foreign_gpu_policy": "foreign_gpu_policy"},
    "fairshare": {"algorithm": "fairshare_algorithm", "half_life_s": "usage_half_life_s",
                  "reset": "usage_reset", "semesters": "semesters",
                  "fair_now_past_weight": "fair_now_past_weight"},
    "priority": {"weights": "priority_weights", "qos_factors": "qos_factors",
                 "qos_names": "qos_names"},
    "billing": {"weights": "billing_weights", "scavenger_factor": "scavenger_billing_factor"},
    "idle": {"policy": "idle_gpu_policy", "threshold": "idle_gpu_threshold",
             "after_s": "idle_gpu_after_s", "stop_after_s": "idle_gpu_stop_after_s"},
    "notify": {"command": "notify_command", "timeout_s": "notify_timeout_s"},
    "limits": {"enforce_accounts": "enforce_accounts", "private_data": "private_data",
               "max_array_size": "max_array_size", "max_pending_jobs": "max_pending_jobs",
               "max_request_bytes": "max_request_bytes",
               "max_command_bytes": "max_command_bytes", "max_env_bytes": "max_env_bytes",
               "max_script_bytes": "max_script_bytes",
               "max_stored_jobs_per_user": "max_stored_jobs_per_user",
               "max_stored_bytes_per_user": "max_stored_bytes_per_user",
               "min_job_uid": "min_job_uid", "job_user_deny": "job_user_deny",
               "operators": "operators", "max_connections": "max_connections",
               "max_connections_per_uid": "max_connections_per_uid",
               "request_timeout_s": "request_timeout_s", "keepalive_s": "keepalive_s",
               "store_max_memory_bytes": "store_max_memory_bytes"},
    "retention": {"keep_s": "retention_s", "keep_jobs": "retention_jobs",
                  "history_s": "retention_history_s"},
}
_WHERE = {field: f"[{section}] {key}" for section, keys in SECTIONS.items()
          for key, field in keys.items()}
PRIORITY_WEIGHT_KEYS = ("fairshare", "age", "size", "qos", "max_age_s")


def flatten(data: dict[str, Any], source: Path) -> dict[str, Any]:
    """Settings by field name from a parsed config.toml (sections, or top-level full names)."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{name}] must be a section (a table of keys)")
            for key, item in value.items():
                if key not in SECTIONS[name]:
                    known = ", ".join(SECTIONS[name])
                    raise ConfigError(f"{source}: unknown key {key!r} in [{name}] (known: "
                                      f"{known})")
                out[SECTIONS[name][key]] = item
        else:
            out[name] = value
    return out


def login_defs_uid_min(path: str = "/etc/login.defs") -> int:
    """UID_MIN from login.defs (1000 where it is missing or unreadable)."""
    try:
        for line in Path(path).read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "UID_MIN" and words[1].isdigit():
                return int(words[1])
    except OSError:
        pass
    return 1000


def check_type(field_name: str, value: Any, source: Path | str) -> None:
    """Refuse, in one line, a setting whose value is not of the field's type."""
    kind = str(Settings.__dataclass_fields__[field_name].type)
    where = _WHERE.get(field_name, field_name)
    number = isinstance(value, int | float) and not isinstance(value, bool)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where} = {value!r} in {source}: expected {expected}")

    if kind.startswith("str") or kind.startswith("Path"):
        if not isinstance(value, str | Path) and not (kind.endswith("None") and value is None):
            raise bad("a string")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
    elif kind == "float":
        if not number:
            raise bad("a number")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
    elif kind in ("list[str]", "tuple[str, ...]"):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
    elif kind == "list[list[str]]":
        if not isinstance(value, list) or not all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(d, str) for d in v)
                for v in value):
            raise bad('a list of [start, end] date pairs, e.g. [["2026-09-01", "2027-01-31"]]')
    elif kind == "dict[str, float]":
        if not isinstance(value, dict) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()):
            raise bad("a table of numbers")
        if field_name == "priority_weights":
            extra = sorted(set(value) - set(PRIORITY_WEIGHT_KEYS))
            if extra:
                raise ConfigError(f"{where} in {source}: unknown weight(s) {', '.join(extra)} "
                                  f"(known: {', '.join(PRIORITY_WEIGHT_KEYS)})")


IDLE_POLICIES = ("off", "warn", "stop")


def _check_idle(s: Settings) -> None:
    where = "(config.toml or LABQ_IDLE_GPU_* / LABQ_NOTIFY_COMMAND)"
    if s.idle_gpu_policy not in IDLE_POLICIES:
        raise ConfigError(f"idle_gpu_policy = {s.idle_gpu_policy!r} {where}: use one of "
                          f"{', '.join(IDLE_POLICIES)}")
    if not 0.0 <= s.idle_gpu_threshold <= 1.0:
        raise ConfigError(f"idle_gpu_threshold = {s.idle_gpu_threshold} {where}: a utilization "
                          "ratio between 0 and 1, e.g. 0.05 for 5%")
    if s.idle_gpu_after_s <= 0:
        raise ConfigError(f"idle_gpu_after_s = {s.idle_gpu_after_s} {where}: give seconds > 0")
    if s.idle_gpu_stop_after_s < s.idle_gpu_after_s:
        raise ConfigError(f"idle_gpu_stop_after_s = {s.idle_gpu_stop_after_s} {where} must be at "
                          f"least idle_gpu_after_s = {s.idle_gpu_after_s}: a job is stopped only "
                          "after its GPUs have been reported idle")
    if s.notify_timeout_s <= 0:
        raise ConfigError(f"notify_timeout_s = {s.notify_timeout_s} {where}: give seconds > 0")


def _check_fair_now(s: Settings) -> None:
    if s.fairshare_algorithm not in ("fair_tree", "classic", "fair_now"):
        raise ConfigError(f"fairshare_algorithm = {s.fairshare_algorithm!r} (config.toml or "
                          "LABQ_FAIRSHARE): use fair_tree, classic or fair_now")
    w = s.fair_now_past_weight
    if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w <= 1:
        raise ConfigError(f"fair_now_past_weight = {w!r} (config.toml): give a number from 0 "
                          "to 1, e.g. 0.2")


def _check_limits(s: Settings) -> None:
    where = "(config.toml or LABQ_*)"
    for key in ("enforce_accounts", "private_data", "kill_invalid_depend"):
        if not isinstance(getattr(s, key), bool):
            raise ConfigError(f"{key} = {getattr(s, key)!r} {where}: use true or false")
    for key, least in (("max_array_size", 1), ("max_pending_jobs", 0), ("max_request_bytes", 1024),
                       ("max_command_bytes", 1), ("max_env_bytes", 0),
                       ("max_script_bytes", 1), ("max_stored_jobs_per_user", 0),
                       ("max_stored_bytes_per_user", 0),
                       ("min_job_uid", 0), ("max_connections", 16),
                       ("max_connections_per_uid", 1), ("store_max_memory_bytes", 0)):
        value = getattr(s, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{key} = {value!r} {where}: give a whole number of at least "
                              f"{least}")


REDIS_SCHEMES = ("redis", "rediss", "unix")


def _check_store(s: Settings) -> None:
    where = "(config.toml or LABQ_REDIS_*)"
    if s.redis_url:
        url = urlsplit(s.redis_url)
        if url.scheme not in REDIS_SCHEMES:
            raise ConfigError(f"redis_url {s.redis_url!r} {where}: use redis://HOST:PORT/DB, "
                              "rediss://... (TLS) or unix:///PATH/TO/SOCKET")
        if url.password:
            raise ConfigError(f"redis_url {where} holds a password: put it in a file of mode "
                              "0600 named by redis_password_file, and the user in redis_username")
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]*", s.redis_prefix):
        raise ConfigError(f"redis_prefix = {s.redis_prefix!r} {where}: only letters, digits and "
                          "_ . : @ - (it becomes a pattern in the store's ACL rules)")
    jobs = s.retention_jobs
    if s.retention_s <= 0 or s.retention_history_s <= 0 or isinstance(jobs, bool) or \
            not isinstance(jobs, int) or jobs < 0:
        raise ConfigError(f"retention_s = {s.retention_s!r} and retention_history_s = "
                          f"{s.retention_history_s!r} must be > 0 seconds and "
                          f"retention_jobs = {s.retention_jobs!r} a whole number >= 0 "
                          "(config.toml or LABQ_RETENTION*)")


def _bool(text: str) -> bool:
    value = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    try:
        return value[text.strip().lower()]
    except KeyError:
        raise ValueError(text) from None


_ENV: list[tuple[str, str, Any]] = [
    ("redis_url", "LABQ_REDIS_URL", str),
    ("redis_prefix", "LABQ_REDIS_PREFIX", str),
    ("redis_username", "LABQ_REDIS_USERNAME", str),
    ("redis_password_file", "LABQ_REDIS_PASSWORD_FILE", str),
    ("agent_redis_username", "LABQ_AGENT_REDIS_USERNAME", str),
    ("agent_redis_password_file", "LABQ_AGENT_REDIS_PASSWORD_FILE", str),
    ("retention_s", "LABQ_RETENTION", float),
    ("retention_jobs", "LABQ_RETENTION_JOBS", int),
    ("retention_history_s", "LABQ_RETENTION_HISTORY", float),
    ("agent_state_dir", "LABQ_AGENT_STATE_DIR", str),
    ("cgroup_root", "LABQ_CGROUP_ROOT", str),
    ("foreign_gpu_policy", "LABQ_FOREIGN_GPU_POLICY", str),
    ("socket_path", "LABQ_SOCKET", str),
    ("metrics_port", "LABQ_METRICS_PORT", int),
    ("api_port", "LABQ_API_PORT", int),
    ("node_timeout_s", "LABQ_NODE_TIMEOUT", float),
    ("fairshare_algorithm", "LABQ_FAIRSHARE", str),
    ("usage_half_life_s", "LABQ_HALF_LIFE", float),
    ("heartbeat_interval_s", "LABQ_HEARTBEAT_INTERVAL", float),
    ("idle_gpu_policy", "LABQ_IDLE_GPU_POLICY", str),
    ("idle_gpu_threshold", "LABQ_IDLE_GPU_THRESHOLD", float),
    ("idle_gpu_after_s", "LABQ_IDLE_GPU_AFTER", float),
    ("idle_gpu_stop_after_s", "LABQ_IDLE_GPU_STOP_AFTER", float),
    ("notify_command", "LABQ_NOTIFY_COMMAND", str),
    ("enforce_accounts", "LABQ_ENFORCE_ACCOUNTS", _bool),
    ("private_data", "LABQ_PRIVATE_DATA", _bool),
    ("max_array_size", "LABQ_MAX_ARRAY_SIZE", int),
    ("kill_invalid_depend", "LABQ_KILL_INVALID_DEPEND", _bool),
    ("gpu_misuse_policy", "LABQ_GPU_MISUSE_POLICY", str),
    ("max_stored_jobs_per_user", "LABQ_MAX_STORED_JOBS_PER_USER", int),
    ("max_stored_bytes_per_user", "LABQ_MAX_STORED_BYTES_PER_USER", int),
    ("operators", "LABQ_OPERATORS", lambda s: [x.strip() for x in s.split(",") if x.strip()]),
    ("max_pending_jobs", "LABQ_MAX_PENDING_JOBS", int),
    ("admins", "LABQ_ADMINS", lambda s: [x.strip() for x in s.split(",") if x.strip()]),
]
