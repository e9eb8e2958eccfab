"""Settings: one object holding config.toml's sections (scheduler.config.sections), and the
flat names every module reads (`settings.node_timeout_s`), each an alias of one section's key.
Flags > environment (`LABQ_*`) > `$LABQ_HOME/config.toml` (else `/etc/labq/config.toml`) >
the sections' defaults."""

from __future__ import annotations

import dataclasses
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast, get_type_hints, overload

from scheduler.config.gpus import DEFAULT_BILLING_WEIGHTS, gpu_family
from scheduler.config.rules import ENV_PARSERS, ConfigError, Rule, wrong_type
from scheduler.config.sections import (
    ApiConfig,
    BillingConfig,
    FairshareConfig,
    IdleConfig,
    LimitsConfig,
    NodesConfig,
    NotifyConfig,
    PriorityConfig,
    ResourcesConfig,
    RetentionConfig,
    SchedulerConfig,
    StoreConfig,
)

T = TypeVar("T")


class _Route:
    """Records the attributes a flat name's getter reads: `s.nodes.timeout_s`."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __getattr__(self, name: str) -> _Route:
        self.names.append(name)
        return self


class Flat(Generic[T]):
    """A flat (legacy) name for one key of one section: read and written through."""

    def __init__(self, get: Callable[[Settings], T]) -> None:
        route = _Route()
        get(cast("Settings", route))
        self.section, self.key = route.names
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Flat[T]: ...
    @overload
    def __get__(self, obj: Settings, owner: type) -> T: ...
    def __get__(self, obj: Settings | None, owner: type) -> Flat[T] | T:
        if obj is None:
            return self
        return cast(T, getattr(getattr(obj, self.section), self.key))

    def __set__(self, obj: Settings, value: T) -> None:
        setattr(getattr(obj, self.section), self.key, value)


@dataclass(init=False)
class Settings:
    home: Path
    store: StoreConfig
    api: ApiConfig
    scheduler: SchedulerConfig
    nodes: NodesConfig
    fairshare: FairshareConfig
    priority: PriorityConfig
    billing: BillingConfig
    idle: IdleConfig
    notify: NotifyConfig
    limits: LimitsConfig
    retention: RetentionConfig
    resources: ResourcesConfig

    # The flat names (and top-level keys of a config.toml of earlier versions): each is one
    # section's key; its type, default, variable and rule are declared there, once.
    redis_url = Flat(lambda s: s.store.url)
    redis_prefix = Flat(lambda s: s.store.prefix)
    redis_username = Flat(lambda s: s.store.username)
    redis_password_file = Flat(lambda s: s.store.password_file)
    agent_redis_username = Flat(lambda s: s.store.agent_username)
    agent_redis_password_file = Flat(lambda s: s.store.agent_password_file)
    redis_sentinels = Flat(lambda s: s.store.sentinels)
    redis_sentinel_master = Flat(lambda s: s.store.sentinel_master)
    socket_path = Flat(lambda s: s.api.socket)
    api_host = Flat(lambda s: s.api.host)
    metrics_port = Flat(lambda s: s.api.metrics_port)
    api_port = Flat(lambda s: s.api.port)
    api_bind = Flat(lambda s: s.api.bind)
    tls_cert_file = Flat(lambda s: s.api.tls_cert_file)
    tls_key_file = Flat(lambda s: s.api.tls_key_file)
    munge_socket = Flat(lambda s: s.api.munge_socket)
    metrics_token_file = Flat(lambda s: s.api.metrics_token_file)
    admins = Flat(lambda s: s.api.admins)
    cycle_interval_s = Flat(lambda s: s.scheduler.cycle_interval_s)
    charge_interval_s = Flat(lambda s: s.scheduler.charge_interval_s)
    default_time_limit_s = Flat(lambda s: s.scheduler.default_time_limit_s)
    max_time_limit_s = Flat(lambda s: s.scheduler.max_time_limit_s)
    default_account = Flat(lambda s: s.scheduler.default_account)
    stop_grace_s = Flat(lambda s: s.scheduler.stop_grace_s)
    kill_invalid_depend = Flat(lambda s: s.scheduler.kill_invalid_depend)
    launch_timeout_s = Flat(lambda s: s.scheduler.launch_timeout_s)
    heartbeat_interval_s = Flat(lambda s: s.nodes.heartbeat_interval_s)
    node_timeout_s = Flat(lambda s: s.nodes.timeout_s)
    gpu_misuse_policy = Flat(lambda s: s.nodes.gpu_misuse_policy)
    confine_gpu_devices = Flat(lambda s: s.nodes.confine_gpu_devices)
    agent_state_dir = Flat(lambda s: s.nodes.state_dir)
    cgroup_root = Flat(lambda s: s.nodes.cgroup_root)
    foreign_gpu_policy = Flat(lambda s: s.nodes.foreign_gpu_policy)
    fairshare_algorithm = Flat(lambda s: s.fairshare.algorithm)
    usage_half_life_s = Flat(lambda s: s.fairshare.half_life_s)
    usage_reset = Flat(lambda s: s.fairshare.reset)
    semesters = Flat(lambda s: s.fairshare.semesters)
    fair_now_past_weight = Flat(lambda s: s.fairshare.fair_now_past_weight)
    priority_weights = Flat(lambda s: s.priority.weights)
    qos_factors = Flat(lambda s: s.priority.qos_factors)
    qos_names = Flat(lambda s: s.priority.qos_names)
    billing_weights = Flat(lambda s: s.billing.weights)
    scavenger_billing_factor = Flat(lambda s: s.billing.scavenger_factor)
    billing_cpu_weight = Flat(lambda s: s.billing.cpu)
    billing_mem_weight = Flat(lambda s: s.billing.mem)
    def_cpus_per_gpu = Flat(lambda s: s.resources.def_cpus_per_gpu)
    def_mem_per_gpu = Flat(lambda s: s.resources.def_mem_per_gpu)
    idle_gpu_policy = Flat(lambda s: s.idle.policy)
    idle_gpu_threshold = Flat(lambda s: s.idle.threshold)
    idle_gpu_after_s = Flat(lambda s: s.idle.after_s)
    idle_gpu_stop_after_s = Flat(lambda s: s.idle.stop_after_s)
    notify_command = Flat(lambda s: s.notify.command)
    notify_timeout_s = Flat(lambda s: s.notify.timeout_s)
    enforce_accounts = Flat(lambda s: s.limits.enforce_accounts)
    private_data = Flat(lambda s: s.limits.private_data)
    max_array_size = Flat(lambda s: s.limits.max_array_size)
    max_pending_jobs = Flat(lambda s: s.limits.max_pending_jobs)
    max_request_bytes = Flat(lambda s: s.limits.max_request_bytes)
    max_command_bytes = Flat(lambda s: s.limits.max_command_bytes)
    max_env_bytes = Flat(lambda s: s.limits.max_env_bytes)
    max_script_bytes = Flat(lambda s: s.limits.max_script_bytes)
    max_stored_jobs_per_user = Flat(lambda s: s.limits.max_stored_jobs_per_user)
    max_stored_bytes_per_user = Flat(lambda s: s.limits.max_stored_bytes_per_user)
    min_job_uid = Flat(lambda s: s.limits.min_job_uid)
    job_user_deny = Flat(lambda s: s.limits.job_user_deny)
    operators = Flat(lambda s: s.limits.operators)
    max_connections = Flat(lambda s: s.limits.max_connections)
    max_connections_per_uid = Flat(lambda s: s.limits.max_connections_per_uid)
    request_timeout_s = Flat(lambda s: s.limits.request_timeout_s)
    keepalive_s = Flat(lambda s: s.limits.keepalive_s)
    store_max_memory_bytes = Flat(lambda s: s.limits.store_max_memory_bytes)
    retention_s = Flat(lambda s: s.retention.keep_s)
    retention_jobs = Flat(lambda s: s.retention.keep_jobs)
    retention_history_s = Flat(lambda s: s.retention.history_s)

    def __init__(self, home: Path, **values: Any) -> None:
        """Each section's defaults, then `values`: whole sections (`nodes=NodesConfig(...)`,
        copied) or flat names (`node_timeout_s=20`). Nothing is checked: see `load`."""
        self.home = home
        for name, kind in SECTION_TYPES.items():
            given = values.pop(name, None)
            setattr(self, name, dataclasses.replace(given) if given is not None else kind())
        for name, value in values.items():
            if name not in SPECS:
                raise TypeError(f"Settings() got an unexpected keyword argument {name!r}")
            setattr(self, name, value)

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

    def job_uid_floor(self) -> int:
        """The lowest uid a job may run as: `min_job_uid`, else UID_MIN of /etc/login.defs
        (the first uid `useradd` gives a person), else 1000."""
        return self.min_job_uid or login_defs_uid_min()

    def agent_dir(self, node: str) -> Path:
        """Where the agent of `node` keeps its runners' directories."""
        return Path(self.agent_state_dir) if self.agent_state_dir else self.home / "agent" / node

    @classmethod
    def load(cls, home: str | Path | None = None, **overrides: Any) -> Settings:
        """The settings a daemon or the CLI runs with; ConfigError (one line) names every
        wrong key, type or range."""
        from scheduler import config as package  # (its SYSTEM_CONFIG: tests replace it)
        from scheduler.config.check import load_problems

        env = os.environ
        home_path = Path(home or env.get("LABQ_HOME") or Path.home() / ".labq").expanduser()
        values: dict[str, Any] = {}
        config_file = home_path / "config.toml"
        if not config_file.exists() and package.SYSTEM_CONFIG.exists():
            config_file = package.SYSTEM_CONFIG  # a node's or head's own, as systemd expects
        if config_file.exists():
            try:
                values.update(flatten(tomllib.loads(config_file.read_text()), config_file))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{config_file}: {exc}; fix or remove that file") from exc
            except PermissionError:
                pass  # the daemons' own (mode 0600): a user's CLI needs only the socket
        for spec in SPECS.values():
            if spec.env and env.get(spec.env):
                try:
                    values[spec.name] = ENV_PARSERS[spec.kind](env[spec.env])
                except ValueError:
                    raise ConfigError(f"{spec.env}={env[spec.env]!r} is not a valid "
                                      f"{spec.name}: fix or unset that environment "
                                      "variable") from None
        flags = {k: v for k, v in overrides.items() if v is not None}
        values.update(flags)
        unknown = sorted(set(values) - set(SPECS))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in {config_file}")
        for key, value in values.items():
            check_type(key, value, config_file)
            convert = SPECS[key].convert
            values[key] = convert(value) if convert else value
        if "qos_names" not in values and "qos_factors" in values:
            values["qos_names"] = tuple(values["qos_factors"])
        settings = cls(home=home_path, **values)
        problems = load_problems(settings, flags=set(flags))
        if problems:
            raise ConfigError(f"{'; '.join(problems)} (in {config_file} or LABQ_*)")
        return settings


