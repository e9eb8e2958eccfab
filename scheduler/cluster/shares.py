"""From the stored account tree and usage to the policy's fair-share inputs (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from scheduler.accounts.tree import Accounts
from scheduler.cluster.budgets import account_nodes
from scheduler.config import Settings
from scheduler.policy.budget import DAY, period_bounds
from scheduler.policy.fairshare import Assoc
from scheduler.policy.priority import PriorityWeights
from scheduler.policy.snapshot import ShareInputs


def usage_since_reset(daily: Iterable[tuple[int, str, str, float]], now: float,
                      half_life_s: float, reset: str,
                      semesters: Sequence[Sequence[str]] = ()) -> dict[tuple[str, str], float]:
    """Decayed usage per (account, user) counting only the days of the current `reset` period
    (each day's usage decays from that day's end)."""
    bounds = period_bounds(reset, now, [(a, b) for a, b in semesters])
    first = int(bounds[0] // DAY) if bounds else 0
    out: dict[tuple[str, str], float] = {}
    for day, account, user, billed in daily:
        if day < first:
            continue
        age = max(0.0, now - (day + 1) * DAY)
        out[(account, user)] = out.get((account, user), 0.0) + billed * 2 ** (-age / half_life_s)
    return out


def share_inputs(
    accounts: Accounts, usage: Mapping[tuple[str, str], float], settings: Settings,
    seen: Iterable[tuple[str, str]] = (),
) -> ShareInputs:
    """The tree as configured, plus every (account, user) seen in jobs or usage that is not
    configured: such users join their account (under root if it is unknown) with 1 share."""
    tree = account_nodes(accounts)  # in name order, whatever order the store gave them in
    assocs = {(acct, u.name): Assoc(u.name, acct, shares)
              for u in accounts.users.values() for acct, shares in u.accounts.items()}
    for account, user in list(seen) + list(usage):
        assocs.setdefault((account, user), Assoc(user, account, 1.0))
    assocs = dict(sorted(assocs.items()))
    try:
        weights = PriorityWeights(**settings.priority_weights)
    except TypeError as exc:
        raise ValueError(f"priority_weights in config.toml: {exc}") from exc
    return ShareInputs(tree, tuple(assocs.values()), dict(usage), settings.fairshare_algorithm,
                       weights, dict(settings.qos_factors),
                       past_weight=float(settings.fair_now_past_weight))
