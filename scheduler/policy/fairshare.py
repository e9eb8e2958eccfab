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

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

ROOT = "root"
FAIR_TREE = "fair_tree"
CLASSIC = "classic"
ALGORITHMS = (FAIR_TREE, CLASSIC)


@dataclass(frozen=True)
class Account:
    name: str
    parent: str | None  # None only for the root account "root"
    shares: float = 1.0


@dataclass(frozen=True)
class Assoc:
    """A user's membership in an account (Slurm's user association)."""

    user: str
    account: str
    shares: float = 1.0


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
        self._nodes: list[_Node] = []
        self._factors = {(r.account, r.user): r.fairshare for r in self._rows
                         if r.user is not None}
        self._new_user_memo: dict[tuple[str, str], float] = {}

    @classmethod
    def _of(cls, algorithm: str, nodes: list[_Node], inputs: _Inputs) -> FairShareTable:
        """The table of a computed tree (`nodes` in `_walk` order); rows made when asked."""
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


# ------------------------------------------------------------------------------ the tree


@dataclass(slots=True, eq=False)
class _Node:
    """A mutable node, used only while one table is computed; never leaves this module."""

    account: str
    user: str | None
    shares: float
    children: list[_Node] = field(default_factory=list)
    raw_usage: float = 0.0
    norm_shares: float = 0.0
    norm_usage: float = 0.0
    level_fs: float = 0.0
    effective_usage: float = 0.0
    global_shares: float = 0.0  # classic S: the product of norm_shares up to root
    fairshare: float = 0.0
    slurm_rank: int | None = None  # Slurm's rank: user_count for the best user, downwards
    is_user: bool = field(init=False)  # a user association (a leaf), not an account
    name: str = field(init=False)  # the user's name for a user, else the account's

    def __post_init__(self) -> None:  # both asked often: set once, not properties
        self.is_user = self.user is not None
        self.name = self.user if self.user is not None else self.account


