"""Helpers shared by the `labq` command modules: settings, the API call, output."""

from __future__ import annotations

import json
import os
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from scheduler.client import Client, ClientError, read_token_file
from scheduler.config import ConfigError, Settings


def settings() -> Settings:
    try:
        return Settings.load()
    except ConfigError as exc:
        fail(str(exc))


def fail(message: str) -> NoReturn:
    click.echo(f"labq: error: {message}", err=True)
    sys.exit(1)


CLIENT_CONFIG = Path("/etc/labq/client.toml")  # world-readable: where the coordinator is
RUN_SOCKET = Path("/run/labq/labq.sock")  # the daemons' socket on a head node
CLIENT_KEYS = {"server", "socket", "tls_ca_file", "munge_socket"}


def client_config_path() -> Path:
    """/etc/labq/client.toml, or the file LABQ_CLIENT_CONFIG names."""
    return Path(os.environ.get("LABQ_CLIENT_CONFIG") or CLIENT_CONFIG)


def client_config(path: Path | None = None) -> dict[str, str]:
    """/etc/labq/client.toml: server = "host:port" and/or socket = "/run/labq/labq.sock",
    tls_ca_file, munge_socket; {} when there is none."""
    import tomllib

    path = path or client_config_path()
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except PermissionError:
        fail(f"{path} cannot be read: it says where the coordinator is and must be "
             "world-readable (chmod 644)")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        fail(f"{path}: {exc}; fix that file")
    unknown = sorted(set(values) - CLIENT_KEYS)
    if unknown or not all(isinstance(v, str) for v in values.values()):
        fail(f"{path}: give only {', '.join(sorted(CLIENT_KEYS))}, each a string"
             + (f" (not {', '.join(unknown)})" if unknown else ""))
    return {k: str(v) for k, v in values.items()}


def _token() -> str:
    token = os.environ.get("LABQ_TOKEN", "").strip()
    if token:
        return token
    return read_token_file(Path.home() / ".config" / "labq" / "token")


def client(timeout: float = 30.0) -> Client:
    """The coordinator, found in this order: LABQ_SERVER (host:port, TCP), LABQ_SOCKET (or a
    readable config.toml's [api] socket), /etc/labq/client.toml (server, else socket),
    $LABQ_HOME/labq.sock, /run/labq/labq.sock; when none is there, one line says what was
    tried. Over TCP: TLS with LABQ_TLS_CA_FILE or the file's tls_ca_file; the API token in
    LABQ_TOKEN or ~/.config/labq/token, else a MUNGE credential per request (munged's socket:
    LABQ_MUNGE_SOCKET, the file's munge_socket, or munge_socket in config.toml)."""
    loaded = settings()
    env = os.environ
    config: dict[str, str] | None = None
    try:
        def tcp(server: str, ca: str) -> Client:
            return Client(timeout=timeout, server=server, tls_ca_file=ca, token=_token(),
                          munge_socket=env.get("LABQ_MUNGE_SOCKET")
                          or (config or {}).get("munge_socket") or loaded.munge_socket)

        ca_env = env.get("LABQ_TLS_CA_FILE", "")
        if env.get("LABQ_SERVER"):
            config = client_config()
            return tcp(env["LABQ_SERVER"], ca_env or config.get("tls_ca_file", ""))
        if loaded.socket_path is not None:
            return Client(loaded.socket_path, timeout)
        config = client_config()
        if config.get("server"):
            return tcp(config["server"], ca_env or config.get("tls_ca_file", ""))
        if config.get("socket"):
            return Client(config["socket"], timeout)
    except ClientError as exc:
        fail(str(exc))
    for path in (loaded.socket, RUN_SOCKET):
        if path.exists():
            return Client(path, timeout)
    where = client_config_path()
    fail(f"labq is not running here (tried LABQ_SERVER, LABQ_SOCKET: unset; {where}: "
         f"{'no server or socket' if where.exists() else 'missing'}; {loaded.socket}, "
         f"{RUN_SOCKET}: missing): start it with `labq up`, set LABQ_HOME to the one in use, "
         "or set LABQ_SERVER=host:port")


def call(method: str, path: str, body: Any = None) -> Any:
    try:
        return client().request(method, path, body)
    except ClientError as exc:
        fail(str(exc))


def job_anywhere(job_id: str) -> dict[str, Any]:
    """One job as `GET /v1/jobs/{id}` shows it, or, once it has left the hot store, as its
    history keeps it (`GET /v1/history/{id}`: `history` true, what the history does not keep
    null). Neither, or no answer: the first error, one line, exit 1."""
    from urllib.parse import quote

    api = client()
    try:
        return dict(api.request("GET", f"/v1/jobs/{quote(job_id, safe='')}"))
    except ClientError as first:
        if first.status != 404:  # refused, or unreachable: the history would say no more
            fail(str(first))
        try:
            return dict(api.request("GET", f"/v1/history/{quote(job_id, safe='')}"))
        except ClientError:
            fail(str(first))


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


def usage_fail(message: str) -> NoReturn:
    """A bad option value: one line, and exit status 2 as for click's own usage errors."""
    click.echo(f"labq: error: {message}", err=True)
    sys.exit(2)


# ---------------------------------------------------------------------------- tables that fit
#
# Every `labq` table is sized to the terminal: the columns that hold names (users, accounts,
# jobs, nodes, models) are cut with an ellipsis, the widest first, down to a least width; if that
# is not enough, optional columns are left out; ids, numbers, states and times are never cut.

NO_LIMIT = 10_000  # the console width when output goes to a pipe: nothing to fit


@dataclass(frozen=True)
class Col:
    """One column of a fitted table."""

    header: str
    cut: int = 0  # the narrowest its names may be cut to (0: its cells are never cut)
    right: bool = False  # numbers: right-justified
    drop: int = 0  # > 0: left out when cutting names is not enough, the highest first


