"""`Store` is split by role (jobs, nodes, accounts, leadership), one class each on a shared
core, behind one facade that keeps every method name callers used before the split."""

from __future__ import annotations

from importlib import resources

import pytest

from scheduler.store import Store
from scheduler.store.accountstore import AccountStore
from scheduler.store.core import StoreCore
from scheduler.store.jobstore import JobStore
from scheduler.store.leadership import LeaderStore
from scheduler.store.nodestore import NodeStore
from scheduler.store.store import ROLES

# Store's public names before the split: callers need no change (count_user_jobs is gone: the
# max_jobs cap is checked in the submit script, see test_pending_cap).
BEFORE_THE_SPLIT = {
    "accounts", "active_jobs", "array", "array_set", "arrays", "cancel", "cancel_unmade",
    "charge", "check_token", "close", "cluster_reads", "connect",
    "create_token", "daily_usage", "done_ids", "done_jobs", "expire_arrays", "expire_done",
    "finish", "from_url", "get_job", "get_jobs", "heartbeat", "history", "hold", "job_counts",
    "job_fields", "leader", "lease", "list_jobs", "mark_running", "memory", "node_down",
    "node_orders", "nodes", "ping", "pop_changed", "put_accounts", "queue_ids", "report_runs",
    "request_stop", "requeue", "requeue_job", "revoke_token", "run_statuses", "send_stop",
    "set_half_life", "set_idle", "set_reasons", "spawn_tasks", "start", "stats", "stored_jobs",
    "submit", "submit_array", "tokens", "uncount", "update_job", "usage_hash", "wait_wake",
    "waiting_ids", "waiting_jobs", "with_array_request",
}


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_") and name != "SCRIPTS"}


def test_the_facade_keeps_every_method_name() -> None:
    assert _public(Store) >= BEFORE_THE_SPLIT


def test_each_role_has_its_own_methods_and_the_facade_only_reads_across_roles() -> None:
    core = _public(StoreCore)
    owned = {role: _public(role) - core for role in ROLES}
    for role, names in owned.items():
        for other, other_names in owned.items():
            if other is not role:
                assert not names & other_names, (role.__name__, other.__name__)
    spans = _public(Store) - core - set().union(*owned.values())
    assert spans == {"cluster_reads", "memory", "stats"}
    assert "lease" in owned[LeaderStore] and "heartbeat" in owned[NodeStore]
    assert "put_accounts" in owned[AccountStore] and "start" in owned[JobStore]


def test_every_script_belongs_to_exactly_one_role() -> None:
    folder = resources.files("scheduler.store") / "lua"
    on_disk = {f.name[:-4] for f in folder.iterdir()
               if f.name.endswith(".lua") and not f.name.startswith("_")}
    declared = [name for cls in Store.__mro__ for name in vars(cls).get("SCRIPTS", ())]
    assert sorted(declared) == sorted(on_disk)


@pytest.mark.parametrize("role", ROLES)
def test_a_role_stands_alone_with_only_its_scripts(role: type[StoreCore]) -> None:
    store = role.from_url("redis://localhost:1/0")
    assert isinstance(store, role)
    mine = {name for cls in role.__mro__ for name in vars(cls).get("SCRIPTS", ())}
    assert set(store._scripts) == mine
