"""Caps on GPUs held at once, per user and per account (with sub-accounts), in the policy."""

from __future__ import annotations

from scheduler.policy import Limits, NodeView, PendingJob, RunningJob, Snapshot, schedule
from scheduler.policy.sharetree import Account
from scheduler.policy.snapshot import ShareInputs

# root -> lab -> vision, nlp; other (under root)
TREE = ShareInputs(accounts=(Account("root", None), Account("lab", "root"),
                             Account("vision", "lab"), Account("nlp", "lab"),
                             Account("other", "root")))


def snap(pending: list[PendingJob], running: list[RunningJob], limits: Limits,
         free: int = 8, shares: ShareInputs | None = None) -> Snapshot:
    node = NodeView("n1", "A100-80GB", 8, tuple(range(8 - free, 8)))
    return Snapshot((node,), tuple(pending), 1000.0, tuple(running), limits, shares=shares)


def job(job_id: str, user: str, account: str = "vision", gpus: int = 1) -> PendingJob:
    return PendingJob(job_id, user, account, gpus, float(job_id))


def test_user_cap_counts_running_and_newly_started_jobs() -> None:
    limits = Limits(user_gpus={"alice": 3})
    decisions = schedule(snap(
        [job("1", "alice", gpus=2), job("2", "alice", gpus=1), job("3", "alice"),
         job("4", "bob")],
        [RunningJob("9", "alice", "vision", 0, "n1")], limits))
    assert [s.job_id for s in decisions.starts] == ["1", "2", "4"]
    assert [r.code for r in decisions.reasons["3"]] == ["UserGpuLimit"]
    assert "may hold 3 GPUs at once and holds 3" in decisions.reasons["3"][0].detail


def test_account_cap_covers_sub_accounts() -> None:
    limits = Limits(account_gpus={"lab": 2})  # the tree is the share inputs' (TREE)
    decisions = schedule(snap(
        [job("1", "alice", "vision"), job("2", "bob", "nlp"), job("3", "carol", "other")],
        [RunningJob("9", "dave", "nlp", 1, "n1")], limits, shares=TREE))
    assert [s.job_id for s in decisions.starts] == ["1", "3"]
    assert decisions.reasons["2"][0].code == "AccountGpuLimit"
    assert "account lab may hold 2" in decisions.reasons["2"][0].detail


def test_a_capped_job_does_not_block_the_line_behind_it() -> None:
    limits = Limits(user_gpus={"alice": 0})
    decisions = schedule(snap([job("1", "alice"), job("2", "bob", gpus=8)], [], limits, free=4))
    assert decisions.starts == []
    assert [r.code for r in decisions.reasons["1"]] == ["UserGpuLimit"]
    assert [r.code for r in decisions.reasons["2"]] == ["Resources"]  # no Priority: 1 blocks none


def test_capped_job_that_also_lacks_gpus_lists_both_reasons() -> None:
    limits = Limits(user_gpus={"alice": 1})
    decisions = schedule(snap([job("1", "alice", gpus=4)], [], limits, free=2))
    assert [r.code for r in decisions.reasons["1"]] == ["UserGpuLimit", "Resources"]


def test_a_cap_covers_the_accounts_below_it_as_the_share_tree_has_them() -> None:
    """Caps and budgets walk the same account tree as fair share: root's cap covers every
    job, an unknown account's job is covered by its own cap and root's."""
    from scheduler.policy.sharetree import AccountTree

    tree = AccountTree(TREE.accounts, ())
    assert tree.covering("vision") == ["vision", "lab", "root"]
    assert tree.covering("nobody") == ["nobody", "root"] and tree.covering("root") == ["root"]
    limits = Limits(account_gpus={"root": 3})
    decisions = schedule(snap([job("1", "alice", "vision", 2), job("2", "bob", "nobody", 2)],
                              [RunningJob("9", "dave", "other", 1, "n1")], limits,
                              shares=TREE))
    assert [s.job_id for s in decisions.starts] == ["1"]
    assert decisions.reasons["2"][0].code == "AccountGpuLimit"