def compute_fairshare(
    accounts: Sequence[Account], assocs: Sequence[Assoc],
    usage: Mapping[tuple[str, str], float], algorithm: str = FAIR_TREE,
    *, total_usage: float | None = None,
) -> FairShareTable:
    """Every association's fair share under `algorithm` ("fair_tree" or "classic").

    `usage` maps (account, user) to the association's decayed billed usage. `total_usage` is
    the cluster's total decayed usage, classic's denominator (Slurm's root usage); it defaults
    to the sum of `usage` and is clamped to at least that sum. Fair Tree ignores it.
    See the module docstring for the rules that make any input a tree.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown fair-share algorithm {algorithm!r}; "
                         f"expected one of {', '.join(ALGORITHMS)}")
    _check_usage(usage, total_usage)
    root = _build_tree(_skeleton(accounts, assocs, usage), usage)
    _sum_usage(root)
    _set_level_values(root)
    _sort_children(root)
    nodes = _walk(root)  # depth first, children in Fair Tree order (sorted above)
    if algorithm == FAIR_TREE:
        _apply_fair_tree(root, nodes)
    else:
        total = max(root.raw_usage, total_usage or 0.0)
        _apply_classic(root, total)
    inputs = _Inputs(tuple(accounts), tuple(assocs), tuple(usage.items()), total_usage)
    return FairShareTable._of(algorithm, nodes, inputs)


def _check_number(what: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")


def _good_number(value: float) -> bool:
    return value >= 0 and math.isfinite(value)


def _check_shares(accounts: Sequence[Account], assocs: Sequence[Assoc]) -> None:
    # The message is built only for a bad number: this runs on every fair-share refresh.
    ok = _good_number
    for a in accounts:
        if a.name != ROOT and not ok(a.shares):
            _check_number(f"shares of account {a.name!r}", a.shares)
    for s in assocs:
        if not ok(s.shares):
            _check_number(f"shares of user {s.user!r} in account {s.account!r}", s.shares)


def _check_usage(usage: Mapping[tuple[str, str], float], total_usage: float | None) -> None:
    values = usage.values()
    # All >= 0 and their sum finite: every one good (a NaN fails the sum). Else find it.
    if values and not (min(values) >= 0 and math.isfinite(sum(values))):
        for (account, user), used in usage.items():
            if not _good_number(used):
                _check_number(f"usage of user {user!r} in account {account!r}", used)
    if total_usage is not None:
        _check_number("total usage", total_usage)


@dataclass(frozen=True)
class _Skeleton:
    """The tree's shape, made robust (see the module docstring): what `_build_tree` needs
    besides the usage. It depends on the accounts, the associations and the usage keys
    that have no association, which change far more rarely than the usage does."""

    accounts: tuple[tuple[str, float, str], ...]  # (name, shares, parent), by name
    users: tuple[tuple[str, str, float], ...]  # (account, user, shares), sorted
    known: frozenset[tuple[str, str]]  # the associations given (before the usage's)


# The last skeleton made, for the (immutable) accounts and associations it was made from and
# the usage keys it added: the coordinator and the simulator refresh the table from the same
# tree every few minutes, only the usage changes.
_LAST_SKELETON: dict[str, tuple[Sequence[Account], Sequence[Assoc], tuple[tuple[str, str],
                                                                           ...], _Skeleton]] = {}


def _skeleton(accounts: Sequence[Account], assocs: Sequence[Assoc],
              usage: Mapping[tuple[str, str], float]) -> _Skeleton:
    last = _LAST_SKELETON.get("last")
    if last is not None and last[0] is accounts and last[1] is assocs:
        known = last[3].known
        if tuple(key for key in usage if key not in known) == last[2]:
            return last[3]
    _check_shares(accounts, assocs)
    shares = {a.name: a.shares for a in accounts if a.name != ROOT}
    parents = {a.name: a.parent for a in accounts if a.name != ROOT}
    users: dict[tuple[str, str], float] = {(s.account, s.user): s.shares for s in assocs}
    known = frozenset(users)
    extra = tuple(key for key in usage if key not in known)
    for key in extra:
        users.setdefault(key, 1.0)
    for account, _user in users:
        if account != ROOT and account not in shares:
            shares[account], parents[account] = 1.0, ROOT
    parent_of = resolve_parents(parents)
    skeleton = _Skeleton(
        tuple((name, shares[name], parent_of[name]) for name in sorted(shares)),
        tuple((account, user, s) for (account, user), s in sorted(users.items())), known)
    if isinstance(accounts, tuple) and isinstance(assocs, tuple):  # immutable: keep it
        _LAST_SKELETON["last"] = (accounts, assocs, extra, skeleton)
    return skeleton


def _build_tree(skeleton: _Skeleton, usage: Mapping[tuple[str, str], float]) -> _Node:
    root = _Node(ROOT, None, 1.0)
    nodes = {ROOT: root}
    for name, s, _parent in skeleton.accounts:
        nodes[name] = _Node(name, None, s)
    for name, _s, parent in skeleton.accounts:
        nodes[parent].children.append(nodes[name])
    get = usage.get
    for account, user, s in skeleton.users:
        nodes[account].children.append(
            _Node(account, user, s, raw_usage=float(get((account, user), 0.0))))
    return root


def resolve_parents(parents: Mapping[str, str | None]) -> dict[str, str]:
    """Each account's parent, with unknown parents, missing parents and cycles cut to root."""
    parent_of = {name: (p if p is not None and (p == ROOT or p in parents) else ROOT)
                 for name, p in parents.items()}
    reaches_root: set[str] = {ROOT}
    for start in sorted(parent_of):
        path: list[str] = []
        on_path: set[str] = set()
        name = start
        while name not in reaches_root:
            if name in on_path:  # a cycle: hang the account that closes it under root
                parent_of[name] = ROOT
                break
            path.append(name)
            on_path.add(name)
            name = parent_of[name]
        reaches_root.update(path)
    return parent_of


def _sum_usage(node: _Node) -> float:
    if not node.is_user:
        node.raw_usage = sum([_sum_usage(c) if c.children else c.raw_usage
                              for c in node.children])
    return node.raw_usage


