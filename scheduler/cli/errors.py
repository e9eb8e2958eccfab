"""One-line usage errors for every labq command: click's multi-line usage message becomes
`labq: error: ...` with exit status 2 (`LabqCommand`, `LabqGroup`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line, `labq: error: ...`, exit status 2 (click's is a usage
    block, a hint and the message)."""

    def __init__(self, message: str, ctx: click.Context | None = None, bare: str = "") -> None:
        super().__init__(message, ctx)
        self.bare = bare or message  # without the command's name

    def show(self, file: IO[Any] | None = None) -> None:
        text = " ".join(self.format_message().split())
        click.echo(f"labq: error: {text}", err=True)


def one_line(exc: click.UsageError, ctx: click.Context | None = None) -> OneLineUsageError:
    if isinstance(exc, OneLineUsageError):
        return exc
    text = exc.format_message()
    ctx = exc.ctx or ctx
    name = ctx.command_path if ctx is not None else ""
    return OneLineUsageError(f"{name}: {text}" if name else text, ctx, text)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except click.UsageError as exc:
        raise one_line(exc) from None


class LabqCommand(click.Command):
    """A command whose usage errors are one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _one_line_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


class LabqGroup(click.Group):
    """A group whose commands' (and subgroups') usage errors are one line, exit status 2:
    `@click.group(cls=LabqGroup)`. `lazy` names commands by "module:attribute", imported only
    when one is used or listed: `labq submit` (a new Python process each time) need not import
    the daemons, the simulator, `labq top` or the admin tools."""

    command_class = LabqCommand
    group_class = type  # subgroups are LabqGroups too

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = self.lazy.pop(cmd_name, None)
        if where is not None:
            import importlib

            module, _, attribute = where.partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _one_line_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


def usage_error(message: str) -> OneLineUsageError:
    return OneLineUsageError(message)
