"""Helpers shared by the `labq` command modules: settings, the API call, output."""

from __future__ import annotations

import json
import sys
import time
import unicodedata
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


# Control and formatting characters (ESC of terminal codes, bidi overrides, zero-width ones),
# line and paragraph separators, lone surrogates: shown as escapes, never sent to the terminal.
_HIDDEN = ("Cc", "Cf", "Zl", "Zp", "Cs")


def plain(value: Any) -> str:
    """Text a user typed, safe to print: every control or formatting character escaped."""
    text = "-" if value is None else str(value)
    if text.isprintable():  # the common case: nothing to escape
        return text
    out = []
    for char in text:
        if unicodedata.category(char) in _HIDDEN:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def markup(value: Any) -> str:
    """Text a user typed, for a rich table cell: escaped as `plain`, and its `[...]` shown as
    typed rather than read as markup (a job named `[/x]` would otherwise end a style)."""
    from rich.markup import escape

    return escape(plain(value))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def print_budgets(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        until = time.strftime("%Y-%m-%d", time.gmtime(row["period_end"] - 1))
        warn = f"  WARNING: {row['warning']} used" if row["warning"] else ""
        click.echo(f"{row['scope']} {plain(row['name'])}: {row['left_hours']:.1f} of "
                   f"{row['limit_hours']:.1f} billed GPU-hours left ({row['period']} to {until}; "
                   f"spent {row['spent_hours']:.1f}, committed {row['committed_hours']:.1f})"
                   f"{warn}")
