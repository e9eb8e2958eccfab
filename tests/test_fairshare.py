"""Fair share: Slurm's Fair Tree and classic algorithms over an account tree.

Worked examples come from Slurm's pages:
- Fair Tree: https://slurm.schedmd.com/fair_tree.html ("Overview for End Users": the
  UserA/UserB example, the Level Fairshare equation LF = S / U, and the three tie rules);
- classic: https://slurm.schedmd.com/classic_fair_share.html ("Example": accounts A..F, users
  1..5, with the effective usages and fair-share factors the page lists).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scheduler.policy.fairshare import (
    Account,
    Assoc,
    FairShareTable,
    ShareRow,
    compute_fairshare,
)

ALGORITHMS = ("fair_tree", "classic")


def row(table: FairShareTable, account: str, user: str | None = None) -> ShareRow:
    found = table.row(account, user)
    assert found is not None, f"no row for {account}/{user}"
    return found


def users_in_order(table: FairShareTable) -> list[str]:
    """User names, best first (by Fair Tree rank, then name for ties)."""
    users = [r for r in table.rows if r.user is not None]
    return [r.user for r in sorted(users, key=lambda r: (r.rank, r.user)) if r.user]


# ------------------------------------------------------------------------------ Fair Tree: tables


@dataclass
class FTCase:
    """A tree, and per user (account, user): the expected level_fs, rank and factor."""

    id: str
    accounts: list[Account]
    assocs: list[Assoc]
    usage: dict[tuple[str, str], float]
    expect: dict[tuple[str, str], tuple[float, int, float]]  # level_fs, rank, fairshare
    account_level_fs: dict[str, float]


FT_CASES = [
    # fair_tree.html, "Overview for End Users": root => Acct1 => Acct12 => UserA and
    # root => Acct1 => Acct16 => UserB. "Acct1 is the first common ancestor of UserA and UserB.
    # Check the Level FS values of Acct12 and Acct16. If UserB has a higher FairShare value
    # than UserA, Acct16 has a higher Level FS value than Acct12." Numbers are ours:
    #   Acct1: only child of root except Acct2; Acct2 has no usage.
    #   root level:  Acct1 S = 1/2, U = 40/40 = 1   -> LF 0.5
    #                Acct2 S = 1/2, U = 0           -> LF inf  (so UserC ranks first)
    #   Acct1 level: Acct12 S = 1/2, U = 30/40 = .75 -> LF 0.6667
    #                Acct16 S = 1/2, U = 10/40 = .25 -> LF 2.0   (so UserB beats UserA)
    #   user level: each user is alone in its account: S = 1, U = 1 (or 0 for UserC).
    # 3 users: UserC 3/3 = 1.0, UserB 2/3, UserA 1/3.
    FTCase(
        "slurm-doc-userA-userB",
        [Account("Acct1", "root"), Account("Acct2", "root"),
         Account("Acct12", "Acct1"), Account("Acct16", "Acct1")],
        [Assoc("UserA", "Acct12"), Assoc("UserB", "Acct16"), Assoc("UserC", "Acct2")],
        {("Acct12", "UserA"): 30.0, ("Acct16", "UserB"): 10.0},
        {("Acct2", "UserC"): (math.inf, 1, 1.0), ("Acct16", "UserB"): (1.0, 2, 2 / 3),
         ("Acct12", "UserA"): (1.0, 3, 1 / 3)},
        {"Acct1": 0.5, "Acct2": math.inf, "Acct12": 0.5 / 0.75, "Acct16": 2.0},
    ),
    # The same tree with the usage of the two users swapped: now Acct12 has the higher Level FS,
    # so UserA has the higher FairShare (the page's rule, read the other way round).
    FTCase(
        "slurm-doc-userA-userB-swapped",
        [Account("Acct1", "root"), Account("Acct2", "root"),
         Account("Acct12", "Acct1"), Account("Acct16", "Acct1")],
        [Assoc("UserA", "Acct12"), Assoc("UserB", "Acct16"), Assoc("UserC", "Acct2")],
        {("Acct12", "UserA"): 10.0, ("Acct16", "UserB"): 30.0},
        {("Acct2", "UserC"): (math.inf, 1, 1.0), ("Acct12", "UserA"): (1.0, 2, 2 / 3),
         ("Acct16", "UserB"): (1.0, 3, 1 / 3)},
        {"Acct1": 0.5, "Acct2": math.inf, "Acct12": 2.0, "Acct16": 0.5 / 0.75},
    ),
    # A lab tree, by hand. Usage: alice 20, bob 10 (chem = 30); dave 20, erin 40 (phys = 60).
    #   root:   chem S = 40/100 = .4, U = 30/90 = .3333 -> LF 1.2
    #           phys S = 60/100 = .6, U = 60/90 = .6667 -> LF 0.9      => chem's users first
    #   chem:   bob   S = .5, U = 10/30 -> LF 1.5 ; alice S = .5, U = 20/30 -> LF .75
    #   phys:   carol S = 2/4 = .5, U = 0 -> LF inf ; dave S = 1/4, U = 20/60 -> LF .75
    #           theory S = 1/4, U = 40/60 -> LF .375
    #   theory: erin  S = 1, U = 1 -> LF 1
    # Depth first: bob, alice, carol, dave, erin; 5 users -> 5/5, 4/5, 3/5, 2/5, 1/5.
    # carol has no usage at all yet ranks below alice: her account is the over-served one.
    FTCase(
        "lab-tree-by-hand",
        [Account("chem", "root", 40), Account("phys", "root", 60), Account("theory", "phys", 1)],
        [Assoc("alice", "chem"), Assoc("bob", "chem"), Assoc("carol", "phys", 2),
         Assoc("dave", "phys"), Assoc("erin", "theory")],
        {("chem", "alice"): 20, ("chem", "bob"): 10, ("phys", "dave"): 20,
         ("theory", "erin"): 40},
        {("chem", "bob"): (1.5, 1, 1.0), ("chem", "alice"): (0.75, 2, 0.8),
         ("phys", "carol"): (math.inf, 3, 0.6), ("phys", "dave"): (0.75, 4, 0.4),
         ("theory", "erin"): (1.0, 5, 0.2)},
        {"chem": 1.2, "phys": 0.9, "theory": 0.375},
    ),
    # Tie rule 1 (fair_tree.html "Ties"): "Sibling users with the same Level Fairshare receive
    # the same rank". u1 and u2: S = 1/3, U = 10/50 -> LF 1.6667 each; u3: U = 30/50 -> .5556.
    # Slurm's counter: u1, u2 get rank 3 (factor 3/3); u3 gets the no-tie rank 1 (factor 1/3).
    FTCase(
        "tie-sibling-users",
        [Account("lab", "root")],
        [Assoc("u1", "lab"), Assoc("u2", "lab"), Assoc("u3", "lab")],
        {("lab", "u1"): 10, ("lab", "u2"): 10, ("lab", "u3"): 30},
        {("lab", "u1"): (5 / 3, 1, 1.0), ("lab", "u2"): (5 / 3, 1, 1.0),
         ("lab", "u3"): (1 / 3 / 0.6, 3, 1 / 3)},
        {"lab": 1.0},
    ),
    # Tie rule 2: "A user with the same Level Fairshare as a sibling account will receive the
    # same rank as its highest ranked user". In P: user v (usage 10) and account Q (usage 10),
    # both S = .5, U = .5 -> LF 1. Users sort first: v gets rank 1; Q's best user q2 (no usage,
    # LF inf) ties with v; q1 (S = .5, U = 1 -> LF .5) gets the no-tie rank 3.
    FTCase(
        "tie-user-with-sibling-account",
        [Account("P", "root"), Account("Q", "P")],
        [Assoc("v", "P"), Assoc("q1", "Q"), Assoc("q2", "Q")],
        {("P", "v"): 10, ("Q", "q1"): 10},
        {("P", "v"): (1.0, 1, 1.0), ("Q", "q2"): (math.inf, 1, 1.0),
         ("Q", "q1"): (0.5, 3, 1 / 3)},
        {"P": 1.0, "Q": 1.0},
    ),
    # Tie rule 3: "Sibling accounts with the same Level Fairshare have their children lists
    # merged before descending". A and B: S = .5, U = 40/80 = .5 -> LF 1, tied.
    #   A: a1 S = .5, U = 10/40 -> LF 2 ; a2 S = .5, U = 30/40 -> LF .6667
    #   B: b1 S = .5, U = 15/40 -> LF 1.3333 ; b2 S = .5, U = 25/40 -> LF .8
    # Merged and sorted: a1, b1, b2, a2 (without merging it would be a1, a2, b1, b2).
    FTCase(
        "tie-accounts-merged",
        [Account("A", "root"), Account("B", "root")],
        [Assoc("a1", "A"), Assoc("a2", "A"), Assoc("b1", "B"), Assoc("b2", "B")],
        {("A", "a1"): 10, ("A", "a2"): 30, ("B", "b1"): 15, ("B", "b2"): 25},
        {("A", "a1"): (2.0, 1, 1.0), ("B", "b1"): (0.5 / 0.375, 2, 0.75),
         ("B", "b2"): (0.8, 3, 0.5), ("A", "a2"): (0.5 / 0.75, 4, 0.25)},
        {"A": 1.0, "B": 1.0},
    ),
]


@pytest.mark.parametrize("case", FT_CASES, ids=lambda c: c.id)
def test_fair_tree_worked_examples(case: FTCase) -> None:
    table = compute_fairshare(case.accounts, case.assocs, case.usage)
    assert table.algorithm == "fair_tree"
    for (account, user), (level_fs, rank, fairshare) in case.expect.items():
        r = row(table, account, user)
        assert r.level_fs == pytest.approx(level_fs), (account, user)
        assert r.rank == rank, (account, user)
        assert r.fairshare == pytest.approx(fairshare), (account, user)
        assert table.factor(account, user) == pytest.approx(fairshare)
    for account, level_fs in case.account_level_fs.items():
        assert row(table, account).level_fs == pytest.approx(level_fs), account
    assert len([r for r in table.rows if r.user is not None]) == len(case.expect)


def test_fair_tree_row_columns_follow_sshare() -> None:
    table = compute_fairshare(FT_CASES[2].accounts, FT_CASES[2].assocs, FT_CASES[2].usage)
    phys = row(table, "phys")
    assert (phys.raw_shares, phys.norm_shares) == (60, pytest.approx(0.6))
    assert (phys.raw_usage, phys.norm_usage) == (60, pytest.approx(60 / 90))
    assert phys.effective_usage == phys.norm_usage  # Fair Tree: U is the normalized usage
    assert phys.rank is None and phys.user is None
    dave = row(table, "phys", "dave")
    assert (dave.raw_usage, dave.norm_usage) == (20, pytest.approx(20 / 60))
    assert dave.norm_shares == pytest.approx(0.25)


def test_rows_are_depth_first_accounts_before_children() -> None:
    table = compute_fairshare(FT_CASES[2].accounts, FT_CASES[2].assocs, FT_CASES[2].usage)
    names = [(r.account, r.user) for r in table.rows]
    assert names[0] == ("root", None)
    assert names == [
        ("root", None), ("chem", None), ("chem", "bob"), ("chem", "alice"),
        ("phys", None), ("phys", "carol"), ("phys", "dave"), ("theory", None),
        ("theory", "erin"),
    ]


# ------------------------------------------------------------------------------ Fair Tree: edges


def test_zero_usage_everyone_ties_first() -> None:
    accounts = [Account("a", "root"), Account("b", "root", 3), Account("c", "b")]
    assocs = [Assoc("x", "a"), Assoc("y", "b"), Assoc("z", "c", 5)]
    table = compute_fairshare(accounts, assocs, {})
    for r in table.rows:
        assert r.level_fs == math.inf
        assert r.norm_usage == 0.0 and r.raw_usage == 0.0
        if r.user is not None:
            assert (r.rank, r.fairshare) == (1, 1.0)


def test_zero_shares_user_ranks_last_among_siblings_even_unused() -> None:
    # zero: S = 0 -> LF 0 (Slurm: "If S is 0, the assoc is assigned the lowest possible LF");
    # heavy: S = 1, U = 1 -> LF 1. So zero ranks after heavy despite using nothing.
    table = compute_fairshare(
        [Account("lab", "root")], [Assoc("zero", "lab", 0), Assoc("heavy", "lab", 1)],
        {("lab", "heavy"): 100})
    assert row(table, "lab", "zero").level_fs == 0.0
    assert row(table, "lab", "zero").rank == 2
    assert table.factor("lab", "zero") == pytest.approx(0.5)
    assert table.factor("lab", "heavy") == 1.0


def test_zero_shares_account_ranks_after_sibling_accounts() -> None:
    table = compute_fairshare(
        [Account("free", "root", 0), Account("paid", "root", 1)],
        [Assoc("f", "free"), Assoc("p", "paid")], {("paid", "p"): 50})
    assert row(table, "free").level_fs == 0.0
    assert users_in_order(table) == ["p", "f"]


def test_all_siblings_with_zero_shares_tie() -> None:
    table = compute_fairshare(
        [Account("lab", "root")], [Assoc("a", "lab", 0), Assoc("b", "lab", 0)],
        {("lab", "a"): 1, ("lab", "b"): 9})
    a, b = row(table, "lab", "a"), row(table, "lab", "b")
    assert a.norm_shares == b.norm_shares == 0.0
    assert a.rank == b.rank == 1 and a.fairshare == b.fairshare == 1.0


def test_users_directly_under_root() -> None:
    table = compute_fairshare([], [Assoc("admin", "root"), Assoc("ops", "root")],
                              {("root", "admin"): 5})
    assert table.factor("root", "ops") == 1.0
    assert table.factor("root", "admin") == 0.5


def test_empty_inputs_give_a_root_row_only() -> None:
    table = compute_fairshare([], [], {})
    assert [(r.account, r.user) for r in table.rows] == [("root", None)]
    assert table.factor("anything", "anyone") == 1.0  # a lone new user ranks first


# ------------------------------------------------------------------------------ robustness


def test_usage_without_assoc_gets_one_share() -> None:
    table = compute_fairshare([Account("lab", "root")], [Assoc("a", "lab")],
                              {("lab", "ghost"): 10.0})
    ghost = row(table, "lab", "ghost")
    assert ghost.raw_shares == 1.0 and ghost.raw_usage == 10.0
    assert table.factor("lab", "ghost") == 0.5  # ranked, behind the unused "a"
    assert table.factor("lab", "a") == 1.0


def test_assoc_with_unknown_account_creates_it_under_root() -> None:
    table = compute_fairshare([Account("lab", "root", 3)], [Assoc("x", "nowhere")],
                              {("nowhere", "x"): 2.0})
    nowhere = row(table, "nowhere")
    assert nowhere.raw_shares == 1.0
    assert nowhere.norm_shares == pytest.approx(1 / 4)  # siblings: lab (3) and nowhere (1)
    assert row(table, "nowhere", "x").raw_usage == 2.0


def test_account_with_unknown_or_missing_parent_hangs_under_root() -> None:
    table = compute_fairshare(
        [Account("orphan", "gone"), Account("loose", None), Account("lab", "root")],
        [Assoc("o", "orphan"), Assoc("l", "loose")], {})
    root_children = {r.account for r in table.rows if r.user is None and r.account != "root"}
    assert root_children == {"orphan", "loose", "lab"}
    for name in root_children:
        assert row(table, name).norm_shares == pytest.approx(1 / 3)


def test_parent_cycle_is_cut_at_root() -> None:
    table = compute_fairshare(
        [Account("a", "b"), Account("b", "a")], [Assoc("u", "a"), Assoc("v", "b")],
        {("a", "u"): 1, ("b", "v"): 2})
    assert {(r.account, r.user) for r in table.rows} == {
        ("root", None), ("a", None), ("b", None), ("a", "u"), ("b", "v")}
    assert row(table, "root").raw_usage == 3  # every user still counted once
    assert 0.0 < table.factor("a", "u") <= 1.0


def test_root_given_explicitly_is_the_same_root() -> None:
    given_root = compute_fairshare([Account("root", None, 99), Account("lab", "root")],
                                   [Assoc("u", "lab")], {("lab", "u"): 1})
    implicit = compute_fairshare([Account("lab", "root")], [Assoc("u", "lab")],
                                 {("lab", "u"): 1})
    assert given_root.rows == implicit.rows


def test_unknown_association_fair_tree_is_a_new_unused_user_in_its_account() -> None:
    case = FT_CASES[2]
    table = compute_fairshare(case.accounts, case.assocs, case.usage)
    # zoe joins phys with no usage: she ties with carol (LF inf) behind chem's two users.
    # 6 users: bob 6/6, alice 5/6, carol and zoe 4/6.
    assert table.factor("phys", "zoe") == pytest.approx(4 / 6)
    # A new user in the worst-served account lands after everyone that account outranks.
    assert table.factor("theory", "newbie") < table.factor("chem", "alice")
    # A new user in a new account: the account has no usage, LF inf at root -> first.
    assert table.factor("brand-new", "x") == 1.0
    assert table.row("phys", "zoe") is None  # asking does not change the table


def test_unknown_association_classic_is_its_accounts_factor() -> None:
    case = FT_CASES[2]
    table = compute_fairshare(case.accounts, case.assocs, case.usage, "classic")
    # A user with no usage has UE = UE_acct * s/L and S = S_acct * s/L: the factor is the
    # account's own 2^(-UE_acct / S_acct).
    assert table.factor("phys", "zoe") == pytest.approx(row(table, "phys").fairshare)
    assert table.factor("nowhere", "x") == 1.0


def test_table_without_inputs_answers_one_for_unknown() -> None:
    assert FairShareTable("fair_tree", ()).factor("a", "b") == 1.0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_shares_raise(bad: float) -> None:
    with pytest.raises(ValueError, match="shares of account 'lab'"):
        compute_fairshare([Account("lab", "root", bad)], [], {})
    with pytest.raises(ValueError, match="shares of user 'u' in account 'lab'"):
        compute_fairshare([], [Assoc("u", "lab", bad)], {})


def test_negative_usage_raises() -> None:
    with pytest.raises(ValueError, match="usage of user 'u'"):
        compute_fairshare([], [], {("lab", "u"): -5.0})
    with pytest.raises(ValueError, match="total usage"):
        compute_fairshare([], [], {}, "classic", total_usage=-1.0)


def test_unknown_algorithm_raises() -> None:
    with pytest.raises(ValueError, match="unknown fair-share algorithm 'fifo'"):
        compute_fairshare([], [], {}, "fifo")


# ------------------------------------------------------------------------------ classic


def classic_doc_example(total_usage: float | None = 1.0) -> FairShareTable:
    """classic_fair_share.html "Example": A 40 (B 30, C 10), D 60 (E 25, F 35); user 1 in B,
    users 2 and 3 with one share each in C, user 4 in E, user 5 in F. Usage as fractions of the
    machine: user 1 0.2, user 2 0.25, user 4 0.25 (so the cluster total R_H is 1.0)."""
    return compute_fairshare(
        [Account("A", "root", 40), Account("D", "root", 60), Account("B", "A", 30),
         Account("C", "A", 10), Account("E", "D", 25), Account("F", "D", 35)],
        [Assoc("user1", "B"), Assoc("user2", "C"), Assoc("user3", "C"),
         Assoc("user4", "E"), Assoc("user5", "F")],
        {("B", "user1"): 0.2, ("C", "user2"): 0.25, ("E", "user4"): 0.25},
        "classic", total_usage=total_usage)


def path_shares(table: FairShareTable, path: list[tuple[str, str | None]]) -> float:
    """Classic normalized shares: the product of sibling-normalized shares down the path."""
    return math.prod(row(table, a, u).norm_shares for a, u in path)


CLASSIC_DOC = [
    # user, account, path below root, normalized share, effective usage, factor (the page's)
    ("user1", "B", [("A", None), ("B", None)], 0.3, 0.3875, 0.408479),
    ("user2", "C", [("A", None), ("C", None)], 0.05, 0.275, 0.022097),
    ("user3", "C", [("A", None), ("C", None)], 0.05, 0.15, 0.125000),
    ("user4", "E", [("D", None), ("E", None)], 0.25, 0.25, 0.500000),
    ("user5", "F", [("D", None), ("F", None)], 0.35, 0.1458, 0.749154),
]


@pytest.mark.parametrize("user,account,path,shares,efctv,factor", CLASSIC_DOC,
                         ids=[c[0] for c in CLASSIC_DOC])
def test_classic_slurm_doc_example(user: str, account: str, path: list[tuple[str, str | None]],
                                   shares: float, efctv: float, factor: float) -> None:
    table = classic_doc_example()
    r = row(table, account, user)
    assert path_shares(table, [*path, (account, user)]) == pytest.approx(shares)
    assert r.effective_usage == pytest.approx(efctv, abs=5e-5)  # the page rounds 0.1458
    assert r.fairshare == pytest.approx(factor, abs=5e-6)
    assert table.factor(account, user) == r.fairshare
    assert r.rank is None  # ranks are Fair Tree's


def test_classic_slurm_doc_example_accounts() -> None:
    # "Account A's effective usage is therefore equal to .45. Account D's ... .25."
    # B: 0.2 + (0.45 - 0.2) * 30/40 = 0.3875; C: 0.25 + (0.45 - 0.25) * 10/40 = 0.3
    # E: 0.25 + (0.25 - 0.25) * 25/60 = 0.25; F: 0.0 + (0.25 - 0.0) * 35/60 = 0.1458
    table = classic_doc_example()
    expected = {"A": 0.45, "D": 0.25, "B": 0.3875, "C": 0.3, "E": 0.25, "F": 0.25 * 35 / 60}
    for account, efctv in expected.items():
        assert row(table, account).effective_usage == pytest.approx(efctv), account


def test_classic_total_usage_defaults_to_the_sum() -> None:
    # Without total_usage, R_H is the sum of the usage (0.7) and every UA grows by 1/0.7.
    table = classic_doc_example(total_usage=None)
    ua4 = 0.25 / 0.7  # user 4: E's siblings-weighted term vanishes as in the page (UE = UA)
    assert row(table, "E", "user4").effective_usage == pytest.approx(ua4)
    assert table.factor("E", "user4") == pytest.approx(2 ** (-ua4 / 0.25))
    # A total below the sum is clamped up to it (usage cannot exceed the cluster's).
    assert classic_doc_example(total_usage=0.1).rows == table.rows


def test_classic_small_tree_by_hand() -> None:
    # root: lab (1 share), other (1 share). lab: u1 usage 3, u2 usage 1; other: u3 no usage.
    # Total 4. Top tier UE = UA: lab UE = 4/4 = 1, other UE = 0. S: lab .5, other .5.
    # u1: UA = .75, UE = .75 + (1 - .75) * 1/2 = .875, S = .5 * .5 = .25 -> 2^-3.5 = .088388
    # u2: UA = .25, UE = .25 + (1 - .25) * 1/2 = .625, S = .25          -> 2^-2.5 = .176777
    # u3: UA = 0,   UE = 0 + (0 - 0) * 1/1 = 0,       S = .5           -> 2^0    = 1
    table = compute_fairshare(
        [Account("lab", "root"), Account("other", "root")],
        [Assoc("u1", "lab"), Assoc("u2", "lab"), Assoc("u3", "other")],
        {("lab", "u1"): 3, ("lab", "u2"): 1}, "classic")
    assert row(table, "lab", "u1").effective_usage == pytest.approx(0.875)
    assert row(table, "lab", "u2").effective_usage == pytest.approx(0.625)
    assert table.factor("lab", "u1") == pytest.approx(2 ** -3.5)
    assert table.factor("lab", "u2") == pytest.approx(2 ** -2.5)
    assert table.factor("other", "u3") == 1.0
    assert row(table, "lab").fairshare == pytest.approx(2 ** (-1 / 0.5))


@pytest.mark.parametrize("used,expected", [(0.0, 1.0), (1.0, 0.5), (2.0, 0.25), (3.0, 0.125)])
def test_classic_shape_two_to_minus_u_over_s(used: float, expected: float) -> None:
    # Users under root: UE = UA = used / total; S = 1/4. total = 4 so UA = used/4,
    # and UE/S = used: U = 0 -> 1.0, U = S -> 0.5, U = 2S -> 0.25.
    table = compute_fairshare(
        [], [Assoc("me", "root"), Assoc("a", "root"), Assoc("b", "root"), Assoc("c", "root")],
        {("root", "me"): used}, "classic", total_usage=4.0)
    assert table.factor("root", "me") == pytest.approx(expected)


def test_classic_zero_shares_factor_zero() -> None:
    table = compute_fairshare([Account("lab", "root")],
                              [Assoc("none", "lab", 0), Assoc("some", "lab")], {}, "classic")
    assert table.factor("lab", "none") == 0.0
    assert table.factor("lab", "some") == 1.0


def test_classic_all_zero_shares_level_takes_parents_effective_usage() -> None:
    table = compute_fairshare([Account("lab", "root")],
                              [Assoc("a", "lab", 0), Assoc("b", "lab", 0)],
                              {("lab", "a"): 1.0}, "classic")
    assert row(table, "lab", "b").effective_usage == row(table, "lab").effective_usage == 1.0
    assert table.factor("lab", "a") == table.factor("lab", "b") == 0.0  # S = 0


# ------------------------------------------------------------------------------ properties

SHARES = st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 3.0, 10.0])
USAGE = st.one_of(st.just(0.0), st.integers(1, 50).map(float),
                  st.floats(0.001, 1000.0, allow_nan=False))


@dataclass
class Tree:
    accounts: list[Account]
    assocs: list[Assoc]
    usage: dict[tuple[str, str], float]


@st.composite
def trees(draw: st.DrawFn, min_users: int = 1) -> Tree:
    n_accounts = draw(st.integers(1, 5))
    accounts: list[Account] = []
    for i in range(n_accounts):
        parent = draw(st.sampled_from(["root", *[a.name for a in accounts]]))
        accounts.append(Account(f"acct{i}", parent, draw(SHARES)))
    n_users = draw(st.integers(min_users, 7))
    assocs = [Assoc(f"u{i}", draw(st.sampled_from(["root", *[a.name for a in accounts]])),
                    draw(SHARES)) for i in range(n_users)]
    usage = {(a.account, a.user): draw(USAGE) for a in assocs}
    return Tree(accounts, assocs, usage)


def compute(tree: Tree, algorithm: str) -> FairShareTable:
    return compute_fairshare(tree.accounts, tree.assocs, tree.usage, algorithm)


@settings(max_examples=150, deadline=None)
@given(tree=trees(), algorithm=st.sampled_from(ALGORITHMS))
def test_property_factors_in_unit_interval(tree: Tree, algorithm: str) -> None:
    table = compute(tree, algorithm)
    users = [r for r in table.rows if r.user is not None]
    assert len(users) == len(tree.assocs)
    for r in table.rows:
        assert 0.0 <= r.fairshare <= 1.0
        assert 0.0 <= r.norm_shares <= 1.0 and 0.0 <= r.norm_usage <= 1.0
        assert r.level_fs >= 0.0
    if algorithm == "fair_tree":
        assert max(r.fairshare for r in users) == 1.0  # the best user always gets 1.0
        n = len(users)
        for r in users:  # factor = rank / count, with rank counted from the bottom
            assert r.rank is not None and r.fairshare == pytest.approx((n - r.rank + 1) / n)


def ancestors(tree: Tree, account: str) -> list[str]:
    """root, ..., account (the generated trees have no cycles or unknown parents)."""
    parent = {a.name: a.parent or "root" for a in tree.accounts}
    chain = [account]
    while chain[-1] != "root":
        chain.append(parent[chain[-1]])
    return chain[::-1]


@settings(max_examples=150, deadline=None)
@given(tree=trees(min_users=2))
def test_property_fair_tree_first_common_ancestor_rule(tree: Tree) -> None:
    """fair_tree.html: find the first common ancestor; if one side's child at the level below
    it has the higher Level FS, that side's user has the higher FairShare."""
    table = compute(tree, "fair_tree")
    level_fs = {(r.account, r.user): r.level_fs for r in table.rows}
    users = [(a.account, a.user) for a in tree.assocs]
    for x in users:
        for y in users:
            if x == y:
                continue
            px = [(a, None) for a in ancestors(tree, x[0])] + [x]
            py = [(a, None) for a in ancestors(tree, y[0])] + [y]
            depth = next(i for i, (a, b) in enumerate(zip(px, py, strict=False)) if a != b)
            if level_fs[px[depth]] > level_fs[py[depth]]:
                assert table.factor(*x) > table.factor(*y), (x, y)
            elif level_fs[px[depth]] == level_fs[py[depth]] and px[depth][1] is not None:
                # sibling users (the paths part at the users themselves) that tie share a rank
                if py[depth][1] is not None:
                    assert table.factor(*x) == table.factor(*y), (x, y)


