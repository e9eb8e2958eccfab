"""The policies a replay can use, all through the live `schedule()`; only the snapshot differs.

- ``labq``: labq's default: fair now (GPUs held now + Fair Tree on decayed past use,
  `scheduler.policy.fairnow`) + age/size/QOS priority, backfill. ``labq-fairnow`` is the
  same policy under the name it had before it became the default.
- ``labq-fairtree``: labq with ``fairshare_algorithm = "fair_tree"`` (Slurm's Fair Tree on
  decayed past use alone: the default until fair now).
- ``slurm-classic``: classic fair share ``2^(-U/S)`` with decay, + age; backfill as Slurm's.
- ``fifo-backfill``: no fair share (``shares=None``: submit order), backfill.
- ``fifo``: submit order and no backfill: what Ray alone does. `schedule` always backfills, so
  the replay keeps only the starts that form a prefix of the queue in submit order (the jobs
  before the first one that did not start); a job's placement depends only on the jobs ahead
  of it, so that prefix is exactly what strict FIFO would start.
- ``drf``: max-min on current allocation (dominant share = the tenant's GPUs held / its
  entitled share), oldest first within a share. With ``shares=None`` the policy orders by
  ``submitted_at``, so the replay hands it a rank key there (the real submit time is kept by
  the engine for waits).
- ``tiresias-las``: discretized 2D-LAS on attained GPU-seconds, preemptive (Tiresias, NSDI
  2019); a baseline decided in `scheduler.sim.tiresias`, not by `schedule()`.

Budgets (``--budgets``) reach the policy only under ``labq`` and ``labq-fairtree``, through
the snapshot's `BudgetState` and the policy's own `BudgetGate`, as in the coordinator; every
other policy ignores them (their overruns are reported).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from scheduler.policy.cycle import Decisions
from scheduler.policy.fairengine import FairShare, Ranking
from scheduler.policy.fairnow import FAIR_NOW, Standing
from scheduler.policy.fairshare import CLASSIC, FAIR_TREE, Account, Assoc
from scheduler.policy.snapshot import (
    DEFAULT_PAST_WEIGHT,
    NodeView,
    PendingJob,
    RunningJob,
    ShareInputs,
    Snapshot,
)

DRF_SCALE = 1e9  # a rank key: allocation share first, then submit time (seconds < 1e9)


@dataclass(frozen=True)
class SimPolicy:
    name: str
    algorithm: str | None  # fair-share algorithm, None: submit order
    backfill: bool = True
    drf: bool = False
    budgets: bool = False  # gates admission on --budgets (labq's: the baselines ignore them)
    tiresias: bool = False  # decided by `scheduler.sim.tiresias`, not `schedule()`
    resumes: bool = False  # a preempted job resumes with its remaining duration


POLICIES: dict[str, SimPolicy] = {
    "labq": SimPolicy("labq", FAIR_NOW, budgets=True),
    "labq-fairtree": SimPolicy("labq-fairtree", FAIR_TREE, budgets=True),
    "slurm-classic": SimPolicy("slurm-classic", CLASSIC),
    "fifo-backfill": SimPolicy("fifo-backfill", None),
    "fifo": SimPolicy("fifo", None, backfill=False),
    "drf": SimPolicy("drf", None, drf=True),
    "tiresias-las": SimPolicy("tiresias-las", None, tiresias=True, resumes=True),
}


ALIASES = {"labq-fairnow": "labq"}  # the names policies had before


def get_policy(name: str) -> SimPolicy:
    try:
        return POLICIES[ALIASES.get(name, name)]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; use one of {', '.join(POLICIES)}") from None


class KeptRanking(FairShare):
    """A fair-share engine that keeps the last snapshot it ranked (`last`): the simulator's
    exact cut reads the totals and the band the policy ordered that queue by. `keep`: the
    standing (fair now's split) the cut computed for the snapshots of one time step, given
    back to the policy's ranking of them (it does not read the pending jobs)."""

    def __init__(self) -> None:
        super().__init__()
        self.last: Ranking | None = None
        self._kept: tuple[tuple[NodeView, ...], tuple[RunningJob, ...], Standing] | None = None

    def rank(self, snapshot: Snapshot) -> Ranking:
        self.last = super().rank(snapshot)
        return self.last

    def keep(self, snapshot: Snapshot) -> Standing:
        """The snapshot's standing, kept for the snapshots that share its nodes and running
        jobs (the same tuples: the replay makes them anew at each step, and a tuple of
        nodes is never the empty one, which is shared)."""
        standing = super().standing(snapshot)
        self._kept = (snapshot.nodes, snapshot.running, standing)
        return standing

    def standing(self, snapshot: Snapshot) -> Standing:
        kept = self._kept
        if kept is not None and kept[0] is snapshot.nodes and kept[1] is snapshot.running:
            return kept[2]
        return super().standing(snapshot)


class ShareBuilder:
    """A flat tree: each tenant under root with its shares (`tenant_shares`, default 1 each),
    each user with shares 1. `engine`: the replay's fair-share engine, given with the inputs
    (`ShareInputs.engine`): it keeps the tree and fair now's last split between calls, and
    the last ranking (`KeptRanking`)."""

    def __init__(self, policy: SimPolicy, users: Sequence[tuple[str, str]],
                 tenant_shares: Mapping[str, float] | None = None,
                 half_life: float = 7 * 86400.0, past_weight: float = DEFAULT_PAST_WEIGHT
                 ) -> None:
        self.policy = policy
        self.half_life, self.past_weight = half_life, past_weight
        tenants = sorted({account for account, _ in users})
        weights = tenant_shares or {}
        self.accounts = tuple(Account(t, "root", float(weights.get(t, 1.0))) for t in tenants)
        self.assocs = tuple(Assoc(u, a, 1.0) for a, u in sorted(set(users)))
        self._cached: tuple[Mapping[tuple[str, str], float], ShareInputs] | None = None
        self.engine = KeptRanking()

    def build(self, usage: Mapping[tuple[str, str], float]) -> ShareInputs | None:
        """Inputs with their fair-share table, computed once per usage refresh."""
        if self.policy.algorithm is None:
            return None
        if self._cached is None or self._cached[0] is not usage:
            inputs = ShareInputs(self.accounts, self.assocs, usage, self.policy.algorithm,
                                 past_weight=self.past_weight)
            self._cached = (usage, replace(inputs, table=self.engine.table(inputs),
                                           engine=self.engine))
        return self._cached[1]


def drf_key(submit: float, held: int, entitled: float) -> float:
    """The `submitted_at` the policy sees under drf: lower allocation share first."""
    return min(held / max(entitled, 1e-9), 1e6) * DRF_SCALE + submit


def fifo_prefix(decisions: Decisions, pending: Sequence[PendingJob],
                cutoff: tuple[float, int, str] | None) -> None:
    """Keep only the starts before the first job (in submit order) that does not start.

    `cutoff`: the queue order ``(submit, len(id), id)`` of the first job not in the snapshot
    (None: all are in it); nothing at or after it may start in this call (the engine calls
    again once the snapshot is refilled). A key, not a time: many jobs share a submit time.
    """
    started = {s.job_id for s in decisions.starts}
    allowed = set()
    for job in sorted(pending, key=lambda j: (j.submitted_at, len(j.id), j.id)):
        key = (job.submitted_at, len(job.id), job.id)
        if job.id not in started or (cutoff is not None and key >= cutoff):
            break
        allowed.add(job.id)
    decisions.starts = [s for s in decisions.starts if s.job_id in allowed]