SECTION_TYPES: dict[str, type[Any]] = {
    name: kind for name, kind in get_type_hints(Settings).items() if name != "home"}


@dataclass(frozen=True)
class Spec:
    """One setting, as its section declares it, under its flat name."""
    name: str
    section: str
    key: str
    field: dataclasses.Field[Any]

    @property
    def where(self) -> str:
        """As config.toml names it: `[nodes] timeout_s`."""
        return f"[{self.section}] {self.key}"

    @property
    def kind(self) -> str:
        return str(self.field.type)

    @property
    def env(self) -> str:
        return str(self.field.metadata["env"])

    @property
    def rule(self) -> Rule | None:
        return cast(Rule | None, self.field.metadata["rule"])

    @property
    def convert(self) -> Callable[[Any], Any] | None:
        return cast(Callable[[Any], Any] | None, self.field.metadata["convert"])

    def default(self) -> Any:
        f = self.field
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default


def _specs() -> dict[str, Spec]:
    out = {}
    for name, alias in vars(Settings).items():
        if isinstance(alias, Flat):
            section_fields = {f.name: f for f in dataclasses.fields(SECTION_TYPES[alias.section])}
            out[name] = Spec(name, alias.section, alias.key, section_fields[alias.key])
    return out


SPECS: dict[str, Spec] = _specs()  # by flat name
# config.toml's sections: each key of a section -> its flat name.
SECTIONS: dict[str, dict[str, str]] = {
    section: {f.name: next(s.name for s in SPECS.values()
                           if (s.section, s.key) == (section, f.name))
              for f in dataclasses.fields(kind)}
    for section, kind in SECTION_TYPES.items()}


