"""What is wrong with settings, one line each, from the sections' declarations: each value's
rule, then the relations a section declares between its keys. `labq config check` prints these
lines for one file (scheduler.configcheck); `Settings.load` refuses a daemon's settings (the
file, the environment and flags together) with the same lines joined into one."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from scheduler.config.rules import real, shown
from scheduler.config.sections import AtLeast, Both, Relation
from scheduler.config.settings import SECTION_TYPES, SPECS, Settings, where

Namer = Callable[[str], str]  # a flat name -> how the line names it


class Key(NamedTuple):
    """A setting (by flat name) inside a problem's line."""
    name: str


@dataclass(frozen=True)
class Problem:
    """One thing wrong: its line in parts, the settings it is about among them."""
    parts: tuple[str | Key, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts if isinstance(p, Key))

    def line(self, name: Namer = where) -> str:
        """The line, each setting named by `name` (as config.toml names it, by default)."""
        return "".join(name(p.name) if isinstance(p, Key) else p for p in self.parts)


def relations() -> Iterator[tuple[str, Relation]]:
    """Every relation a section declares, with the section's name."""
    for section, kind in SECTION_TYPES.items():
        for relation in getattr(kind, "RELATIONS", ()):
            yield section, relation


def _flat(section: str, key: str) -> str:
    return next(s.name for s in SPECS.values() if (s.section, s.key) == (section, key))


def problems(values: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with these settings (by flat name): each value's rule, then the rules
    between settings (taking defaults for those not given)."""
    out = []
    for key, value in values.items():
        rule = SPECS[key].rule
        text = rule(value) if rule else None
        if text:  # a table names its wrong entries itself
            value_text = "" if isinstance(value, dict) or key == "semesters" else \
                f" = {shown(value)}"
            out.append(Problem((Key(key), f"{value_text}: {text}")))
    merged = {name: spec.default() for name, spec in SPECS.items()}
    merged.update(values)

    def number(key: str) -> float | None:
        value: Any = merged.get(key)
        rule = SPECS[key].rule
        return float(value) if real(value) and (rule is None or rule(value) is None) else None

    for section, relation in relations():
        if isinstance(relation, AtLeast):
            big, small = _flat(section, relation.big), _flat(section, relation.small)
            b, s = number(big), number(small)
            if b is None or s is None or b > s or (b == s and not relation.strict):
                continue
            words = "above" if relation.strict else "at least"
            out.append(Problem((Key(big), f" = {b:g} must be {words} ", Key(small),
                                f" = {s:g}: {relation.why}")))
        elif isinstance(relation, Both):
            one, other = _flat(section, relation.one), _flat(section, relation.other)
            a, b2 = merged.get(one), merged.get(other)
            if bool(a) != bool(b2) and isinstance(a, str) and isinstance(b2, str):
                out.append(Problem((Key(one), " and ", Key(other), f": {relation.why}")))
    return out


def value_problems(values: Mapping[str, Any]) -> list[str]:
    """`problems` as lines, each setting named as config.toml names it."""
    return [p.line() for p in problems(values)]


def values_of(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in SPECS}


def settings_problems(settings: Settings) -> list[str]:
    """What is wrong with built settings (the file, the environment and flags together)."""
    return value_problems(values_of(settings))


# The idle settings' refusals at load keep the words the daemons gave before the sections were
# declared (tests/test_idle.py holds them); what is wrong is decided by the declared rules.
_IDLE = "(config.toml or LABQ_IDLE_GPU_* / LABQ_NOTIFY_COMMAND)"
_IDLE_WORDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "idle_gpu_policy": lambda v: f"idle_gpu_policy = {v['idle_gpu_policy']!r} {_IDLE}: use "
                                 "one of off, warn, stop",
    "idle_gpu_threshold": lambda v: f"idle_gpu_threshold = {v['idle_gpu_threshold']} {_IDLE}: "
                                    "a utilization ratio between 0 and 1, e.g. 0.05 for 5%",
    "idle_gpu_after_s": lambda v: f"idle_gpu_after_s = {v['idle_gpu_after_s']} {_IDLE}: give "
                                  "seconds > 0",
    "idle_gpu_stop_after_s": lambda v: (
        f"idle_gpu_stop_after_s = {v['idle_gpu_stop_after_s']} {_IDLE} must be at least "
        f"idle_gpu_after_s = {v['idle_gpu_after_s']}: a job is stopped only after its GPUs "
        "have been reported idle"),
    "notify_timeout_s": lambda v: f"notify_timeout_s = {v['notify_timeout_s']} {_IDLE}: give "
                                  "seconds > 0",
}


def load_problems(settings: Settings, flags: set[str]) -> list[str]:
    """`Settings.load`'s refusal, one line each: a setting given as a flag (a keyword of
    `load`) is named by its flat name, as the caller wrote it; others as config.toml names
    them."""
    values = values_of(settings)

    def name(key: str) -> str:
        return key if key in flags else where(key)

    out = []
    for problem in problems(values):
        legacy = _IDLE_WORDS.get(problem.keys[0])
        out.append(legacy(values) if legacy else problem.line(name))
    return out
