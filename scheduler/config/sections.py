"""config.toml's sections, one dataclass each. A field is one key of its section, declared once:
its type (the annotation), its default, the `LABQ_*` environment variable that sets it, and the
rule its value must meet. Loading, `labq config check` and the daemons' refusal of a bad
config all read these declarations (scheduler.config.settings, scheduler.config.check)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from scheduler.config.gpus import DEFAULT_BILLING_WEIGHTS
from scheduler.config.rules import (
    PORT,
    SECONDS,
    Rule,
    above,
    absolute_path,
    account_name,
    boolean,
    fraction,
    host_ports,
    names,
    one_of,
    priority_weights,
    redis_prefix,
    redis_url,
    table_of,
    whole,
)
from scheduler.config.rules import (
    cgroup_root as cgroup_directory,
)
from scheduler.config.rules import (
    host as host_name,
)
from scheduler.config.rules import (
    semesters as semester_pairs,
)


def setting(default: Any = MISSING, *, factory: Callable[[], Any] | None = None, env: str = "",
            rule: Rule | None = None, convert: Callable[[Any], Any] | None = None) -> Any:
    """One key: its default (or a factory for a list or table), the environment variable that
    sets it, the rule its value meets (after its type) and how a loaded value is normalized."""
    meta = {"env": env, "rule": rule, "convert": convert}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class AtLeast(NamedTuple):
    """Between two keys of a section: `big` >= `small` (or >, strict)."""
    big: str
    small: str
    why: str
    strict: bool = False


class Both(NamedTuple):
    """Two keys set together or not at all."""
    one: str
    other: str
    why: str


Relation = AtLeast | Both
SECONDS_WHOLE = "a whole number of seconds"


def whole_or_more(least: float) -> Rule:
    """A number (whole or not) at least `least`."""
    def rule(value: Any) -> str | None:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= least
        return None if ok else f"give a number of at least {least:g}"
    return rule


def _path(value: Any) -> Any:
    return Path(value) if value else None


@dataclass
class StoreConfig:
    """[store]: the store's URL and key prefix, and its ACL users: the user and the file (mode
    0600) holding its password, never the password itself, nor in the URL. A node agent uses
    agent_* when set (user name default labq-agent-<node>), so one file serves both."""
    url: str | None = setting(None, env="LABQ_REDIS_URL", rule=redis_url)
    prefix: str = setting("labq:", env="LABQ_REDIS_PREFIX", rule=redis_prefix)
    username: str = setting("", env="LABQ_REDIS_USERNAME")
    password_file: str = setting("", env="LABQ_REDIS_PASSWORD_FILE", rule=absolute_path)
    agent_username: str = setting("", env="LABQ_AGENT_REDIS_USERNAME")
    agent_password_file: str = setting("", env="LABQ_AGENT_REDIS_PASSWORD_FILE",
                                       rule=absolute_path)
    # A replicated store: the Sentinels to ask where its primary is (url then only says the
    # scheme and database, e.g. redis:///0), and the name they watch it under.
    sentinels: list[str] = setting(factory=list, env="LABQ_REDIS_SENTINELS", rule=host_ports)
    sentinel_master: str = setting("labq", env="LABQ_REDIS_SENTINEL_MASTER", rule=host_name)


@dataclass
class ApiConfig:
    """[api]: the Unix socket, /metrics, admins, and the TCP API for other hosts (port 0:
    none): callers prove their uid with a MUNGE credential or an API token; TLS when both
    files are set. Under private_data, /metrics serves per-user series only to a scraper
    sending metrics_token_file's token ("" = $LABQ_HOME/secrets/metrics-token)."""
    socket: Path | None = setting(None, env="LABQ_SOCKET", rule=absolute_path, convert=_path)
    host: str = setting("127.0.0.1", rule=host_name)
    metrics_port: int = setting(9464, env="LABQ_METRICS_PORT", rule=PORT)
    port: int = setting(0, env="LABQ_API_PORT", rule=PORT)
    bind: str = setting("0.0.0.0", rule=host_name)
    tls_cert_file: str = setting("", rule=absolute_path)
    tls_key_file: str = setting("", rule=absolute_path)
    munge_socket: str = setting("", rule=absolute_path)  # "" = munged's default socket
    metrics_token_file: str = setting("", rule=absolute_path)
    admins: list[str] = setting(factory=list, env="LABQ_ADMINS", rule=names)
    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        Both("tls_cert_file", "tls_key_file", "set both (TLS) or neither"),)


