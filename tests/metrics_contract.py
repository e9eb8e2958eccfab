"""The coordinator's metric names as docs/metrics.md (the contract) lists them."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def coordinator_metrics() -> set[str]:
    """Names in the table of the "Coordinator" section (not the agent exporter's)."""
    text = DOC.read_text()
    section = re.search(r"^## Coordinator.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, f"{DOC} has no '## Coordinator' section"
    return set(re.findall(r"^\| `(labq_[a-z_]+)`", section.group(0), re.MULTILINE))
