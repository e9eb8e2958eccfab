"""Fair share over an account tree: Slurm's Fair Tree (the default) and classic fair share.

Pure: inputs are the account tree, the user associations and each association's decayed
billed usage; the output is a `FairShareTable` (one `ShareRow` per account and association,
as `labq quota` / `sshare -l` shows them) whose `factor(account, user)` is the fair-share
factor in [0, 1] that the priority uses.

Fair Tree (https://slurm.schedmd.com/fair_tree.html). Each association gets a Level Fairshare
from itself and its siblings only::

    LF = S / U     S = shares / sum of the siblings' shares (self included)
                   U = raw usage / the parent's raw usage (= the siblings' total)

LF is 0 where S is 0 and infinity where U is 0 (and S is not). The tree is sorted by LF,
highest first, and visited depth first; users are ranked as they are found. The best user's
factor is 1.0; a user's factor is its rank / the number of user associations. Ties, as the page
says: sibling users with equal LF share a rank; a user with the same LF as a sibling account
gets the same rank as that account's highest ranked user (users sort before accounts on equal
LF); sibling accounts with equal LF have their children merged and sorted together before
descending. (Slurm's C code at the time of writing never actually merges, because
`_count_tied_accounts` stops at the first account; we follow the documented rule.)

Classic (https://slurm.schedmd.com/classic_fair_share.html)::

    F  = 2 ** (-UE / S)            S  = product of shares / siblings' shares up to root
    UE = UA + (UE_parent - UA) * S_child / S_all_siblings     (UE = UA just under root)
    UA = raw usage / the cluster's total usage

F is 0 where S is 0 (Slurm's `priority_p_calc_fs_factor`); where all siblings have 0 shares,
UE is the parent's (Slurm's `_set_usage_efctv`).

Robustness (nothing here raises for a messy tree; only for bad numbers or an unknown
algorithm):

- the root account ``"root"`` exists even if not given; its parent and shares are ignored;
- an account whose parent is unknown, or that is not ``"root"`` but has no parent, or that is
  on a parent cycle, hangs under root;
- an `Assoc` whose account is unknown gets that account created under root with shares 1;
- a usage key with no `Assoc` gets an `Assoc` with shares 1;
- a later duplicate `Account` or `Assoc` replaces an earlier one;
- shares of 0 are allowed (Fair Tree: LF 0, last among its siblings; classic: factor 0);
- negative or non-finite shares or usage raise `ValueError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from scheduler.policy.sharetree import (
    ROOT,
    Account,
    AccountTree,
    Assoc,
    Node,
    build_tree,
    check_usage,
    fair_tree_key,
    set_level_values,
    sort_children,
    sum_usage,
    walk,
)

__all__ = ["ALGORITHMS", "CLASSIC", "FAIR_TREE", "ROOT", "Account", "AccountTree", "Assoc",
           "FairShareTable", "ShareRow", "compute_fairshare"]

FAIR_TREE = "fair_tree"
CLASSIC = "classic"
ALGORITHMS = (FAIR_TREE, CLASSIC)


@dataclass(frozen=True)
class ShareRow:
    """One line of `labq quota` / `sshare -l`."""

    account: str
    user: str | None  # None for an account row
    raw_shares: float
    norm_shares: float  # shares / sum of siblings' shares (self included); 0.0 if that sum is 0
    raw_usage: float  # decayed usage: own for a user, subtree sum for an account
    norm_usage: float  # raw_usage / sum of siblings' raw_usage (0.0 if all are 0)
    effective_usage: float  # classic: Slurm's effective usage; Fair Tree: = norm_usage
    level_fs: float  # Fair Tree's S / U; math.inf where U == 0 (0.0 where S == 0)
    fairshare: float  # users: the factor in [0, 1]; accounts: classic 2^(-UE/S), Fair Tree 0.0
    rank: int | None  # Fair Tree rank of a user association (1 = best); None otherwise


@dataclass(frozen=True)
class _Inputs:
    """What a table was computed from, so `factor` can answer for a new association."""

    accounts: tuple[Account, ...]
    assocs: tuple[Assoc, ...]
    usage: tuple[tuple[tuple[str, str], float], ...]
    total_usage: float | None


class FairShareTable:
    """One computation's result: every association's factor, and the rows `labq quota` and
    `sshare -l` show (depth first, accounts before their children, root first).

    A table from `compute_fairshare` makes its rows when first asked: the simulator and the
    cycle read only `factor`, many times a second, and rows are 70 objects per refresh."""

    def __init__(self, algorithm: str, rows: Iterable[ShareRow] = (),
                 inputs: _Inputs | None = None) -> None:
        self.algorithm = algorithm  # "fair_tree" or "classic"
        self.inputs = inputs
        self._rows: tuple[ShareRow, ...] | None = tuple(rows)
        self._nodes: list[Node] = []
        self._factors = {(r.account, r.user): r.fairshare for r in self._rows
                         if r.user is not None}
        self._new_user_memo: dict[tuple[str, str], float] = {}

    @classmethod
    def _of(cls, algorithm: str, nodes: list[Node], inputs: _Inputs) -> FairShareTable:
        """The table of a computed tree (`nodes` in `walk` order); rows made when asked."""
        table = cls(algorithm, (), inputs)
        table._rows, table._nodes = None, nodes
        table._factors = {(n.account, n.user): n.fairshare for n in nodes if n.user is not None}
        return table

    @property
    def rows(self) -> tuple[ShareRow, ...]:
        if self._rows is None:
            self._rows = tuple(_rows(self._nodes))
            self._nodes = []
        return self._rows

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FairShareTable):
            return NotImplemented
        return self.algorithm == other.algorithm and self.rows == other.rows

    __hash__ = None  # type: ignore[assignment]  # mutable caches: not a dict key

    def __repr__(self) -> str:
        return f"FairShareTable(algorithm={self.algorithm!r}, rows={self.rows!r})"

    def factor(self, account: str, user: str) -> float:
        """The fair-share factor in [0, 1] of the user's association with the account.

        For an association the table does not know, the factor a new user with shares 1 and no
        usage would get in that account (created under root if unknown), computed by adding it
        to the inputs: in Fair Tree that places it among the users of its account by rank, in
        classic it is the account's own 2^(-UE/S). A table built without inputs answers 1.0.
        """
        known = self._factors.get((account, user))
        if known is not None:
            return known
        key = (account, user)
        if key not in self._new_user_memo:
            self._new_user_memo[key] = self._new_user_factor(account, user)
        return self._new_user_memo[key]

    @property
    def known(self) -> Mapping[tuple[str, str], float]:
        """The factor of each association the table has a row for (`factor` answers for
        the others too): one lookup, for callers that ask for many."""
        return self._factors

    def row(self, account: str, user: str | None = None) -> ShareRow | None:
        """The row of an account (user None) or of a user association; None if absent."""
        for r in self.rows:
            if r.account == account and r.user == user:
                return r
        return None

    def _new_user_factor(self, account: str, user: str) -> float:
        if self.inputs is None:
            return 1.0
        grown = compute_fairshare(
            self.inputs.accounts, (*self.inputs.assocs, Assoc(user, account, 1.0)),
            dict(self.inputs.usage), self.algorithm, total_usage=self.inputs.total_usage)
        return grown._factors[(account, user)]


def compute_fairshare(
    accounts: Sequence[Account], assocs: Sequence[Assoc],
    usage: Mapping[tuple[str, str], float], algorithm: str = FAIR_TREE,
    *, total_usage: float | None = None, tree: AccountTree | None = None,
) -> FairShareTable:
    """Every association's fair share under `algorithm` ("fair_tree" or "classic").

    `usage` maps (account, user) to the association's decayed billed usage. `total_usage` is
    the cluster's total decayed usage, classic's denominator (Slurm's root usage); it defaults
    to the sum of `usage` and is clamped to at least that sum. Fair Tree ignores it.
    See the module docstring for the rules that make any input a tree. `tree`: the
    `AccountTree` of `accounts` and `assocs` where the caller keeps one (`FairShare`).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown fair-share algorithm {algorithm!r}; "
                         f"expected one of {', '.join(ALGORITHMS)}")
    check_usage(usage, total_usage)
    if tree is None:
        tree = AccountTree(accounts, assocs)
    root = build_tree(tree, usage)
    sum_usage(root)
    set_level_values(root)
    sort_children(root)
    nodes = walk(root)  # depth first, children in Fair Tree order (sorted above)
    if algorithm == FAIR_TREE:
        _apply_fair_tree(root, nodes)
    else:
        total = max(root.raw_usage, total_usage or 0.0)
        _apply_classic(root, total)
    inputs = _Inputs(tuple(accounts), tuple(assocs), tuple(usage.items()), total_usage)
    return FairShareTable._of(algorithm, nodes, inputs)