@settings(max_examples=150, deadline=None)
@given(tree=trees(), algorithm=st.sampled_from(ALGORITHMS), heavy=USAGE.filter(lambda u: u > 0),
       shares=st.sampled_from([0.5, 1.0, 4.0]), data=st.data())
def test_property_unused_user_outranks_heavy_user_of_equal_shares(
        tree: Tree, algorithm: str, heavy: float, shares: float, data: st.DataObject) -> None:
    account = data.draw(st.sampled_from(["root", *[a.name for a in tree.accounts]]))
    assume(all(a.shares > 0 for a in tree.accounts))  # a 0-share ancestor zeroes classic S
    assocs = [*tree.assocs, Assoc("idle", account, shares), Assoc("hog", account, shares)]
    usage = {**tree.usage, (account, "hog"): heavy}
    table = compute_fairshare(tree.accounts, assocs, usage, algorithm)
    idle, hog = row(table, account, "idle"), row(table, account, "hog")
    assert idle.fairshare >= hog.fairshare
    if algorithm == "fair_tree":
        assert idle.rank is not None and hog.rank is not None and idle.rank < hog.rank
        assert idle.fairshare > hog.fairshare
    else:
        assert idle.effective_usage < hog.effective_usage


@settings(max_examples=200, deadline=None)
@given(tree=trees(), algorithm=st.sampled_from(ALGORITHMS), extra=USAGE.filter(lambda u: u > 0),
       data=st.data())
def test_property_more_usage_never_raises_own_factor(
        tree: Tree, algorithm: str, extra: float, data: st.DataObject) -> None:
    who = data.draw(st.sampled_from(tree.assocs))
    key = (who.account, who.user)
    before = compute(tree, algorithm).factor(*key)
    more = Tree(tree.accounts, tree.assocs, {**tree.usage, key: tree.usage[key] + extra})
    after = compute(more, algorithm).factor(*key)
    assert after <= before + 1e-12  # tolerance: float rounding of 2^(-UE/S) only
