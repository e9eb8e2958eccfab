"""From the stored account tree and usage to the policy's fair-share inputs (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scheduler.accounts import Accounts
from scheduler.config import Settings
from scheduler.policy.fairshare import Account, Assoc
from scheduler.policy.priority import PriorityWeights
from scheduler.policy.snapshot import ShareInputs


def share_inputs(
    accounts: Accounts, usage: Mapping[tuple[str, str], float], settings: Settings,
    seen: Iterable[tuple[str, str]] = (),
) -> ShareInputs:
    """The tree as configured, plus every (account, user) seen in jobs or usage that is not
    configured: such users join their account (under root if it is unknown) with 1 share."""
    tree = tuple(Account(a.name, a.parent, a.shares) for a in accounts.accounts.values())
    assocs = {(acct, u.name): Assoc(u.name, acct, shares)
              for u in accounts.users.values() for acct, shares in u.accounts.items()}
    for account, user in list(seen) + list(usage):
        assocs.setdefault((account, user), Assoc(user, account, 1.0))
    try:
        weights = PriorityWeights(**settings.priority_weights)
    except TypeError as exc:
        raise ValueError(f"priority_weights in config.toml: {exc}") from exc
    return ShareInputs(tree, tuple(assocs.values()), dict(usage), settings.fairshare_algorithm,
                       weights, dict(settings.qos_factors))
