"""Job dependencies (Slurm's `--dependency`): the expression, and whether a job may start now,
must wait, or never can. Pure: the coordinator reads the targets' states and asks here.

    after:ID[:ID...]       the targets started (or were cancelled before they could)
    afterany:ID[:ID...]    the targets ended, however
    afterok:ID[:ID...]     the targets ended SUCCEEDED
    afternotok:ID[:ID...]  the targets ended, not SUCCEEDED (failed, timed out, cancelled)
    singleton              no earlier job of this user with this name is waiting or running
Conditions joined by `,` must all hold; joined by `?`, any one (never both in one expression,
as in Slurm). An ID may be a job, an array (all its tasks) or one task (`17_5`). A target that
has left the store (past retention) counts as met, as in Slurm.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

KINDS = ("after", "afterany", "afterok", "afternotok")
_ID = re.compile(r"^\d+(?:_\d+)?$")
WAIT, MET, NEVER = "wait", "met", "never"


class DependencyError(ValueError):
    """A --dependency value that cannot be read; the message says how to write it."""


@dataclass(frozen=True)
class Condition:
    kind: str  # one of KINDS, or "singleton"
    targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dependency:
    conditions: tuple[Condition, ...]
    any_of: bool = False  # `?`: one condition is enough

    @property
    def targets(self) -> set[str]:
        return {t for c in self.conditions for t in c.targets}


@dataclass(frozen=True)
class Target:
    """What a dependency needs to know of one target job (or array, all tasks together)."""

    started: bool  # began (or ended without beginning)
    ended: bool
    failed: str = ""  # how it (or a task) ended other than SUCCEEDED, e.g. "FAILED (exit 1)"


@dataclass(frozen=True)
class Verdict:
    state: str  # WAIT, MET or NEVER
    detail: str = ""


def parse_dependency(text: str) -> Dependency:
    shown = text if len(text) <= 60 else text[:60] + "..."
    text = text.strip()
    if "," in text and "?" in text:
        raise DependencyError(f"--dependency {shown}: use either ',' (all) or '?' (any), not both")
    any_of = "?" in text
    conditions = []
    for part in text.split("?" if any_of else ","):
        part = part.strip()
        if part == "singleton":
            conditions.append(Condition("singleton"))
            continue
        kind, sep, rest = part.partition(":")
        if kind not in KINDS or not sep:
            raise DependencyError(
                f"--dependency {shown}: write afterok:ID[:ID...] (or after, afterany, "
                "afternotok), several joined by ',' (all) or '?' (any), or singleton")
        ids = tuple(rest.split(":"))
        for job_id in ids:
            if not _ID.match(job_id):
                bad = job_id if len(job_id) <= 20 else job_id[:20] + "..."
                raise DependencyError(f"--dependency {shown}: {bad!r} is not a job id (12, or "
                                      "12_3 for one task of an array)")
        conditions.append(Condition(kind, ids))
    if not conditions:
        raise DependencyError("--dependency: empty")
    return Dependency(tuple(conditions), any_of)


def _one(kind: str, job_id: str, target: Target | None) -> Verdict:
    if target is None:
        return Verdict(MET)
    if kind == "after":
        return Verdict(MET) if target.started else Verdict(WAIT, f"job {job_id} to start")
    if kind == "afterany":
        return Verdict(MET) if target.ended else Verdict(WAIT, f"job {job_id} to end")
    if kind == "afterok":
        if target.failed:
            return Verdict(NEVER, f"job {job_id} ended {target.failed}, and afterok needs it "
                                  "to succeed")
        return Verdict(MET) if target.ended else Verdict(WAIT, f"job {job_id} to succeed")
    if target.ended:  # afternotok
        return (Verdict(MET) if target.failed else
                Verdict(NEVER, f"job {job_id} succeeded, and afternotok needs it to fail"))
    return Verdict(WAIT, f"job {job_id} to end without success")


def evaluate(dep: Dependency, targets: Mapping[str, Target | None],
             singleton_blocker: str | None = None) -> Verdict:
    """Whether a job with `dep` may start: `targets` maps every id of `dep.targets` to its
    state (None: gone from the store); `singleton_blocker` is an earlier job of the same user
    and name that is still waiting or running (None: none)."""
    verdicts = []
    for cond in dep.conditions:
        if cond.kind == "singleton":
            verdicts.append(Verdict(MET) if singleton_blocker is None else Verdict(
                WAIT, f"your earlier job {singleton_blocker} of the same name to end "
                      "(singleton)"))
            continue
        parts = [_one(cond.kind, t, targets.get(t)) for t in cond.targets]
        never = [v for v in parts if v.state == NEVER]
        waiting = [v for v in parts if v.state == WAIT]
        verdicts.append(never[0] if never else waiting[0] if waiting else Verdict(MET))
    if dep.any_of:
        if any(v.state == MET for v in verdicts):
            return Verdict(MET)
        if all(v.state == NEVER for v in verdicts):
            return Verdict(NEVER, "; ".join(v.detail for v in verdicts))
        return Verdict(WAIT, "any of: " + "; ".join(v.detail for v in verdicts
                                                   if v.state == WAIT))
    never = [v for v in verdicts if v.state == NEVER]
    if never:
        return never[0]
    waiting = [v for v in verdicts if v.state == WAIT]
    if waiting:
        return Verdict(WAIT, "; ".join(v.detail for v in waiting))
    return Verdict(MET)
