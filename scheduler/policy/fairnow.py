"""Fair now: fair share on the GPUs each user holds *now*, blended with Fair Tree's ranking
on what they used *lately*.

Fair Tree and classic fair share (`fairshare`) rank users by decayed past usage only, so on a
busy afternoon a user with a long queue and little history takes every GPU that frees up
until the next usage refresh. This algorithm (``fairshare_algorithm = "fair_now"``) counts the
GPUs held now, as DRF and Kueue's admission fair sharing do, and keeps Fair Tree for the past:

    x(job)      = (held(u) + GPUs of u's own jobs ahead of it) / entitled(u)
    factor(job) = (1 - p) * 2 ** -x(job) + p * fair_tree(u)             in [0, 1]
    band(job)   = x(job) < 1   ("within your share now": every such job goes first)

- held: GPUs of the user's running normal-QOS jobs (scavenger jobs run on idle GPUs and are
  stopped for anyone, so they do not count);
- entitled: the capacity (healthy GPUs of nodes that are up) split down the account tree by
  shares, at each level max-min among the siblings that have a job pending or running,
  capped at what each asks for (an idle group's share goes to the others); x is the largest
  over the levels of the job's path that have rivals (group, then user);
- the jobs ahead: a user's own pending jobs in the order fewest GPUs, shortest time limit,
  oldest; counting them makes one cycle share free GPUs out max-min (progressive filling, as
  DRF does) instead of giving them all to whoever ranked first when the cycle began, and
  a user's short jobs go before their own long ones (shortest first within one user: it
  changes nothing between users);
- fair_tree: the user's Fair Tree factor on decayed usage, weighed p =
  ``fair_now_past_weight``: a heavy user of last week yields to a light one this week, and
  over weeks each account's GPU time stays as close to its shares as under Fair Tree;
- band: the cycle takes every job within its share now before any job beyond it, whatever
  the weights of age and size (`cycle.order_queue`): a user holding less than their share
  never waits for GPUs a user above their share starts a job on.

x = 1 means "at your fair share now". A user at 0 shares is entitled to nothing: factor 0.
"""

from __future__ import annotations

import heapq
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, islice, repeat

from scheduler.policy.fairshare import ROOT, Account, Assoc, resolve_parents
from scheduler.policy.snapshot import PendingJob, ShareInputs, Snapshot

FAIR_NOW = "fair_now"
SCAVENGER = "scavenger"  # as in `preemption` (imported there from the cycle's side)
Key = tuple[str, str]  # (account, user)


@dataclass(frozen=True)
class UserLoad:
    """One association's standing now: what `labq quota` and `labq priority` explain."""

    account: str
    user: str
    held: float  # GPUs held now (normal QOS)
    entitled: float  # fair GPUs now; 0 for a user with 0 shares
    account_held: float  # GPUs held now by the whole account (its sub-accounts included)
    account_entitled: float  # the account's fair GPUs now
    capacity: float  # GPUs the split starts from

    def level(self, ahead: float = 0.0) -> float:
        """x: GPUs held (plus `ahead`) over the entitlement; inf if entitled to none."""
        if self.entitled <= 0:
            return math.inf
        return (self.held + ahead) / self.entitled


def blend(level: float, past: float, past_weight: float) -> float:
    """The fair-share factor: (1 - past_weight) * 2^-level + past_weight * past, where
    `past` is the user's Fair Tree factor on decayed usage; 0 for a level of inf (no
    shares)."""
    if math.isnan(level) or math.isinf(level):
        return 0.0
    return (1.0 - past_weight) * factor_of(level) + past_weight * past


def within_share(level: float) -> bool:
    """The job's band: True while the user (and each account above it that has rivals)
    holds less than its fair GPUs now, the job's own queue-mates ahead of it included."""
    return level < 1.0


def factor_of(level: float) -> float:
    """2^-x in (0, 1]; 0 for x = inf (and NaN, which cannot start anything)."""
    if math.isnan(level) or math.isinf(level):
        return 0.0
    return float(2.0 ** -max(0.0, level))


@dataclass(frozen=True)
class Holding:
    """What a running job contributes: its association, GPUs and QOS."""

    account: str
    user: str
    gpus: int
    qos: str = "normal"


