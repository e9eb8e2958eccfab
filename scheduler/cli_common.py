"""Helpers shared by the `labq` command modules: settings, the API call, output."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, NoReturn

import click

from scheduler.client import Client, ClientError
from scheduler.config import ConfigError, Settings


def settings() -> Settings:
    try:
        return Settings.load()
    except ConfigError as exc:
        fail(str(exc))


def fail(message: str) -> NoReturn:
    click.echo(f"labq: error: {message}", err=True)
    sys.exit(1)


def client() -> Client:
    return Client(settings().socket)


def call(method: str, path: str, body: Any = None) -> Any:
    try:
        return client().request(method, path, body)
    except ClientError as exc:
        fail(str(exc))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def print_budgets(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        until = time.strftime("%Y-%m-%d", time.gmtime(row["period_end"] - 1))
        warn = f"  WARNING: {row['warning']} used" if row["warning"] else ""
        click.echo(f"{row['scope']} {row['name']}: {row['left_hours']:.1f} of "
                   f"{row['limit_hours']:.1f} billed GPU-hours left ({row['period']} to {until}; "
                   f"spent {row['spent_hours']:.1f}, committed {row['committed_hours']:.1f})"
                   f"{warn}")