@dataclass
class SchedulerConfig:
    """[scheduler]: the leader's cycle and charging, jobs' time limits and default account.
    stop_grace_s: SIGTERM, then SIGKILL this much later (cancel, timeout, preempt). A job whose
    node never reports it running within launch_timeout_s ends FAILED (LaunchTimeout). A job
    whose dependency can never be met is cancelled when kill_invalid_depend (Slurm's), else it
    waits, saying why."""
    cycle_interval_s: float = setting(1.0, rule=SECONDS)
    charge_interval_s: float = setting(5.0, rule=SECONDS)
    default_time_limit_s: int = setting(3600, rule=whole(1, what=SECONDS_WHOLE))
    max_time_limit_s: int = setting(7 * 86400, rule=whole(1, what=SECONDS_WHOLE))
    default_account: str = setting("default", rule=account_name)
    stop_grace_s: int = setting(10, rule=whole(0, what=SECONDS_WHOLE))
    kill_invalid_depend: bool = setting(False, env="LABQ_KILL_INVALID_DEPEND", rule=boolean)
    launch_timeout_s: float = setting(300.0, rule=SECONDS)
    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        AtLeast("max_time_limit_s", "default_time_limit_s", "the default may not exceed the most"),)


@dataclass
class NodesConfig:
    """[nodes]: a node whose agent is silent timeout_s is DOWN and its jobs end NodeLost (or
    requeue); Slurm's SlurmdTimeout. Agents keep their runners' state in state_dir ("" =
    $LABQ_HOME/agent/<node>) and own cgroup_root ("auto": the agent's delegated cgroup under
    systemd, else <cgroup2 mount>/labq/<node>; "none": no cgroups). A GPU running a process
    labq did not start: "avoid" it or "ignore" it. A job's process on a GPU it was not given:
    "stop" its job (GpuMisuse) or "warn"; confine_gpu_devices: a BPF device program refuses a
    job every GPU device but its own (cgroup v2)."""
    heartbeat_interval_s: float = setting(2.0, env="LABQ_HEARTBEAT_INTERVAL", rule=SECONDS)
    timeout_s: float = setting(300.0, env="LABQ_NODE_TIMEOUT", rule=SECONDS)
    gpu_misuse_policy: str = setting("stop", env="LABQ_GPU_MISUSE_POLICY",
                                     rule=one_of("stop", "warn"))
    confine_gpu_devices: bool = setting(True, rule=boolean)
    state_dir: str = setting("", env="LABQ_AGENT_STATE_DIR", rule=absolute_path)
    cgroup_root: str = setting("auto", env="LABQ_CGROUP_ROOT", rule=cgroup_directory)
    foreign_gpu_policy: str = setting("avoid", env="LABQ_FOREIGN_GPU_POLICY",
                                      rule=one_of("avoid", "ignore"))
    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        AtLeast("timeout_s", "heartbeat_interval_s",
                "a node is DOWN after missing heartbeats, never between two", strict=True),)


@dataclass
class FairshareConfig:
    """[fairshare]: fair_now (GPUs held now + Fair Tree on past usage, that part being
    fair_now_past_weight), fair_tree or classic; usage decays with half_life_s and is forgotten
    each month or semester under reset ([["2026-09-01", "2027-01-31"]])."""
    algorithm: str = setting("fair_now", env="LABQ_FAIRSHARE",
                             rule=one_of("fair_now", "fair_tree", "classic"))
    half_life_s: float = setting(7 * 86400.0, env="LABQ_HALF_LIFE", rule=SECONDS)
    reset: str = setting("none", rule=one_of("none", "month", "semester"))
    semesters: list[list[str]] = setting(factory=list, rule=semester_pairs)
    fair_now_past_weight: float = setting(0.2, rule=fraction)


@dataclass
class PriorityConfig:
    """[priority]: weights (fairshare, age, size, qos, max_age_s; see
    policy.priority.PriorityWeights) and each QOS's factor; qos_names default to the factors'."""
    weights: dict[str, float] = setting(factory=dict, rule=priority_weights)
    qos_factors: dict[str, float] = setting(
        factory=lambda: {"normal": 0.5, "scavenger": 0.0},
        rule=table_of(fraction, "give factors from 0 to 1"))
    qos_names: tuple[str, ...] = setting(("normal", "scavenger"), rule=names, convert=tuple)


@dataclass
class BillingConfig:
    """[billing]: billing units one GPU-second of a family costs (given weights join the
    defaults); scavenger jobs pay scavenger_factor of that (0: free on idle GPUs)."""
    weights: dict[str, float] = setting(
        factory=lambda: dict(DEFAULT_BILLING_WEIGHTS),
        rule=table_of(above(0, "x"), "billing weights must be numbers above 0"),
        convert=lambda given: {**DEFAULT_BILLING_WEIGHTS, **given})
    scavenger_factor: float = setting(0.0, rule=fraction)
    # Slurm's TRESBillingWeights for CPUs and memory: units per CPU-second and per
    # GiB-second a job is given, on top of its GPUs' (0: GPUs only, the default).
    cpu: float = setting(0.0, rule=whole_or_more(0.0))
    mem: float = setting(0.0, rule=whole_or_more(0.0))