def _set_level_values(node: _Node) -> None:
    """norm_shares, norm_usage and level_fs of every node below `node`, from its siblings."""
    if node.account == ROOT and node.user is None:
        node.norm_shares = 1.0
        node.norm_usage = 1.0 if node.raw_usage > 0 else 0.0
        node.level_fs = _level_fs(node.norm_shares, node.norm_usage)
    children, used = node.children, node.raw_usage
    level_shares = sum([c.shares for c in children])
    for child in children:
        child.norm_shares = child.shares / level_shares if level_shares > 0 else 0.0
        child.norm_usage = child.raw_usage / used if used > 0 else 0.0
        child.level_fs = _level_fs(child.norm_shares, child.norm_usage)
        if child.children:  # a leaf (a user, or an account with none) has nothing below
            _set_level_values(child)


def _sort_children(node: _Node) -> None:
    """Every node's children in Fair Tree order, once: the walks below rely on it."""
    node.children.sort(key=_fair_tree_key)
    for child in node.children:
        if child.children:
            _sort_children(child)


def _level_fs(s: float, u: float) -> float:
    """Slurm's `_calc_assoc_fs`: 0 where S is 0, else S / U (infinity where U is 0)."""
    if s == 0:
        return 0.0
    return math.inf if u == 0 else s / u


# ------------------------------------------------------------------------------ Fair Tree


def _apply_fair_tree(root: _Node, nodes: list[_Node]) -> None:
    """Every user's Fair Tree factor; `nodes`: the tree's nodes (`_walk`)."""
    user_count = sum(1 for n in nodes if n.is_user)
    ranker = _Ranker(user_count)
    ranker.visit(root.children, account_tied=False)
    for node in nodes:
        node.effective_usage = node.norm_usage
        if node.is_user:
            rank = node.slurm_rank if node.slurm_rank is not None else 0
            node.fairshare = rank / user_count


def _fair_tree_key(node: _Node) -> tuple[float, bool, str]:
    """Highest level_fs first; on equal level_fs users before accounts; then by name."""
    return (-node.level_fs, not node.is_user, node.name)


class _Ranker:
    """Slurm's `_calc_tree_fs`: `rank` is the current rank, `rnt` the rank were there no ties.

    Both start at the number of user associations and count down, so the best user gets
    factor user_count / user_count = 1.0.
    """

    def __init__(self, user_count: int) -> None:
        self.rank = user_count
        self.rnt = user_count

    def visit(self, siblings: list[_Node], account_tied: bool, in_order: bool = True) -> None:
        """`siblings`: in Fair Tree order already when `in_order` (one node's children, as
        `_sort_children` left them), else sorted here (the children of tied accounts)."""
        ordered = siblings if in_order else sorted(siblings, key=_fair_tree_key)
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


def _last_tied_account(ordered: list[_Node], i: int) -> int:
    """The index of the last account after `i` whose level_fs equals that of account `i`."""
    last = i
    while (last + 1 < len(ordered) and not ordered[last + 1].is_user
           and ordered[last + 1].level_fs == ordered[i].level_fs):
        last += 1
    return last


# ------------------------------------------------------------------------------ classic


def _apply_classic(root: _Node, total: float) -> None:
    root.global_shares = 1.0
    root.effective_usage = root.norm_usage
    root.fairshare = _classic_factor(root.effective_usage, root.global_shares)
    _classic_children(root, total)


def _classic_children(parent: _Node, total: float) -> None:
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


def _walk(node: _Node) -> list[_Node]:
    """Depth first, a node before its children, children in Fair Tree order (sorted by
    `_sort_children`)."""
    out, stack = [], [node]
    while stack:
        here = stack.pop()
        out.append(here)
        if here.children:
            stack.extend(reversed(here.children))
    return out


def _rows(nodes: list[_Node]) -> Iterator[ShareRow]:
    """The table's rows, of the tree's nodes in `_walk` order."""
    user_count = sum(1 for n in nodes if n.is_user)
    for n in nodes:
        rank = None
        if n.is_user and n.slurm_rank is not None:
            rank = user_count - n.slurm_rank + 1
        yield ShareRow(
            account=n.account, user=n.user, raw_shares=n.shares, norm_shares=n.norm_shares,
            raw_usage=n.raw_usage, norm_usage=n.norm_usage, effective_usage=n.effective_usage,
            level_fs=n.level_fs, fairshare=n.fairshare, rank=rank)
