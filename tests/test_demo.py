"""`labq up --demo`'s workload, submitted to the real API in process (on a real Valkey): the
account tree with its shares and a budget come first, through the admin API, and each job is
charged to its demo user's account."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.client import ClientError
from scheduler.server import demo
from tests.e2e_stack import ensure_user
from tests.security_server import ApiServer

WANT_ACCOUNTS = {"lab": ("root", 1.0), "vision": ("lab", 3.0), "nlp": ("lab", 1.0)}
CHARGED = {"alice": "vision", "bob": "vision", "carol": "nlp", "dave": "nlp"}


@pytest.fixture
def server(valkey_url: str) -> Iterator[ApiServer]:
    srv = ApiServer(valkey_url, nodes=(("n1", 4, "SIM-GPU"), ("n2", 4, "SIM-GPU"))).start()
    yield srv
    srv.stop()


def run_demo(server: ApiServer, monkeypatch: pytest.MonkeyPatch,
             unix_users: list[str]) -> tuple[list[str], list[str]]:
    """submit_demo as `labq up --demo` calls it, with the Unix users it would run jobs as
    (real users: the API takes jobs only for known, non-system users)."""
    for name in set(unix_users):
        ensure_user(name)
    monkeypatch.setattr(demo, "ensure_demo_users", lambda say: unix_users)
    said: list[str] = []
    return demo.submit_demo(server.settings, said.append), said


def jobs_by_name(server: ApiServer) -> dict[str, dict[str, Any]]:
    status, jobs = server.call("GET", "/v1/jobs?all=1")
    assert status == 200, jobs
    return {j["name"]: j for j in jobs}


def test_demo_makes_the_tree_and_budget_then_charges_each_users_account(
        server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, said = run_demo(server, monkeypatch, list(demo.DEMO_USERS))
    assert len(ids) == len(demo.DEMO_JOBS) + 1

    accounts = server.run(server.store.accounts())
    assert {a.name: (a.parent, a.shares) for a in accounts.accounts.values()} == WANT_ACCOUNTS
    assert {u: sorted(c.accounts) for u, c in accounts.users.items()} == {
        u: [a] for u, a in CHARGED.items()}
    [budget] = accounts.budgets.values()
    assert (budget.scope, budget.name, budget.limit_hours, budget.period) == (
        "account", "nlp", 10.0, "month")

    for name, job in jobs_by_name(server).items():
        assert job["account"] == CHARGED[job["user"]], (name, job["account"])

    # The tree, shares, members and budget are printed, and where to see them again.
    text = "\n".join(said)
    assert "demo: account tree (shares: users)" in said
    assert "demo:   lab (1)" in said
    assert "demo:     vision (3: alice, bob)" in said
    assert "demo:     nlp (1: carol, dave)" in said
    assert "budget nlp: 10.0 of 10.0 billed GPU-hours left this month" in text
    assert "labq admin account list" in text and "labq quota --all" in text
    assert "no demo accounts" not in text and "not submitted" not in text


def test_demo_run_again_keeps_the_tree_as_it_is(server: ApiServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run_demo(server, monkeypatch, list(demo.DEMO_USERS))
    # An admin changed the tree since: a second demo adds jobs and leaves the change alone.
    status, answer = server.call("POST", "/v1/admin/accounts", {
        "target": "account", "op": "set", "name": "vision", "shares": 5})
    assert status == 200, answer
    before = server.run(server.store.accounts())
    ids, said = run_demo(server, monkeypatch, list(demo.DEMO_USERS))
    after = server.run(server.store.accounts())
    assert len(ids) == len(demo.DEMO_JOBS) + 1
    assert (after.accounts, after.users, after.budgets) == (
        before.accounts, before.users, before.budgets)
    assert "demo:     vision (5: alice, bob)" in said


def test_demo_not_run_as_root_puts_you_in_both_accounts(
        server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not root: every job is the caller's, still charged as the demo user it stands for.
    ids, said = run_demo(server, monkeypatch, ["solo"] * len(demo.DEMO_USERS))
    assert len(ids) == len(demo.DEMO_JOBS) + 1
    accounts = server.run(server.store.accounts())
    assert sorted(accounts.users) == ["solo"]
    assert sorted(accounts.users["solo"].accounts) == ["nlp", "vision"]
    jobs = jobs_by_name(server)
    assert {j["user"] for j in jobs.values()} == {"solo"}
    assert jobs["alice-resnet"]["account"] == "vision"
    assert jobs["dave-whole-node"]["account"] == "nlp"
    assert "demo:     nlp (1: solo)" in said


class RefusingClient:
    """A coordinator that refuses every call (a caller who is not an admin, say)."""

    def request(self, method: str, path: str, body: Any = None) -> Any:
        raise ClientError("only admins may change accounts")


def test_demo_without_admin_rights_says_so_and_charges_the_default() -> None:
    said: list[str] = []
    refusing: Any = RefusingClient()
    charge = demo.setup_accounts(refusing, dict.fromkeys(demo.DEMO_USERS, "me"), said.append)
    assert charge == {}
    assert said == ["demo: no demo accounts (only admins may change accounts); jobs charge the "
                    "default account"]
