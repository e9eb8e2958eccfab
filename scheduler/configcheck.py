"""`labq config check FILE`: every wrong key, type or range of one config.toml, one line each,
not only the first. The keys, types, rules and relations are the sections' declarations
(scheduler.config.sections); `Settings.load` refuses a daemon's settings by the same checks
(scheduler.config.check)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from scheduler.config import SECTIONS, SPECS, ConfigError, check_type, where
from scheduler.config.check import settings_problems, value_problems
from scheduler.config.rules import Rule, real, shown

# Every setting's own rule, by flat name (its type is checked first, by config.check_type).
RULES: dict[str, Rule] = {name: spec.rule for name, spec in SPECS.items() if spec.rule}

__all__ = ["RULES", "file_problems", "settings_problems", "value_problems", "where"]


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
    for name, value in data.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                out.append(f"[{name}] must be a section (a table of keys)")
                continue
            for key, item in value.items():
                if key in SECTIONS[name]:
                    flat = SECTIONS[name][key]
                    if flat in data:
                        out.append(f"[{name}] {key} is set twice: also as {flat} at the top")
                    values[flat] = item
                else:
                    out.append(f"unknown key {key!r} in [{name}] (known: "
                               f"{', '.join(SECTIONS[name])})")
        elif name in SPECS:
            values[name] = value
        elif isinstance(value, dict):
            out.append(f"unknown section [{name}] (known: {', '.join(SECTIONS)})")
        else:
            out.append(f"unknown key {name!r} (not a setting)")
    typed: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and SPECS[key].kind == "dict[str, float]":
            # each entry on its own: the good ones are checked on
            wrong = {k: v for k, v in value.items() if not real(v) and not isinstance(v, float)}
            out += [f"{where(key)}: {k} = {shown(v)}: expected a number"
                    for k, v in wrong.items()]
            value = {k: v for k, v in value.items() if k not in wrong}
        try:
            check_type(key, value, path)
        except ConfigError as exc:
            out.append(str(exc).replace(f" in {path}", ""))
            continue
        typed[key] = value
    return out + value_problems(typed)