@dataclass
class ResourcesConfig:
    """[resources]: what a job that asks for no CPUs (memory) gets on each node, per GPU it
    has there (Slurm's DefCpuPerGPU, DefMemPerGPU; memory in MiB); 0: its node's share, the
    node's CPUs (memory) divided by its GPUs (scheduler.resources)."""
    def_cpus_per_gpu: int = setting(0, env="LABQ_DEF_CPUS_PER_GPU", rule=whole(0))
    def_mem_per_gpu: int = setting(0, env="LABQ_DEF_MEM_PER_GPU", rule=whole(0))


@dataclass
class IdleConfig:
    """[idle]: allocated GPUs below threshold utilization for after_s are idle
    (scheduler.coordinator.idle); policy "off", "warn" (show, notify) or "stop" (also stop the
    job once idle stop_after_s)."""
    policy: str = setting("warn", env="LABQ_IDLE_GPU_POLICY", rule=one_of("off", "warn", "stop"))
    threshold: float = setting(0.05, env="LABQ_IDLE_GPU_THRESHOLD", rule=fraction)
    after_s: float = setting(1800.0, env="LABQ_IDLE_GPU_AFTER", rule=SECONDS)
    stop_after_s: float = setting(3600.0, env="LABQ_IDLE_GPU_STOP_AFTER", rule=SECONDS)
    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        AtLeast("stop_after_s", "after_s",
                "a job is stopped only after its GPUs have been reported idle"),)


@dataclass
class NotifyConfig:
    """[notify]: an admin's command line (`sh -c`), run by the leader on idle events; the
    event's data reaches it only as LABQ_NOTIFY_* variables, never inside the command text."""
    command: str = setting("", env="LABQ_NOTIFY_COMMAND")
    timeout_s: float = setting(30.0, rule=SECONDS)


@dataclass
class LimitsConfig:
    """[limits] (README "Security and limits"): accounts enforced (a user charges only their
    own accounts); others' commands, env, workdirs and usage hidden (private_data); sizes of
    one request, command, environment and script; what one user may keep in the store (every
    job, and the bytes of commands, environments and scripts; 0: no cap); who a job may run as
    (never root, never below min_job_uid, 0: UID_MIN of /etc/login.defs; never job_user_deny;
    `--as` is root's or an operator's); the API's connections and timeouts; the embedded
    Valkey's memory ceiling (0: a quarter of the machine's memory, noeviction)."""
    enforce_accounts: bool = setting(True, env="LABQ_ENFORCE_ACCOUNTS", rule=boolean)
    private_data: bool = setting(True, env="LABQ_PRIVATE_DATA", rule=boolean)
    max_array_size: int = setting(1000, env="LABQ_MAX_ARRAY_SIZE", rule=whole(1))
    max_pending_jobs: int = setting(5000, env="LABQ_MAX_PENDING_JOBS", rule=whole(0))
    max_request_bytes: int = setting(1 << 20, rule=whole(1024))
    max_command_bytes: int = setting(64 << 10, rule=whole(1))
    max_env_bytes: int = setting(64 << 10, rule=whole(0))
    max_script_bytes: int = setting(256 << 10, rule=whole(1))
    max_stored_jobs_per_user: int = setting(20_000, env="LABQ_MAX_STORED_JOBS_PER_USER",
                                            rule=whole(0))
    max_stored_bytes_per_user: int = setting(256 << 20, env="LABQ_MAX_STORED_BYTES_PER_USER",
                                             rule=whole(0))
    min_job_uid: int = setting(0, rule=whole(0))
    job_user_deny: list[str] = setting(factory=list, rule=names)
    operators: list[str] = setting(factory=list, env="LABQ_OPERATORS", rule=names)
    max_connections: int = setting(4096, rule=whole(16))
    max_connections_per_uid: int = setting(64, rule=whole(1))
    request_timeout_s: float = setting(10.0, rule=SECONDS)
    keepalive_s: float = setting(5.0, rule=SECONDS)
    store_max_memory_bytes: int = setting(0, rule=whole(0))


@dataclass
class RetentionConfig:
    """[retention]: a finished job stays in the store keep_s, and only the newest keep_jobs;
    then the leader leaves a compact record of it in the history (Store.expire_done), kept
    history_s after the day it ended. Usage and budgets never depend on either."""
    keep_s: float = setting(30 * 86400.0, env="LABQ_RETENTION", rule=SECONDS)
    keep_jobs: int = setting(100_000, env="LABQ_RETENTION_JOBS", rule=whole(0))
    history_s: float = setting(400 * 86400.0, env="LABQ_RETENTION_HISTORY", rule=SECONDS)