# ------------------------------------------------------------------------------ Fair Tree


def _apply_fair_tree(root: Node, nodes: list[Node]) -> None:
    """Every user's Fair Tree factor; `nodes`: the tree's nodes (`walk`)."""
    user_count = sum(1 for n in nodes if n.is_user)
    ranker = _Ranker(user_count)
    ranker.visit(root.children, account_tied=False)
    for node in nodes:
        node.effective_usage = node.norm_usage
        if node.is_user:
            rank = node.slurm_rank if node.slurm_rank is not None else 0
            node.fairshare = rank / user_count


class _Ranker:
    """Slurm's `_calc_tree_fs`: `rank` is the current rank, `rnt` the rank were there no ties.

    Both start at the number of user associations and count down, so the best user gets
    factor user_count / user_count = 1.0.
    """

    def __init__(self, user_count: int) -> None:
        self.rank = user_count
        self.rnt = user_count

    def visit(self, siblings: list[Node], account_tied: bool, in_order: bool = True) -> None:
        """`siblings`: in Fair Tree order already when `in_order` (one node's children, as
        `sort_children` left them), else sorted here (the children of tied accounts)."""
        ordered = siblings if in_order else sorted(siblings, key=fair_tree_key)
        prev_level_fs: float | None = None
        i = 0
        while i < len(ordered):
            node = ordered[i]
            tied = account_tied if i == 0 else prev_level_fs == node.level_fs
            if node.is_user:
                if not tied:
                    self.rank = self.rnt
                node.slurm_rank = self.rank
                self.rnt -= 1
            else:
                last = _last_tied_account(ordered, i)
                merged = [c for acct in ordered[i:last + 1] for c in acct.children]
                self.visit(merged, tied, in_order=last == i)
                i = last
            prev_level_fs = node.level_fs
            i += 1


