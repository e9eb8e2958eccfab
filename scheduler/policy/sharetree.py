"""The account tree fair share works on, built once per accounts version (`AccountTree`), and
the nodes one Fair Tree or classic computation fills in (`build_tree`).

The robustness rules (`fairshare`'s docstring) are applied once, when the tree is built: the
root exists, an account with an unknown or missing parent or on a parent cycle hangs under
root, an association of an unknown account creates that account under root with shares 1, a
later duplicate replaces an earlier one, and negative or non-finite shares raise ValueError.
Fair Tree, classic and fair now all read the same tree; an association a computation meets
that the tree lacks (usage or demand with no `Assoc`) joins a grown copy with shares 1
(`AccountTree.grown`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

ROOT = "root"
Key = tuple[str, str]  # (account, user)


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


class AccountTree:
    """Accounts and user associations as one tree, the robustness rules applied.

    `shares` and `parent` are by account (root excluded), `users` the shares of each
    (account, user); `child_accounts` and `child_users` list each account's children in the
    order they were given (fair now splits in that order; Fair Tree sorts its own)."""

    def __init__(self, accounts: Sequence[Account], assocs: Sequence[Assoc],
                 extra: Iterable[Key] = ()) -> None:
        _check_shares(accounts, assocs)
        self.accounts, self.assocs = accounts, assocs
        shares = {a.name: a.shares for a in accounts if a.name != ROOT}
        parents = {a.name: a.parent for a in accounts if a.name != ROOT}
        users: dict[Key, float] = {(s.account, s.user): s.shares for s in assocs}
        for key in extra:
            users.setdefault(key, 1.0)
        for account, _ in users:
            if account != ROOT and account not in shares:
                shares[account], parents[account] = 1.0, ROOT
        self.parent = resolve_parents(parents)
        self.shares = shares
        self.users = users
        self.child_accounts: dict[str, list[str]] = {}
        for name in shares:
            self.child_accounts.setdefault(self.parent[name], []).append(name)
        self.child_users: dict[str, list[Key]] = {}
        for key in users:
            self.child_users.setdefault(key[0], []).append(key)
        self.chains: dict[str, list[str]] = {name: self._walk(name) for name in [*shares, ROOT]}
        self._covering: dict[str, list[str]] = {}
        self._extra = tuple(extra)
        self._grown: tuple[frozenset[Key], AccountTree] | None = None

    def grown(self, keys: Iterable[Key]) -> AccountTree:
        """This tree, or where some of `keys` are not among its users, a tree with them added
        (shares 1, their accounts under root if unknown), kept for the next ask."""
        extra = [key for key in keys if key not in self.users]
        if not extra:
            return self
        wanted = frozenset(extra)
        if self._grown is None or self._grown[0] != wanted:
            self._grown = (wanted, AccountTree(self.accounts, self.assocs,
                                               (*self._extra, *extra)))
        return self._grown[1]

    def chain(self, account: str) -> list[str]:
        """The account and its ancestors below root, nearest first."""
        if account not in self.chains:
            self.chains[account] = self._walk(account)
        return self.chains[account]

    def covering(self, account: str) -> list[str]:
        """Whose GPU caps and budgets cover a job of `account`: the account, its ancestors and
        root, nearest first (an account the tree does not know: itself, then root)."""
        if account == ROOT:
            return [ROOT]
        covers = self._covering.get(account)
        if covers is None:
            covers = self._covering[account] = [*(self.chain(account) or [account]), ROOT]
        return covers

    def _walk(self, account: str) -> list[str]:
        out = []
        while account != ROOT and account in self.parent:
            out.append(account)
            account = self.parent[account]
        return out

    @cached_property
    def sorted_accounts(self) -> tuple[tuple[str, float, str], ...]:
        """(name, shares, parent) of every account below root, by name."""
        return tuple((name, self.shares[name], self.parent[name]) for name in sorted(self.shares))

    @cached_property
    def sorted_users(self) -> tuple[tuple[str, str, float], ...]:
        """(account, user, shares) of every association, sorted."""
        return tuple((account, user, s) for (account, user), s in sorted(self.users.items()))


@dataclass(slots=True, eq=False)
class Node:
    """A mutable node, used only while one table is computed (`fairshare`)."""

    account: str
    user: str | None
    shares: float
    children: list[Node] = field(default_factory=list)
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


def check_usage(usage: Mapping[tuple[str, str], float], total_usage: float | None) -> None:
    values = usage.values()
    # All >= 0 and their sum finite: every one good (a NaN fails the sum). Else find it.
    if values and not (min(values) >= 0 and math.isfinite(sum(values))):
        for (account, user), used in usage.items():
            if not _good_number(used):
                _check_number(f"usage of user {user!r} in account {account!r}", used)
    if total_usage is not None:
        _check_number("total usage", total_usage)


def build_tree(tree: AccountTree, usage: Mapping[Key, float]) -> Node:
    """The nodes of one computation: `tree` (grown by the usage's associations it lacks) with
    each user's raw usage."""
    shape = tree.grown(usage)
    root = Node(ROOT, None, 1.0)
    nodes = {ROOT: root}
    for name, s, _parent in shape.sorted_accounts:
        nodes[name] = Node(name, None, s)
    for name, _s, parent in shape.sorted_accounts:
        nodes[parent].children.append(nodes[name])
    get = usage.get
    for account, user, s in shape.sorted_users:
        nodes[account].children.append(
            Node(account, user, s, raw_usage=float(get((account, user), 0.0))))
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


def sum_usage(node: Node) -> float:
    if not node.is_user:
        node.raw_usage = sum([sum_usage(c) if c.children else c.raw_usage
                              for c in node.children])
    return node.raw_usage


def set_level_values(node: Node) -> None:
    """norm_shares, norm_usage and level_fs of every node below `node`, from its siblings."""
    if node.account == ROOT and node.user is None:
        node.norm_shares = 1.0
        node.norm_usage = 1.0 if node.raw_usage > 0 else 0.0
        node.level_fs = level_fs(node.norm_shares, node.norm_usage)
    children, used = node.children, node.raw_usage
    level_shares = sum([c.shares for c in children])
    for child in children:
        child.norm_shares = child.shares / level_shares if level_shares > 0 else 0.0
        child.norm_usage = child.raw_usage / used if used > 0 else 0.0
        child.level_fs = level_fs(child.norm_shares, child.norm_usage)
        if child.children:  # a leaf (a user, or an account with none) has nothing below
            set_level_values(child)


def sort_children(node: Node) -> None:
    """Every node's children in Fair Tree order, once: the walks below rely on it."""
    node.children.sort(key=fair_tree_key)
    for child in node.children:
        if child.children:
            sort_children(child)


def level_fs(s: float, u: float) -> float:
    """Slurm's `_calc_assoc_fs`: 0 where S is 0, else S / U (infinity where U is 0)."""
    if s == 0:
        return 0.0
    return math.inf if u == 0 else s / u


def fair_tree_key(node: Node) -> tuple[float, bool, str]:
    """Highest level_fs first; on equal level_fs users before accounts; then by name."""
    return (-node.level_fs, not node.is_user, node.name)


def walk(node: Node) -> list[Node]:
    """Depth first, a node before its children, children in Fair Tree order (sorted by
    `sort_children`)."""
    out, stack = [], [node]
    while stack:
        here = stack.pop()
        out.append(here)
        if here.children:
            stack.extend(reversed(here.children))
    return out