@dataclass(frozen=True)
class Standing:
    """Every active association's and account's load and entitlement now, and the tree."""

    users: dict[Key, UserLoad]
    account_load: dict[str, float]  # GPUs held, sub-accounts included
    account_entitled: dict[str, float]
    tree: _Tree

    def levels(self, ordered: Iterable[tuple[str, Key, int]]) -> dict[str, float]:
        """Each job's x, given jobs as (id, association, GPUs) in each association's own
        queue order (see the module docstring: the hierarchical progressive filling)."""
        mine: dict[Key, tuple[list[str], list[int]]] = {}
        count = 0
        for job_id, key, gpus in ordered:
            if key not in mine:
                mine[key] = ([], [])
            ids, sizes = mine[key]
            ids.append(job_id)
            sizes.append(gpus)
            count += 1
        x: dict[str, float] = {}
        self._fill(ROOT, mine, x)
        if len(x) != count:  # a job id given twice: only the reference handles that
            return self.reference_levels(
                (job_id, key, gpus) for key, (ids, sizes) in mine.items()
                for job_id, gpus in zip(ids, sizes, strict=True))
        return x

    def _fill(self, account: str, mine: Mapping[Key, tuple[list[str], list[int]]],
              x: dict[str, float]) -> tuple[list[str], list[int]]:
        """`_reference_merge` with the same result, in a few passes over plain lists: a lone
        run is returned as it is (an account's jobs have their x from below already), and
        runs are merged by one stable sort of their levels, which is the reference's
        `heapq.merge` on (level, run, ...) while each run's levels strictly increase;
        otherwise by `heapq.merge`. Job ids are assumed distinct (`levels` checks)."""
        tree = self.tree
        lists: list[tuple[list[str], list[int], float, float, bool]] = []
        for child in tree.child_accounts.get(account, ()):
            if child in self.account_entitled:
                ids, sizes = self._fill(child, mine, x)
                if ids:
                    lists.append((ids, sizes, self.account_load.get(child, 0.0),
                                  self.account_entitled[child], False))
        users = self.users
        for key in tree.child_users.get(account, ()):
            if key in mine and key in users:
                user = users[key]
                lists.append((*mine[key], user.held, user.entitled, True))
        if not lists:
            return [], []
        rivals = len(lists) > 1
        all_ids: list[str] = []
        all_sizes: list[int] = []
        all_levels: list[float] = []
        strict = True
        for ids, sizes, load, entitled, leaf in lists:
            if not rivals and not leaf:
                return ids, sizes
            if entitled > 0:
                levels = [(load + ahead) / entitled
                          for ahead in accumulate(sizes, initial=0.0)]
                levels.pop()
            else:
                levels = [math.inf] * len(ids)
            # x = max(x so far, level); a user's jobs have none so far (0.0 in the reference)
            before = repeat(0.0) if leaf else map(x.__getitem__, ids)
            x.update(zip(ids, map(max, before, levels), strict=True))
            if not rivals:
                return ids, sizes
            strict = strict and levels[0] > -math.inf and all(
                map(operator.gt, islice(levels, 1, None), levels))
            all_ids += ids
            all_sizes += sizes
            all_levels += levels
        if strict:  # ties only between runs, which a stable sort keeps in run order
            order = sorted(range(len(all_ids)), key=all_levels.__getitem__)
            return (list(map(all_ids.__getitem__, order)),
                    list(map(all_sizes.__getitem__, order)))
        runs, start = [], 0
        for n, (ids, *_rest) in enumerate(lists):
            runs.append([(all_levels[i], n, all_ids[i], all_sizes[i])
                         for i in range(start, start + len(ids))])
            start += len(ids)
        merged = list(heapq.merge(*runs))
        return [job_id for _, _, job_id, _ in merged], [gpus for _, _, _, gpus in merged]

    def reference_levels(self, ordered: Iterable[tuple[str, Key, int]]) -> dict[str, float]:
        """`levels` as first written, kept as the reference the tests hold `levels` to:
        every account's runs merged with `heapq.merge`, single runs included."""
        mine: dict[Key, list[tuple[str, int]]] = {}
        for job_id, key, gpus in ordered:
            mine.setdefault(key, []).append((job_id, gpus))
        x: dict[str, float] = {}
        self._reference_merge(ROOT, mine, x)
        return x

    def _reference_merge(self, account: str, mine: Mapping[Key, list[tuple[str, int]]],
               x: dict[str, float]) -> list[tuple[str, int]]:
        """The account's jobs in the order progressive filling takes them; sets x."""
        tree = self.tree
        lists: list[tuple[list[tuple[str, int]], float, float]] = []
        for child in tree.child_accounts.get(account, ()):
            if child in self.account_entitled:
                jobs = self._reference_merge(child, mine, x)
                if jobs:
                    lists.append((jobs, self.account_load.get(child, 0.0),
                                  self.account_entitled[child]))
        for key in tree.child_users.get(account, ()):
            if key in mine and key in self.users:
                user = self.users[key]
                lists.append((mine[key], user.held, user.entitled))
        sibling = len(lists) > 1  # a level is compared only where it has rivals
        keyed: list[list[tuple[float, int, str, int]]] = []
        for n, (jobs, load, entitled) in enumerate(lists):
            ahead, run = 0.0, []
            for job_id, gpus in jobs:
                level = (load + ahead) / entitled if entitled > 0 else math.inf
                if sibling or job_id not in x:
                    x[job_id] = max(x.get(job_id, 0.0), level)
                run.append((level, n, job_id, gpus))
                ahead += gpus
            keyed.append(run)
        return [(job_id, gpus) for _, _, job_id, gpus in heapq.merge(*keyed)]