@dataclass(frozen=True)
class Named:
    """A cell whose `name` may be cut while `before` and `after` stay whole: `8:` + `H100…`
    (a GPU count and its model), `gpu-no…` + `:0-3` (a node and the GPU indices)."""

    name: str
    before: str = ""
    after: str = ""


if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    Cell = str | Named | Text  # str and Named: text as a user typed it, shown as typed


def out_width() -> int | None:
    """The cells a line may take: the terminal's width (`COLUMNS` where set); None when the
    output goes to a pipe or file, where nothing needs cutting."""
    from rich.console import Console

    if "COLUMNS" in os.environ or sys.stdout.isatty():
        return int(Console().width)
    return None


def _text_of(cell: Cell) -> str:
    if isinstance(cell, Named):
        return plain(cell.before) + plain(cell.name) + plain(cell.after)
    return cell if isinstance(cell, str) else cell.plain


def _least(col: Col, cells: list[Cell], natural: int, header: bool) -> int:
    """The narrowest `col` may become: its natural width where it is never cut, else its cut
    width, its header, and each Named cell's fixed parts and one cell of name."""
    from rich.cells import cell_len

    if not col.cut:
        return natural
    fixed = [cell_len(plain(c.before) + plain(c.after)) + 1 for c in cells
             if isinstance(c, Named)]
    return min(natural, max(col.cut, cell_len(col.header) if header else 0, *fixed))


def fit_columns(cols: list[Col], rows: list[list[Cell]], width: int | None,
                header: bool = True) -> tuple[list[int], list[int]]:
    """Which columns to show and the width of each (one cell between columns) so a line fits
    `width`: optional columns left out while even the least widths do not fit, then the
    widest cut column narrowed one cell at a time. Without `width`, every column whole."""
    from rich.cells import cell_len

    natural = [max([cell_len(col.header) if header else 0,
                    *(cell_len(_text_of(row[i])) for row in rows)])
               for i, col in enumerate(cols)]
    least = [_least(col, [row[i] for row in rows], natural[i], header)
             for i, col in enumerate(cols)]
    keep = list(range(len(cols)))
    widths = list(natural)
    if width is None:
        return keep, widths
    while sum(least[i] for i in keep) + len(keep) - 1 > width:
        optional = [i for i in keep if cols[i].drop]
        if not optional:
            break
        keep.remove(max(optional, key=lambda i: (cols[i].drop, i)))
    over = sum(widths[i] for i in keep) + len(keep) - 1 - width
    while over > 0:
        narrowable = [i for i in keep if widths[i] > least[i]]
        if not narrowable:
            break
        index = max(narrowable, key=lambda i: (widths[i], -i))
        widths[index] -= 1
        over -= 1
    return keep, [widths[i] for i in keep]


def _cut(cell: Cell, width: int) -> Text:
    """`cell` cut to `width` cells with an ellipsis, a Named cell in its name only."""
    from rich.cells import cell_len
    from rich.text import Text

    if isinstance(cell, Named):
        fixed = cell_len(plain(cell.before) + plain(cell.after))
        name = Text(plain(cell.name))
        name.truncate(max(1, width - fixed), overflow="ellipsis")
        return Text(plain(cell.before)) + name + Text(plain(cell.after))
    text = Text(plain(cell)) if isinstance(cell, str) else cell.copy()
    text.truncate(width, overflow="ellipsis")
    return text


def fitted_table(cols: list[Col], rows: list[list[Cell]], width: int | None,
                 header: bool = True) -> tuple[Table, int]:
    """A borderless table of `rows` that fits `width` (`fit_columns`), and its width; text cells
    are shown as typed, never read as markup."""
    from rich.cells import cell_len
    from rich.table import Table

    keep, widths = fit_columns(cols, rows, width, header)
    table = Table(box=None, header_style="bold", padding=(0, 1, 0, 0), pad_edge=False,
                  show_header=header)
    for index, cells in zip(keep, widths, strict=True):
        col = cols[index]
        table.add_column(col.header, justify="right" if col.right else "left", no_wrap=True,
                         overflow="ellipsis", width=cells, min_width=cells)
    for row in rows:
        out: list[str | Text] = []
        for index, cells in zip(keep, widths, strict=True):
            cell = row[index]
            if isinstance(cell, Named) or cell_len(_text_of(cell)) > cells:
                out.append(_cut(cell, cells))
            else:
                out.append(markup(cell) if isinstance(cell, str) else cell)
        table.add_row(*out)
    return table, sum(widths) + len(widths) - 1


def print_lines(renderable: Any, width: int | None) -> None:
    """Print a table at `width` cells (no limit: None), without trailing blanks; wider only
    where its columns cannot be cut (rich would squeeze them instead)."""
    from rich.console import Console

    console = Console(width=NO_LIMIT)
    if width is not None:
        console = Console(width=max(width, console.measure(renderable).maximum))
    with console.capture() as captured:
        console.print(renderable)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


def print_table(cols: list[Col], rows: list[list[Cell]], width: int | None,
                header: bool = True) -> None:
    """A fitted table on stdout; wider than `width` only where its columns cannot be cut."""
    print_lines(fitted_table(cols, rows, width, header)[0], width)


def echo_wrapped(text: str, width: int | None, indent: int = 0) -> None:
    """Words for a person, wrapped to `width` (lines after the first indented by `indent`);
    a path or other long word is never broken."""
    import textwrap

    if width is None or len(text) <= width:
        click.echo(text)
        return
    click.echo(textwrap.fill(text, width, subsequent_indent=" " * indent,
                             break_long_words=False, break_on_hyphens=False))