def _last_tied_account(ordered: list[Node], i: int) -> int:
    """The index of the last account after `i` whose level_fs equals that of account `i`."""
    last = i
    while (last + 1 < len(ordered) and not ordered[last + 1].is_user
           and ordered[last + 1].level_fs == ordered[i].level_fs):
        last += 1
    return last


# ------------------------------------------------------------------------------ classic


def _apply_classic(root: Node, total: float) -> None:
    root.global_shares = 1.0
    root.effective_usage = root.norm_usage
    root.fairshare = _classic_factor(root.effective_usage, root.global_shares)
    _classic_children(root, total)


def _classic_children(parent: Node, total: float) -> None:
    level_shares = sum(c.shares for c in parent.children)
    for child in parent.children:
        actual = min(1.0, child.raw_usage / total) if total > 0 else 0.0
        child.global_shares = parent.global_shares * child.norm_shares
        if parent.account == ROOT and parent.user is None:
            child.effective_usage = actual
        elif level_shares == 0:
            child.effective_usage = parent.effective_usage
        else:
            child.effective_usage = (
                actual + (parent.effective_usage - actual) * child.shares / level_shares)
        child.fairshare = _classic_factor(child.effective_usage, child.global_shares)
        _classic_children(child, total)


def _classic_factor(effective_usage: float, shares: float) -> float:
    """2^(-UE/S); 0 where S is 0 (Slurm's `priority_p_calc_fs_factor`)."""
    if shares <= 0:
        return 0.0
    return float(2.0 ** (-effective_usage / shares))


# ------------------------------------------------------------------------------ rows


def _rows(nodes: list[Node]) -> Iterator[ShareRow]:
    """The table's rows, of the tree's nodes in `walk` order."""
    user_count = sum(1 for n in nodes if n.is_user)
    for n in nodes:
        rank = None
        if n.is_user and n.slurm_rank is not None:
            rank = user_count - n.slurm_rank + 1
        yield ShareRow(
            account=n.account, user=n.user, raw_shares=n.shares, norm_shares=n.norm_shares,
            raw_usage=n.raw_usage, norm_usage=n.norm_usage, effective_usage=n.effective_usage,
            level_fs=n.level_fs, fairshare=n.fairshare, rank=rank)