def user_loads(
    accounts: Sequence[Account], assocs: Sequence[Assoc], running: Iterable[Holding],
    queued: Mapping[Key, float], *, capacity: float, tree: _Tree | None = None,
) -> Standing:
    """Every active association's `UserLoad` (active: has a job pending or running) and
    every account's GPUs held and entitlement. `queued`: the GPUs of each association's
    pending normal-QOS jobs (its demand is those plus the GPUs it holds).

    An association not in `assocs` joins its account with shares 1 (an unknown account hangs
    under root with shares 1), as in `fairshare`. `tree`: the tree of `accounts` and
    `assocs` alone, when the caller keeps it (`base_tree`); used where it has every active
    association, else one is built with them.
    """
    held: dict[Key, float] = {}
    for job in running:
        if job.qos != SCAVENGER:
            held[(job.account, job.user)] = held.get((job.account, job.user), 0.0) + job.gpus
    demand = dict(held)
    for key, gpus in queued.items():
        demand[key] = demand.get(key, 0.0) + gpus
    if tree is None or not all(key in tree.users for key in demand):
        tree = _Tree(accounts, assocs, demand)
    entitled, account_entitled = tree.split(capacity, demand)
    account_held: dict[str, float] = {}
    for key in demand:
        for name in tree.chain(key[0]):
            account_held[name] = account_held.get(name, 0.0) + held.get(key, 0.0)
    loads = {key: UserLoad(
        account=key[0], user=key[1], held=held.get(key, 0.0), entitled=entitled.get(key, 0.0),
        account_held=account_held.get(key[0], 0.0),
        account_entitled=account_entitled.get(key[0], 0.0), capacity=capacity)
        for key in demand}
    return Standing(loads, account_held, account_entitled, tree)


class _Tree:
    """The account tree with users as leaves, made robust as `fairshare` makes it."""

    def __init__(self, accounts: Sequence[Account], assocs: Sequence[Assoc],
                 extra: Iterable[Key]) -> None:
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
        self._chains: dict[str, list[str]] = {}

    def chain(self, account: str) -> list[str]:
        """The account and its ancestors below root, nearest first."""
        if account not in self._chains:
            self._chains[account] = self._walk(account)
        return self._chains[account]

    def _walk(self, account: str) -> list[str]:
        out = []
        while account != ROOT and account in self.parent:
            out.append(account)
            account = self.parent[account]
        return out

    def split(self, capacity: float, demand: Mapping[Key, float]
              ) -> tuple[dict[Key, float], dict[str, float]]:
        """Capacity split down the tree, at each level max-min by shares among the siblings
        with demand, each capped at its subtree's demand (water-filling)."""
        below: dict[str, float] = {}
        for (account, _), d in demand.items():
            for name in self.chain(account):
                below[name] = below.get(name, 0.0) + d
        users: dict[Key, float] = {}
        accounts: dict[str, float] = {}
        stack = [(ROOT, capacity)]
        while stack:
            name, gpus = stack.pop()
            kids: list[tuple[str | Key, float, float]] = [
                (a, self.shares[a], below[a]) for a in self.child_accounts.get(name, ())
                if a in below]
            kids += [(k, self.users[k], demand[k]) for k in self.child_users.get(name, ())
                     if k in demand]
            for kid, got in zip(kids, waterfill(gpus, [(w, d) for _, w, d in kids]),
                                strict=True):
                if isinstance(kid[0], str):
                    accounts[kid[0]] = got
                    stack.append((kid[0], got))
                else:
                    users[kid[0]] = got
        return users, accounts


