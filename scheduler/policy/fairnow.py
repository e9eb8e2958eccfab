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

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from scheduler.policy.fairshare import FAIR_TREE
from scheduler.policy.sharetree import ROOT, AccountTree
from scheduler.policy.snapshot import PendingJob, Snapshot

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
    tree: AccountTree
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

    def run_levels(self, mine: Mapping[Key, Sequence[int]], sizes: Sequence[int]
                   ) -> list[float]:
        """Each job's x (see the module docstring: the hierarchical progressive filling),
        the jobs given by position: job i asks for sizes[i] GPUs (>= 0: a `PendingJob`
        refuses fewer), `mine[key]` are the positions of the association's jobs in its own
        queue order."""
        x = [0.0] * len(sizes)
        self._fill(ROOT, mine, sizes, x, top=True)
        return x

    def _fill(self, account: str, mine: Mapping[Key, Sequence[int]], sizes: Sequence[int],
              x: list[float], top: bool = False) -> Sequence[int]:
        """The account's jobs in the order progressive filling takes them (x set on the way),
        in one pass per job and tree level. Each run's levels never decrease (sizes are
        >= 0), so merging the runs by (level, run) (the reference in the tests merges with
        `heapq.merge`) is one stable sort by level of the runs laid end to end; a lone run
        is returned as it is (an account's jobs have their x from below already). At the
        `top` (root) only the levels are needed, not the order: the runs are returned unsorted."""
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

def demand_of(running: Iterable[Holding], queued: Mapping[Key, float]
              ) -> tuple[dict[Key, float], dict[Key, float]]:
    """(GPUs each association holds now (normal QOS), its demand: those plus `queued`, the
    GPUs of its pending normal-QOS jobs). The demand's keys are the associations fair now
    splits among (active: a job pending or running)."""
    held: dict[Key, float] = {}
    for job in running:
        if job.qos != SCAVENGER:
            key = job.assoc
            held[key] = held.get(key, 0.0) + job.gpus
    demand = dict(held)
    for key, gpus in queued.items():
        demand[key] = demand.get(key, 0.0) + gpus
    return held, demand


def standing(split: Split, held: dict[Key, float], demand: Mapping[Key, float],
             capacity: float) -> Standing:
    """Every active association's load and entitlement and every account's GPUs held and
    entitlement, on `split`'s tree, which must hold every association of `demand`
    (`AccountTree.grown`); `held` and `demand` as `demand_of` gives them."""
    tree = split.tree
    entitled, account_entitled = split.split(capacity, demand)
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


class Split:
    """The capacity split down one `AccountTree` (water-filling), keeping its last split:
    from one cycle to the next few demands change (a job ends, one is submitted), so only the
    groups on the paths to a change are split again (see `split`)."""

    def __init__(self, tree: AccountTree) -> None:
        self.tree = tree
        # The last split: (capacity, demand, demand below each group, users', groups' GPUs).
        self._last_split: tuple[float, Mapping[Key, float], dict[str, float],
                                dict[Key, float], dict[str, float]] | None = None

    def split(self, capacity: float, demand: Mapping[Key, float]
              ) -> tuple[dict[Key, float], dict[str, float]]:
        """Capacity split down the tree, at each level max-min by shares among the siblings
        with demand, each capped at its subtree's demand (water-filling).

        From one cycle to the next few demands change (a job ends, one is submitted), so
        the last split is kept: a group whose GPUs and children's demands are what they
        were keeps its split, and only the groups on the paths to a change are split
        again. Each split is `waterfill` on the same inputs, so the result is the same as
        splitting the whole tree anew. Treat the dicts returned as read-only."""
        tree = self.tree
        below: dict[str, float] = {}
        chains = tree.chains
        for (account, _), d in demand.items():
            for name in chains.get(account) or tree.chain(account):
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
                    again.add(tree.parent[name])
                    if name not in below:
                        accounts.pop(name, None)
            on_path = set(again)
            for name in again:
                on_path.update(tree.chain(name))
        weights, child_accounts, child_users = tree.users, tree.child_accounts, tree.child_users
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
            got = waterfill(gpus, [(tree.shares[a], below[a]) for a in groups]
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


def queued_gpus(snapshot: Snapshot) -> Mapping[Key, float]:
    """GPUs of each association's pending normal-QOS jobs: `Snapshot.queued_gpus` where the
    caller gives it (a snapshot holding only part of the queue; read, not copied), else from
    `pending`."""
    if snapshot.queued_gpus is not None:
        return snapshot.queued_gpus
    out: dict[Key, float] = {}
    get = out.get
    for j in snapshot.pending:
        key = j.assoc
        out[key] = get(key, 0.0) + j.gpus if j.qos != SCAVENGER else get(key, 0.0)
    return out


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
