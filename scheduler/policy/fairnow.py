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
  the weights of age and size (`ranking.order_queue`): a user holding less than their share
  never waits for GPUs a user above their share starts a job on.

x = 1 means "at your fair share now". A user at 0 shares is entitled to nothing: factor 0.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from scheduler.policy.fairshare import FAIR_TREE
from scheduler.policy.sharetree import ROOT, Account, Assoc, resolve_parents
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


def past_algorithm(algorithm: str) -> str:
    """The fair-share table an algorithm ranks the past by: Fair Tree's under fair_now (its
    past part, and what `labq quota` and `/metrics` show), else the algorithm's own."""
    return FAIR_TREE if algorithm == FAIR_NOW else algorithm


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


class Holding(Protocol):
    """What a running job contributes (a `snapshot.RunningJob` is one): its association
    (`assoc` is (account, user)), GPUs and QOS."""

    @property
    def account(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def gpus(self) -> int: ...
    @property
    def qos(self) -> str: ...
    @property
    def assoc(self) -> Key: ...


@dataclass(frozen=True)
class Standing:
    """Every active association's and account's load and entitlement now, and the tree."""

    held: dict[Key, float]  # GPUs held now (normal QOS), by associations that hold any
    entitled: dict[Key, float]  # fair GPUs now, of every active association
    account_load: dict[str, float]  # GPUs held, sub-accounts included
    account_entitled: dict[str, float]
    tree: _Tree
    capacity: float

    @cached_property
    def users(self) -> dict[Key, UserLoad]:
        """Every active association's `UserLoad` (made only when asked: the cycle needs just
        `held` and `entitled`)."""
        return {key: UserLoad(
            account=key[0], user=key[1], held=self.held.get(key, 0.0), entitled=entitled,
            account_held=self.account_load.get(key[0], 0.0),
            account_entitled=self.account_entitled.get(key[0], 0.0), capacity=self.capacity)
            for key, entitled in self.entitled.items()}

    def levels(self, ordered: Iterable[tuple[str, Key, int]]) -> dict[str, float]:
        """Each job's x, given jobs as (id, association, GPUs) in each association's own
        queue order (see the module docstring: the hierarchical progressive filling)."""
        ids: list[str] = []
        keys: list[Key] = []
        sizes: list[int] = []
        for job_id, key, gpus in ordered:
            ids.append(job_id)
            keys.append(key)
            sizes.append(gpus)
        x = self.level_list(keys, sizes)
        out = dict(zip(ids, x, strict=True)) if x is not None else {}
        if x is None or len(out) != len(ids):  # a job id given twice, or a negative size
            return self.reference_levels(zip(ids, keys, sizes, strict=True))
        return out

    def level_list(self, keys: Sequence[Key], sizes: Sequence[int]) -> list[float] | None:
        """`levels` by position: job i of association keys[i] asks for sizes[i] GPUs, the
        jobs in each association's own queue order; None if a size is negative (only the
        reference handles that)."""
        return self.run_levels(positions(keys), sizes)

    def run_levels(self, mine: Mapping[Key, Sequence[int]], sizes: Sequence[int]
                   ) -> list[float] | None:
        """`level_list` with the jobs given by association: `mine[key]` are the positions
        (in `sizes`) of the association's jobs in its own queue order."""
        if sizes and min(sizes) < 0:
            return None
        x = [0.0] * len(sizes)
        self._fill(ROOT, mine, sizes, x, top=True)
        return x

    def _fill(self, account: str, mine: Mapping[Key, Sequence[int]], sizes: Sequence[int],
              x: list[float], top: bool = False) -> Sequence[int]:
        """`_reference_merge` with the same result, on job positions and in one pass per
        job and tree level: the account's jobs in the order progressive filling takes them
        (x set on the way). Each run's levels never decrease (sizes are >= 0), so the
        reference's `heapq.merge` on (level, run, ...) is one stable sort by level of the
        runs laid end to end; a lone run is returned as it is (an account's jobs have their
        x from below already). At the `top` (root) only the levels are needed, not the
        order: the runs are returned unsorted."""
        tree = self.tree
        runs: list[tuple[Sequence[int], float, float, bool]] = []
        for child in tree.child_accounts.get(account, ()):
            if child in self.account_entitled:
                jobs = self._fill(child, mine, sizes, x)
                if jobs:
                    runs.append((jobs, self.account_load.get(child, 0.0),
                                 self.account_entitled[child], False))
        held, entitled = self.held, self.entitled
        for key in tree.child_users.get(account, ()):
            if key in mine and key in entitled:
                runs.append((mine[key], held.get(key, 0.0), entitled[key], True))
        if len(runs) == 1 and not runs[0][3]:  # an account's lone run: x set below it
            return runs[0][0]
        # Each job's level in its run, (load + GPUs ahead in the run) / share (inf for a
        # share of 0), raising x to it: a user's jobs get their own level, rivals or not.
        # GPU counts are whole numbers, so the running sum is exactly the reference's
        # load + ahead. Written out here, not in a function: this is most of a cycle.
        merged: list[int] = []
        levels: list[float] = []
        append, inf = levels.append, math.inf
        for jobs, load, share, _ in runs:
            merged += jobs
            if share <= 0:
                for j in jobs:
                    x[j] = inf
                levels += [inf] * len(jobs)
                continue
            ahead = load
            for j in jobs:
                level = ahead / share
                append(level)
                if level > x[j]:
                    x[j] = level
                ahead += sizes[j]
        if top or len(runs) == 1:
            return merged
        order = sorted(range(len(merged)), key=levels.__getitem__)
        return [merged[k] for k in order]

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
            key = job.assoc
            held[key] = held.get(key, 0.0) + job.gpus
    demand = dict(held)
    for key, gpus in queued.items():
        demand[key] = demand.get(key, 0.0) + gpus
    if tree is None or not tree.users.keys() >= demand.keys():
        tree = _Tree(accounts, assocs, demand)
    entitled, account_entitled = tree.split(capacity, demand)
    # Summed per account, then up its chain: GPU counts are whole numbers, so the sums are
    # exact in any order.
    own: dict[str, float] = {}
    for key, gpus in held.items():
        own[key[0]] = own.get(key[0], 0.0) + gpus
    account_held: dict[str, float] = {}
    chain = tree.chain
    for account, gpus in own.items():
        for name in chain(account):
            account_held[name] = account_held.get(name, 0.0) + gpus
    return Standing(held, entitled, account_held, account_entitled, tree, capacity)


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
        self._chains: dict[str, list[str]] = {name: self._walk(name) for name in [*shares, ROOT]}
        # The last split: (capacity, demand, demand below each group, users', groups' GPUs).
        self._last_split: tuple[float, Mapping[Key, float], dict[str, float],
                                dict[Key, float], dict[str, float]] | None = None

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
        with demand, each capped at its subtree's demand (water-filling).

        From one cycle to the next few demands change (a job ends, one is submitted), so
        the last split is kept: a group whose GPUs and children's demands are what they
        were keeps its split, and only the groups on the paths to a change are split
        again. Each split is `waterfill` on the same inputs, so the result is the same as
        splitting the whole tree anew. Treat the dicts returned as read-only."""
        below: dict[str, float] = {}
        chains = self._chains
        for (account, _), d in demand.items():
            for name in chains.get(account) or self.chain(account):
                below[name] = below.get(name, 0.0) + d
        last = self._last_split
        fresh = last is None or last[0] != capacity  # nothing kept: split every group
        users: dict[Key, float] = {}
        accounts: dict[str, float] = {}
        accounts_before: dict[str, float] = {}
        again: set[str] = set()  # the groups whose children's demands changed
        on_path: set[str] = set()  # those and their ancestors: the groups to visit
        if last is not None and not fresh:
            _, before, below_before, users_before, accounts_before = last
            users, accounts = dict(users_before), dict(accounts_before)
            for key in demand.keys() | before.keys():
                if demand.get(key) != before.get(key):
                    again.add(key[0])
                    if key not in demand:
                        users.pop(key, None)
            for name in below.keys() | below_before.keys():
                if below.get(name) != below_before.get(name):
                    again.add(self.parent[name])
                    if name not in below:
                        accounts.pop(name, None)
            on_path = set(again)
            for name in again:
                on_path.update(self.chain(name))
        weights, child_accounts, child_users = self.users, self.child_accounts, self.child_users
        stack = [(ROOT, capacity)]
        while stack:
            name, gpus = stack.pop()
            if not fresh and name not in again and (name == ROOT
                                                    or accounts_before.get(name) == gpus):
                # The same inputs as last time: its split stands; go on only to changes.
                stack += [(child, accounts[child]) for child in child_accounts.get(name, ())
                          if child in on_path and child in below]
                continue
            groups = [a for a in child_accounts.get(name, ()) if a in below]
            people = [k for k in child_users.get(name, ()) if k in demand]
            if not groups and len(people) == 1:  # `waterfill` of one ask, inline
                key = people[0]
                w, d = weights[key], demand[key]
                users[key] = min(d, gpus * w / w) if w > 0 and d > 0 else 0.0
                continue
            got = waterfill(gpus, [(self.shares[a], below[a]) for a in groups]
                            + [(weights[k], demand[k]) for k in people])
            for group, share in zip(groups, got, strict=False):
                accounts[group] = share
                stack.append((group, share))
            users.update(zip(people, got[len(groups):], strict=True))
        self._last_split = (capacity, demand, below, users, accounts)
        return users, accounts


def waterfill(capacity: float, asks: Sequence[tuple[float, float]]) -> list[float]:
    """Weighted max-min split of `capacity` among (weight, demand) pairs, each capped at its
    demand; a weight of 0 gets nothing."""
    if len(asks) == 1:  # the loop below, for one ask
        w, d = asks[0]
        return [min(d, capacity * w / w) if w > 0 and d > 0 else 0.0]
    out = [0.0] * len(asks)
    # By demand over weight; ties in the order asked (the index).
    order = sorted([(d / w, i) for i, (w, d) in enumerate(asks) if w > 0 and d > 0])
    left, weight_left = capacity, sum([asks[i][0] for _, i in order])
    for _, i in order:
        w, d = asks[i]
        if weight_left > 0:
            fair = left * w / weight_left
            got = fair if fair < d else d  # min(d, fair)
        else:
            got = 0.0
        out[i] = got
        left -= got
        weight_left -= w
    return out


def snapshot_loads(snapshot: Snapshot) -> Standing:
    """`user_loads` of a snapshot: capacity from the nodes that are up, held from `running`,
    active from `pending` and `running`."""
    inputs = snapshot.shares or ShareInputs()
    capacity = float(sum(n.gpus_usable for n in snapshot.nodes if n.up))
    return user_loads(
        inputs.accounts, inputs.assocs,
        snapshot.running,
        queued_gpus(snapshot), capacity=capacity, tree=base_tree(inputs))


def base_tree(inputs: ShareInputs) -> _Tree:
    """The tree of `inputs`' accounts and associations, built once per (accounts,
    associations) pair: a cycle asks for it several times, and the simulator's inputs keep
    the same pair from one usage refresh to the next."""
    last = _LAST_TREE.get("tree")
    if last is None or last[0] is not inputs.accounts or last[1] is not inputs.assocs:
        last = _LAST_TREE["tree"] = (inputs.accounts, inputs.assocs,
                                     _Tree(inputs.accounts, inputs.assocs, ()))
    return last[2]


# The last tree built, by the identity of its (immutable) accounts and associations.
_LAST_TREE: dict[str, tuple[Sequence[Account], Sequence[Assoc], _Tree]] = {}


def queued_gpus(snapshot: Snapshot) -> Mapping[Key, float]:
    """GPUs of each association's pending normal-QOS jobs: `Snapshot.queued_gpus` where the
    caller gives it (a snapshot holding only part of the queue; read, not copied), else from
    `pending`."""
    if snapshot.queued_gpus is not None:
        return snapshot.queued_gpus
    out: dict[Key, float] = {}
    for j in snapshot.pending:
        if j.qos != SCAVENGER:
            out[(j.account, j.user)] = out.get((j.account, j.user), 0.0) + j.gpus
        else:
            out.setdefault((j.account, j.user), 0.0)
    return out


def job_levels(snapshot: Snapshot) -> tuple[Standing, dict[str, float]]:
    """Every pending job's x, each association's own jobs taken in this order (`own_order`):
    normal QOS first, then the fewest GPUs (so a big job of yours that cannot start yet does
    not count against your small ones that can), then the shortest time limit (your short
    jobs before your long ones), then the oldest."""
    loads = snapshot_loads(snapshot)
    order = sorted(snapshot.pending, key=own_order)
    return loads, loads.levels((j.id, (j.account, j.user), j.gpus) for j in order)


def reference_job_levels(snapshot: Snapshot) -> tuple[Standing, dict[str, float]]:
    """`job_levels` as first written, the reference the tests hold it to: the tree built
    anew, `Standing.reference_levels`."""
    inputs = snapshot.shares or ShareInputs()
    loads = user_loads(
        inputs.accounts, inputs.assocs,
        snapshot.running,
        queued_gpus(snapshot), capacity=float(sum(n.gpus_usable for n in snapshot.nodes
                                                   if n.up)))
    order = sorted(snapshot.pending, key=own_order)
    return loads, loads.reference_levels((j.id, (j.account, j.user), j.gpus) for j in order)


def positions(keys: Iterable[Key]) -> dict[Key, list[int]]:
    """Each association's places in `keys` (a list of associations, one per job), in order."""
    out: dict[Key, list[int]] = {}
    for i, key in enumerate(keys):
        run = out.get(key)
        if run is None:
            out[key] = [i]
        else:
            run.append(i)
    return out


def own_order(j: PendingJob) -> tuple[bool, int, int, float, int, str]:
    """A job's place among its association's own jobs (`PendingJob.own_key`, set when the job
    is made): normal QOS first, then fewest GPUs, shortest time limit, oldest."""
    return j.own_key
