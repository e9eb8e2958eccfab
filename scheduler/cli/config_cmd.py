"""`labq config check`: every problem of a config.toml, one line each, before a daemon
refuses it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from scheduler.cli.common import fail, plain
from scheduler.config import SYSTEM_CONFIG
from scheduler.configcheck import file_problems


@click.group()
def config() -> None:
    """labq's configuration file (config.toml)."""


def default_file() -> Path:
    """The file the daemons read: $LABQ_HOME/config.toml, else /etc/labq/config.toml."""
    home = Path(os.environ.get("LABQ_HOME") or Path.home() / ".labq").expanduser()
    mine = home / "config.toml"
    return mine if mine.exists() or not SYSTEM_CONFIG.exists() else SYSTEM_CONFIG


@config.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path | None) -> None:
    """Name every wrong key, type or value of FILE (default: the file the daemons read), one
    line each; exit 1 when there is any. Nothing is written."""
    path = file or default_file()
    if not path.exists():
        fail(f"no config file {path}: nothing to check (the defaults are used)")
    problems = file_problems(path)
    for problem in problems:
        click.echo(f"{plain(path)}: {plain(problem)}")
    if problems:
        sys.exit(1)
    click.echo(f"ok: {plain(path)}")
