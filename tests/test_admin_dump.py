"""`labq admin dump` / `labq admin load`: the account tree, users and budgets to a file and
back, through the real admin API on a real Valkey (tests/security_server.ApiServer)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from scheduler.cli.dump import dump, load
from tests.security_server import ApiServer

SETUP: list[dict[str, Any]] = [
    {"target": "account", "op": "add", "name": "lab", "shares": 3},
    {"target": "account", "op": "add", "name": "physics", "parent": "lab", "shares": 2},
    {"target": "account", "op": "set", "name": "physics", "max_running_gpus": 4},
    {"target": "account", "op": "add", "name": "ml.group", "shares": 1.5},
    {"target": "user", "op": "add", "name": "alice", "account": "physics", "shares": 2},
    {"target": "user", "op": "add", "name": "alice", "account": "ml.group"},
    {"target": "user", "op": "set", "name": "alice", "default_account": "ml.group",
     "admin": True, "max_jobs": 10},
    {"target": "user", "op": "add", "name": "bob", "account": "lab", "shares": 0.5},
    {"target": "budget", "op": "set", "scope": "account", "name": "physics", "limit": 100},
    {"target": "budget", "op": "set", "scope": "user", "name": "bob", "limit": 5},
    {"target": "budget", "op": "topup", "scope": "user", "name": "bob", "add": 2},
]


def _server(valkey_url: str) -> Iterator[ApiServer]:
    server = ApiServer(valkey_url).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def source(valkey_url: str) -> Iterator[ApiServer]:
    for server in _server(valkey_url):
        for body in SETUP:
            status, answer = server.call("POST", "/v1/admin/accounts", body)
            assert status == 200, answer
        yield server


@pytest.fixture
def target(valkey_url: str) -> Iterator[ApiServer]:
    yield from _server(valkey_url)


def _cli(server: ApiServer, command: Any, *args: str) -> Result:
    env = {"LABQ_HOME": str(server.dir), "LABQ_SOCKET": server.socket}
    return CliRunner().invoke(command, list(args), env=env)


def _tree(server: ApiServer) -> dict[str, Any]:
    status, data = server.call("GET", "/v1/accounts")
    assert status == 200
    return {"accounts": data["accounts"], "users": data["users"],
            "budgets": sorted((b["scope"], b["name"], round(b["limit_hours"], 6), b["period"])
                              for b in data["budgets"])}


def _version(server: ApiServer) -> int:
    return int(server.run(server.store.accounts()).version)


def test_dump_writes_every_account_user_and_budget(source: ApiServer) -> None:
    result = _cli(source, dump)
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.output)
    assert data["accounts"]["physics"] == {"parent": "lab", "shares": 2.0, "max_running_gpus": 4}
    assert data["accounts"]["ml.group"] == {"parent": "root", "shares": 1.5}
    assert data["users"]["alice"] == {"accounts": {"physics": 2.0, "ml.group": 1.0},
                                      "default_account": "ml.group", "admin": True,
                                      "max_jobs": 10}
    assert sorted((b["scope"], b["name"], b["limit_hours"]) for b in data["budgets"]) == [
        ("account", "physics", 100.0), ("user", "bob", 7.0)]


def test_a_dump_loads_into_an_empty_cluster_and_again_changes_nothing(
        source: ApiServer, target: ApiServer, tmp_path: Path) -> None:
    file = tmp_path / "accounts.toml"
    assert _cli(source, dump, str(file)).exit_code == 0
    result = _cli(target, load, str(file))
    assert result.exit_code == 0, result.output
    assert "changed: account physics: added" in result.output
    assert "changed: user alice: joins account ml.group" in result.output
    assert _tree(target) == _tree(source)
    version = _version(target)
    again = _cli(target, load, str(file))
    assert again.exit_code == 0 and again.output == (
        f"nothing to change: the cluster is as {file} says\n")
    assert _version(target) == version
    # and the source, top-ups and all, is already as its own dump says
    version = _version(source)
    assert "nothing to change" in _cli(source, load, str(file)).output
    assert _version(source) == version


def test_load_makes_named_entries_exactly_as_written(source: ApiServer, tmp_path: Path) -> None:
    file = tmp_path / "accounts.toml"
    file.write_text('[accounts.physics]\nparent = "root"\nshares = 5\n\n'
                    '[users.alice]\naccounts = { physics = 1.0 }\n\n'
                    '[[budgets]]\nscope = "user"\nname = "bob"\nlimit_hours = 3.0\n'
                    'period = "month"\n')
    dry = _cli(source, load, "--dry-run", str(file))
    before = _tree(source)
    assert dry.exit_code == 0, dry.output
    assert "would change: account physics: set (parent root, shares 5, max_running_gpus none)" \
        in dry.output
    assert _tree(source) == before  # a dry run changes nothing
    result = _cli(source, load, str(file))
    assert result.exit_code == 0, result.output
    tree = _tree(source)
    physics = next(a for a in tree["accounts"] if a["name"] == "physics")
    assert physics == {"name": "physics", "parent": "root", "shares": 5.0,
                       "max_running_gpus": None}
    alice = next(u for u in tree["users"] if u["name"] == "alice")
    assert alice == {"name": "alice", "accounts": {"physics": 1.0},
                     "default_account": "physics", "admin": False, "max_running_gpus": None,
                     "max_jobs": None}
    assert ("user", "bob", 3.0, "month") in tree["budgets"]  # its top-up is gone with it
    assert any(a["name"] == "lab" for a in tree["accounts"])  # not named: left alone
    assert "nothing to change" in _cli(source, load, str(file)).output


def test_a_bad_file_names_every_problem_and_changes_nothing(
        source: ApiServer, tmp_path: Path) -> None:
    file = tmp_path / "accounts.toml"
    file.write_text('[accounts.new]\nparent = "nowhere"\n\n'
                    '[accounts.lab]\nparent = "physics"\n\n'
                    '[accounts.neg]\nshares = -1\ncolour = "red"\n\n'
                    '[users.carol]\naccounts = { ghost = 1 }\n\n'
                    '[users.dave]\naccounts = { lab = 1 }\ndefault_account = "ml.group"\n\n'
                    '[[budgets]]\nscope = "account"\nname = "lab"\nlimit_hours = 1\n'
                    'period = "fortnight"\n')
    version, before = _version(source), _tree(source)
    result = _cli(source, load, str(file))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    for words in ("account 'neg': unknown key(s) colour", "account 'neg': shares = -1",
                  "user 'dave': default_account 'ml.group' is not one of its accounts",
                  "budget account 'lab': unknown --period 'fortnight'",
                  "account 'new': no parent account 'nowhere'",
                  "account 'lab': under parent 'physics' it would be its own ancestor",
                  "user 'carol': no account(s) 'ghost'"):
        assert sum(words in line for line in lines) == 1, (words, lines)
    assert lines[-1] == f"labq: error: nothing changed (7 problem(s) in {file})"
    assert len(lines) == 8
    assert _version(source) == version and _tree(source) == before


@pytest.mark.parametrize(("text", "words"), [
    ("[accounts\n", "not TOML"),
    ("[stuff]\n", "unknown table 'stuff'"),
    ("[accounts.root]\n", "account 'root': a name of letters"),
    ("[users.eve]\naccounts = {}\n", "accounts must be a table"),
    ("[users.eve]\naccounts = { lab = 1 }\nadmin = 'yes'\n", "admin = 'yes'"),
    ("[users.eve]\naccounts = { lab = 1 }\nmax_jobs = -3\n", "max_jobs = -3"),
    ("[[budgets]]\nscope = 'team'\nname = 'x'\nlimit_hours = 1\n", "give scope"),
    ("[[budgets]]\nscope = 'user'\nname = 'x'\nlimit_hours = -1\n", "limit_hours = -1"),
])
def test_each_bad_entry_is_one_line(source: ApiServer, tmp_path: Path, text: str,
                                    words: str) -> None:
    file = tmp_path / "accounts.toml"
    file.write_text(text)
    version = _version(source)
    result = _cli(source, load, str(file))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 2 and words in lines[0], lines
    assert _version(source) == version


def test_a_missing_file_is_one_line(source: ApiServer, tmp_path: Path) -> None:
    result = _cli(source, load, str(tmp_path / "none.toml"))
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert "cannot read" in result.output
