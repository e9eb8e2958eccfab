"""The `labq` command (main.py) and its parts: `labq admin` (admin.py), `labq top` (top.py),
`labq sim` (sim.py) and what they share (common.py)."""

from scheduler.cli.main import main, queue_table

__all__ = ["main", "queue_table"]
