"""`labq history`, `labq report` and `labq eff`: a semester's jobs and usage (sacct, sreport,
seff). Registered by `scheduler.cli.main` from `HISTORY_COMMANDS`."""

from __future__ import annotations

import click

HISTORY_COMMANDS: list[click.Command] = []
