"""The account tree and users: pure changes, and their compare-and-set in the real store."""

from __future__ import annotations

import json

import pytest

from scheduler.accounts.changes import account_changes
from scheduler.accounts.tree import AccountConfig, Accounts, AccountsError, UserConfig
from scheduler.model import JobState
from scheduler.store import Store, parse_decayed


def apply(state: Accounts, body: dict[str, object]) -> Accounts:
    accounts, users = dict(state.accounts), dict(state.users)
    for kind, name, value in account_changes(state, body):
        target: dict = accounts if kind == "account" else users
        if value:
            cls = AccountConfig if kind == "account" else UserConfig
            target[name] = cls(**json.loads(value))
        else:
            target.pop(name, None)
    return Accounts(accounts, users, state.version + 1)


def lab() -> Accounts:
    state = Accounts({}, {})
    for body in (
        {"target": "account", "op": "add", "name": "lab"},
        {"target": "account", "op": "add", "name": "vision", "parent": "lab", "shares": 3},
        {"target": "account", "op": "add", "name": "nlp", "parent": "lab", "shares": 1},
        {"target": "user", "op": "add", "name": "alice", "account": "vision", "shares": 2},
        {"target": "user", "op": "add", "name": "alice", "account": "nlp"},
        {"target": "user", "op": "add", "name": "bob", "account": "nlp"},
    ):
        state = apply(state, body)
    return state


def test_tree_and_memberships() -> None:
    state = lab()
    assert state.children("lab") == ["nlp", "vision"]
    assert state.accounts["vision"].shares == 3
    assert state.users["alice"].accounts == {"vision": 2.0, "nlp": 1.0}
    assert state.users["alice"].default_account == "vision"  # the first one added
    assert state.members("nlp") == ["alice", "bob"]


def test_account_for_uses_default_and_refuses_foreign_accounts() -> None:
    state = lab()
    assert state.account_for("alice", None, "default") == "vision"
    assert state.account_for("alice", "nlp", "default") == "nlp"
    with pytest.raises(AccountsError, match="bob is not in account 'vision'"):
        state.account_for("bob", "vision", "default")
    assert state.account_for("stranger", None, "default") == "default"  # not configured
    assert state.account_for("stranger", "my-project", "default",
                             enforce=False) == "my-project"  # free label
    with pytest.raises(AccountsError, match="stranger is not in account 'vision'"):
        state.account_for("stranger", "vision", "default")  # a configured account is not free


@pytest.mark.parametrize(("body", "message"), [
    ({"target": "account", "op": "add", "name": "lab"}, "exists already"),
    ({"target": "account", "op": "add", "name": "x", "parent": "nope"}, "no parent account"),
    ({"target": "account", "op": "add", "name": "bad name"}, "bad account name"),
    ({"target": "account", "op": "add", "name": "x", "shares": -1}, "zero or more"),
    ({"target": "account", "op": "set", "name": "lab", "parent": "vision"}, "its own sub-account"),
    ({"target": "account", "op": "rm", "name": "lab"}, "has sub-accounts"),
    ({"target": "account", "op": "rm", "name": "nlp"}, "has users"),
    ({"target": "user", "op": "add", "name": "carol", "account": "nope"}, "no account 'nope'"),
    ({"target": "user", "op": "add", "name": "bob", "account": "nlp"}, "already"),
    ({"target": "user", "op": "add", "name": "carol"}, "--account"),
    ({"target": "user", "op": "set", "name": "carol", "admin": True}, "no user 'carol'"),
    ({"target": "user", "op": "set", "name": "bob", "default_account": "vision"}, "not in account"),
    ({"target": "user", "op": "set", "name": "bob", "max_jobs": "lots"}, "whole number"),
    ({"target": "user", "op": "rm", "name": "bob", "account": "vision"}, "not in account"),
])
def test_bad_changes_are_refused_with_a_reason(body: dict[str, object], message: str) -> None:
    with pytest.raises(AccountsError, match=message):
        account_changes(lab(), body)


def test_set_and_remove() -> None:
    state = apply(lab(), {"target": "user", "op": "set", "name": "alice", "account": "nlp",
                          "shares": 5, "default_account": "nlp", "admin": True,
                          "max_running_gpus": 4, "max_jobs": "none"})
    alice = state.users["alice"]
    assert alice.accounts["nlp"] == 5 and alice.default_account == "nlp" and alice.admin
    assert alice.max_running_gpus == 4 and alice.max_jobs is None
    state = apply(state, {"target": "user", "op": "rm", "name": "alice", "account": "nlp"})
    assert state.users["alice"].accounts == {"vision": 2.0}
    assert state.users["alice"].default_account == "vision"
    state = apply(state, {"target": "user", "op": "rm", "name": "bob"})
    assert "bob" not in state.users
    state = apply(state, {"target": "account", "op": "set", "name": "nlp", "parent": "root"})
    assert state.accounts["nlp"].parent == "root"
    state = apply(state, {"target": "account", "op": "rm", "name": "nlp"})
    assert "nlp" not in state.accounts


async def test_store_compare_and_set_refuses_a_stale_version(store: Store) -> None:
    state = await store.accounts()
    assert state.version == 0 and state.accounts == {}
    changes = account_changes(state, {"target": "account", "op": "add", "name": "lab"})
    assert await store.put_accounts(state.version, changes)
    again = await store.accounts()
    assert again.version == 1 and again.accounts["lab"].parent == "root"
    late = account_changes(state, {"target": "account", "op": "add", "name": "other"})
    assert not await store.put_accounts(state.version, late)  # read version 0: stale now
    assert "other" not in (await store.accounts()).accounts


async def test_decayed_usage_is_charged_per_association_and_halves_per_half_life(
    store: Store,
) -> None:
    from tests.builders import T0, job_of, lead, report, started, usage_totals

    await store.set_half_life(100.0)
    assert parse_decayed(await store.usage_hash(), T0) == {}
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await started(store, epoch, [0, 1], weight=3.0, user="alice", account="vision")
    await store.charge(epoch, [job_id], T0 + 10)  # 2 GPUs x 10 s x weight 3 = 60 units
    usage = await store.usage_hash()
    assert parse_decayed(usage, T0 + 10) == {("vision", "alice"): pytest.approx(60.0)}
    assert parse_decayed(usage, T0 + 110) == {("vision", "alice"): pytest.approx(30.0)}
    job = await job_of(store, job_id)
    # 10 s later, the next 10 s add 60 to what had decayed for 10 s.
    await store.finish(epoch, job, JobState.SUCCEEDED, 0, "Completed", T0 + 20)
    assert parse_decayed(await store.usage_hash(), T0 + 20) == {
        ("vision", "alice"): pytest.approx(60.0 * 2 ** (-10 / 100) + 60.0)}
    totals = await usage_totals(store)
    assert totals["user"]["alice"]["billed"] == pytest.approx(120.0)  # totals never decay
