"""What a store script answers is an `Outcome`, compared as a member: a misspelt string would
compare unequal forever, a misspelt member fails at import."""

from __future__ import annotations

import re
from pathlib import Path

from scheduler.store.outcome import Outcome

ROOT = Path(__file__).resolve().parent.parent
_NAMES = "|".join(Outcome.__members__)
_SPELLED = re.compile(rf"""(==|!=)\s*["']({_NAMES})["']|["']({_NAMES})["']\s*(==|!=)""")
# Still comparing with strings; their owners change them next (see the report of issue 20).
_PENDING: set[str] = set()  # every store caller compares outcomes as members
# GPU health is "OK" too: not an outcome.
_NOT_OUTCOMES = re.compile(r"health")


def test_no_store_caller_compares_an_outcome_with_a_string() -> None:
    found = []
    for folder in ("scheduler/coordinator", "scheduler/server", "scheduler/store", "agents"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = str(path.relative_to(ROOT))
            if name in _PENDING:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if _SPELLED.search(line) and not _NOT_OUTCOMES.search(line):
                    found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "compare with Outcome members:\n" + "\n".join(found)


def test_outcomes_are_their_own_names() -> None:
    """The scripts return the member's name; the member's value is the same text."""
    assert all(member.value == name for name, member in Outcome.__members__.items())


# Scripts whose answers are not plain outcomes (a state, a list, counts), or whose owners move
# them to OUTCOME next.
_RETURNS_OTHER = {"heartbeat.lua"}


def test_the_scripts_return_outcomes_python_declares() -> None:
    """A script returns `OUTCOME.<name>` (generated from `Outcome`: an undeclared name raises
    in the store), never an outcome spelt as a string."""
    spelled = re.compile(r"return\s+'([A-Z][A-Z_]+)'")
    found = []
    for path in sorted((ROOT / "scheduler/store/lua").glob("*.lua")):
        if path.name in _RETURNS_OTHER:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.lstrip().startswith("--") and spelled.search(line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert not found, "return OUTCOME.<name>:\n" + "\n".join(found)