def waterfill(capacity: float, asks: Sequence[tuple[float, float]]) -> list[float]:
    """Weighted max-min split of `capacity` among (weight, demand) pairs, each capped at its
    demand; a weight of 0 gets nothing."""
    out = [0.0] * len(asks)
    order = sorted((i for i, (w, d) in enumerate(asks) if w > 0 and d > 0),
                   key=lambda i: asks[i][1] / asks[i][0])
    left, weight_left = capacity, sum(asks[i][0] for i in order)
    for i in order:
        w, d = asks[i]
        out[i] = min(d, left * w / weight_left) if weight_left > 0 else 0.0
        left -= out[i]
        weight_left -= w
    return out


def snapshot_loads(snapshot: Snapshot) -> Standing:
    """`user_loads` of a snapshot: capacity from the nodes that are up, held from `running`,
    active from `pending` and `running`."""
    inputs = snapshot.shares or ShareInputs()
    capacity = float(sum(n.gpus_usable for n in snapshot.nodes if n.up))
    return user_loads(
        inputs.accounts, inputs.assocs,
        (Holding(r.account, r.user, r.gpus, r.qos) for r in snapshot.running),
        queued_gpus(snapshot), capacity=capacity, tree=base_tree(inputs))


def base_tree(inputs: ShareInputs) -> _Tree:
    """The tree of `inputs`' accounts and associations, built once per `ShareInputs` (the
    simulator keeps one per usage refresh) and kept on it, as `Limits` keeps its chains."""
    kept: dict[str, _Tree] = inputs.__dict__.setdefault("_fair_now_tree", {})
    if "tree" not in kept:
        kept["tree"] = _Tree(inputs.accounts, inputs.assocs, ())
    return kept["tree"]


def queued_gpus(snapshot: Snapshot) -> dict[Key, float]:
    """GPUs of each association's pending normal-QOS jobs: `Snapshot.queued_gpus` where the
    caller gives it (a snapshot holding only part of the queue), else from `pending`."""
    if snapshot.queued_gpus is not None:
        return dict(snapshot.queued_gpus)
    out: dict[Key, float] = {}
    for j in snapshot.pending:
        if j.qos != SCAVENGER:
            out[(j.account, j.user)] = out.get((j.account, j.user), 0.0) + j.gpus
        else:
            out.setdefault((j.account, j.user), 0.0)
    return out


def job_levels(snapshot: Snapshot) -> tuple[Standing, dict[str, float]]:
    """Every pending job's x, each association's own jobs taken in this order: normal QOS
    first, then the fewest GPUs (so a big job of yours that cannot start yet does not count
    against your small ones that can), then the shortest time limit (your short jobs before
    your long ones), then the oldest."""
    loads = snapshot_loads(snapshot)
    order = sorted(snapshot.pending, key=own_order)
    return loads, loads.levels((j.id, (j.account, j.user), j.gpus) for j in order)


def reference_job_levels(snapshot: Snapshot) -> tuple[Standing, dict[str, float]]:
    """`job_levels` as first written, the reference the tests hold it to: the tree built
    anew, `Standing.reference_levels`."""
    inputs = snapshot.shares or ShareInputs()
    loads = user_loads(
        inputs.accounts, inputs.assocs,
        (Holding(r.account, r.user, r.gpus, r.qos) for r in snapshot.running),
        queued_gpus(snapshot), capacity=float(sum(n.gpus_usable for n in snapshot.nodes
                                                   if n.up)))
    order = sorted(snapshot.pending, key=own_order)
    return loads, loads.reference_levels((j.id, (j.account, j.user), j.gpus) for j in order)


def own_order(j: PendingJob) -> tuple[bool, int, int, float, int, str]:
    return (j.qos == SCAVENGER, j.gpus, j.time_limit_s, j.submitted_at, len(j.id), j.id)
