"""labq's settings: config.toml's sections as dataclasses (sections), each key declared once
with its type, default, `LABQ_*` variable and rule; `Settings` holds them and the flat names
the rest of labq reads (settings); the checks that load and `labq config check` share (check)."""

from __future__ import annotations

from pathlib import Path

from scheduler.config.gpus import DEFAULT_BILLING_WEIGHTS, gpu_family, gpu_type_matches
from scheduler.config.rules import PRIORITY_WEIGHT_KEYS, REDIS_SCHEMES, ConfigError
from scheduler.config.sections import (
    ApiConfig,
    BillingConfig,
    FairshareConfig,
    IdleConfig,
    LimitsConfig,
    NodesConfig,
    NotifyConfig,
    PriorityConfig,
    RetentionConfig,
    SchedulerConfig,
    StoreConfig,
)
from scheduler.config.settings import (
    SECTIONS,
    SPECS,
    Settings,
    check_type,
    flatten,
    login_defs_uid_min,
    where,
)

SYSTEM_CONFIG = Path("/etc/labq/config.toml")  # read where $LABQ_HOME has no config.toml

__all__ = [
    "DEFAULT_BILLING_WEIGHTS", "PRIORITY_WEIGHT_KEYS", "REDIS_SCHEMES",
    "SECTIONS", "SPECS", "SYSTEM_CONFIG", "ApiConfig", "BillingConfig", "ConfigError",
    "FairshareConfig", "IdleConfig", "LimitsConfig", "NodesConfig", "NotifyConfig",
    "PriorityConfig", "RetentionConfig", "SchedulerConfig", "Settings", "StoreConfig",
    "check_type", "flatten", "gpu_family", "gpu_type_matches", "login_defs_uid_min", "where",
]