def where(name: str) -> str:
    """A setting as config.toml names it: `[api] metrics_port` (else the name itself)."""
    spec = SPECS.get(name)
    return spec.where if spec else name


def flatten(data: dict[str, Any], source: Path) -> dict[str, Any]:
    """Settings by flat name from a parsed config.toml (sections, or top-level full names)."""
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


def check_type(name: str, value: Any, source: Path | str) -> None:
    """Refuse, in one line, a setting whose value is not of its declared type."""
    expected = wrong_type(SPECS[name].kind, value)
    if expected:
        raise ConfigError(f"{where(name)} = {value!r} in {source}: expected {expected}")


_UID_MIN_READ: dict[str, tuple[float, int]] = {}  # path -> (when read, UID_MIN)
UID_MIN_TTL_S = 60.0  # login.defs is read again at most once a minute (not on every submit)


def login_defs_uid_min(path: str = "/etc/login.defs") -> int:
    """UID_MIN from login.defs (1000 where it is missing or unreadable), read at most once a
    minute: the API checks it for every submitted job."""
    now = time.monotonic()
    known = _UID_MIN_READ.get(path)
    if known is not None and now - known[0] < UID_MIN_TTL_S:
        return known[1]
    value = _read_uid_min(path)
    _UID_MIN_READ[path] = (now, value)
    return value


def _read_uid_min(path: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "UID_MIN" and words[1].isdigit():
                return int(words[1])
    except OSError:
        pass
    return 1000


__all__ = ["DEFAULT_BILLING_WEIGHTS", "SECTIONS", "SPECS", "Settings", "Spec", "where"]
