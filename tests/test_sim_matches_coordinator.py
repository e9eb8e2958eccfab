"""`labq sim` is the coordinator in virtual time: one trace replayed through the live
`Coordinator` (a real Valkey store, nodes played in memory, an explicit `now` per cycle) and
through `scheduler.sim.simulate` gives every job the same start time.

The live side plays the agents by hand: at each event time of the trace (a submission or a
job's end, as the simulator's events) every node heartbeats, each job whose run ends then
reports its exit, each job submitted then is stored, and the coordinator runs one cycle at
that `now`; each job it starts reports running from that same instant. The settings are the
simulator's model: fair now on the simulator's flat tree (tenants under root, users under
their tenant, 1 share each), usage charged at every cycle, decay with the same half-life,
billing weight 1, no idle-GPU policy.

The simulator refreshes fair-share usage every `calc_period` of virtual time (Slurm's
PriorityCalcPeriod); the coordinator reads it at every cycle: the replay here uses
`calc_period=0`, the coordinator's behaviour. Between two events a running coordinator cycles
every second and charges usage every `charge_interval_s`; the harness skips those cycles
(nothing the policy sees changes but the clock) and charges usage up to the event itself.

The coordinator's fair-share inputs list the associations in name order
(`scheduler.cluster.shares.share_inputs`), as the simulator does: the store's users hash has an
order of its own that differs from one server to the next, and fair now's split is sensitive
to order (ties in `waterfill` are served in the order asked, so an entitlement could differ in
its last bits and move a job across x = 1); this test found that.
"""

from __future__ import annotations

import math
import random
import uuid
from pathlib import Path

import pytest

from scheduler.accounts.tree import AccountConfig, UserConfig
from scheduler.config import Settings
from scheduler.coordinator.core import Coordinator
from scheduler.coordinator.nodes import InMemoryNodes
from scheduler.model import JobSpec, JobState
from scheduler.noderun import EXITED, RUNNING, RunStatus
from scheduler.sim.engine import Cluster, simulate
from scheduler.sim.policies import get_policy
from scheduler.sim.trace import SimJob, default_limit
from scheduler.store import Store
from tests.builders import lead, report

MODEL = "gpu"  # billing weight 1, as the simulator's cluster
HALF_LIFE_S = 7 * 86400.0
T0 = 100_000.0  # the trace's first submission (the live clock never starts at 0)


def contended_trace(seed: int, n: int = 90, tenants: int = 3, users: int = 2,
                    max_gpus: int = 4) -> list[SimJob]:
    """`n` jobs in bursts, from `tenants` × `users` users, of 1 to `max_gpus` GPUs: more than
    the cluster holds, so most jobs wait and the policy's order decides their start. Ids are
    "1", "2", ... in submit order: the ids the store gives them, submitted in that order."""
    rng = random.Random(f"sim-matches-{seed}")
    jobs, t = [], T0
    sizes = [g for g in (1, 2, 4, 8) if g <= max_gpus]
    for i in range(1, n + 1):
        if rng.random() < 0.3:
            t += rng.choice((0, 30, 120, 600, 1800))
        tenant = rng.randrange(tenants)
        duration = float(rng.choice((60, 300, 900, 1800, 3600, 7200)) + rng.randrange(60))
        jobs.append(SimJob(str(i), f"t{tenant}", f"u{tenant}{rng.randrange(users)}",
                           rng.choice(sizes), t, duration, default_limit(duration)))
    return jobs


async def live_starts(store: Store, tmp_path: Path, jobs: list[SimJob], cluster: Cluster
                      ) -> dict[str, list[float]]:
    """Each job's start times, replayed through the live coordinator."""
    settings = Settings(tmp_path)
    settings.charge_interval_s = 0.0
    settings.idle_gpu_policy = "off"
    settings.usage_half_life_s = HALF_LIFE_S
    settings.fairshare_algorithm = "fair_now"
    state = await store.accounts()
    tenants = sorted({j.account for j in jobs})
    changes = [("account", t, AccountConfig(t).to_json()) for t in tenants]
    changes += [("user", u, UserConfig(u, {a: 1.0}).to_json())
                for a, u in sorted({(j.account, j.user) for j in jobs})]
    assert await store.put_accounts(state.version, changes)
    nodes = InMemoryNodes()
    coord = Coordinator(store, settings, nodes=nodes)
    coord.epoch = await lead(store)
    await store.set_half_life(settings.usage_half_life_s)
    width = len(str(cluster.nodes - 1))
    names = [f"n{i:0{width}d}" for i in range(cluster.nodes)]

    by_id = {j.id: j for j in jobs}
    starts: dict[str, list[float]] = {}
    ends: dict[float, list[tuple[str, str, float]]] = {}  # time -> (job, node, start)
    running: set[str] = set()
    pending = sorted(jobs, key=lambda j: (j.submit, len(j.id), j.id))
    i = 0
    while i < len(pending) or ends:
        now = min([*([pending[i].submit] if i < len(pending) else []), *ends])
        for name in names:
            await store.heartbeat(report(name, gpus=cluster.gpus_per_node, model=MODEL), now=now)
        for job_id, node, start in ends.pop(now, []):
            nodes.report(node, job_id, RunStatus(0, EXITED, start, now, 0))
            running.discard(job_id)
        while i < len(pending) and pending[i].submit <= now:
            j = pending[i]
            spec = JobSpec(user=j.user, account=j.account, command=["true"], gpus=j.gpus,
                           time_limit_s=j.time_limit, nodes=j.nodes)
            (job_id,) = await store.submit([spec], token=uuid.uuid4().hex, now=now)
            assert job_id == j.id, "the store numbers jobs in submit order"
            i += 1
        # Usage up to now, as the cycles between two events would have charged it.
        await store.charge(coord.epoch, sorted(running), now)
        await coord.cycle(now)
        began = False
        for job in await store.list_jobs([j for j in by_id if j not in starts]):
            if job.state == JobState.STARTING:
                starts[job.id] = [now]
                running.add(job.id)
                nodes.report(job.node or "", job.id, RunStatus(0, RUNNING, now))
                end = now + min(by_id[job.id].duration, float(by_id[job.id].time_limit))
                ends.setdefault(end, []).append((job.id, job.node or "", now))
                began = True
        if began:  # the agents' reports wake the coordinator: it marks them RUNNING
            await coord.cycle(now)
    return starts


def sim_starts(jobs: list[SimJob], cluster: Cluster, show_all: bool = False,
               policy: str = "labq") -> dict[str, list[float]]:
    result = simulate(jobs, cluster, get_policy(policy), half_life=HALF_LIFE_S, calc_period=0,
                      show_all=show_all)
    out: dict[str, list[float]] = {}
    for run in sorted(result.runs, key=lambda r: r.start):
        out.setdefault(run.job.id, []).append(run.start)
    return out


def differences(jobs: list[SimJob], a: dict[str, list[float]], b: dict[str, list[float]]
                ) -> dict[str, tuple[list[float] | None, list[float] | None]]:
    return {j.id: (a.get(j.id), b.get(j.id)) for j in jobs if a.get(j.id) != b.get(j.id)}


# (seed, jobs, nodes, GPUs per node, tenants, users per tenant, largest job): every job of
# the first waits; on the second the class cut of before this test (one job more than the
# free GPUs could start was not shown, nor a user's smaller jobs ahead under fair now) gave
# 107 of 150 jobs another start time than the whole queue.
TRACES = [(3, 200, 4, 8, 4, 3, 8), (1, 150, 2, 8, 2, 2, 8)]


@pytest.mark.parametrize("seed,n,nodes,per_node,tenants,users,largest", TRACES)
async def test_the_simulator_starts_every_job_when_the_coordinator_does(
        store: Store, tmp_path: Path, seed: int, n: int,
        nodes: int, per_node: int, tenants: int, users: int, largest: int) -> None:
    cluster = Cluster(nodes, per_node, MODEL)
    jobs = contended_trace(seed, n, tenants, users, largest)
    live = await live_starts(store, tmp_path, jobs, cluster)
    assert len(live) == len(jobs)
    assert sum(live[j.id][0] > j.submit for j in jobs) > n // 2  # contended: most jobs wait
    diff = differences(jobs, live, sim_starts(jobs, cluster))
    assert not diff, f"{len(diff)} of {len(jobs)} jobs start at other times: {diff}"


@pytest.mark.parametrize("policy", ["labq", "labq-fairtree", "fifo-backfill", "drf"])
@pytest.mark.parametrize("seed", range(4))
def test_the_class_cut_starts_every_job_as_the_whole_queue_does(seed: int, policy: str
                                                                  ) -> None:
    """The snapshots hold part of the queue, yet every job starts when it would with every
    waiting job shown, on small clusters and queues of many sizes per user."""
    for nodes, per_node, tenants, users, largest in ((2, 8, 2, 2, 8), (1, 8, 3, 1, 4),
                                                     (3, 4, 3, 3, 4)):
        jobs = contended_trace(seed, 150, tenants, users, largest)
        cluster = Cluster(nodes, per_node, MODEL)
        diff = differences(jobs, sim_starts(jobs, cluster, policy=policy),
                           sim_starts(jobs, cluster, show_all=True, policy=policy))
        assert not diff, f"{len(diff)} jobs start at other times: {diff}"


def mixed_trace(seed: int, n: int, nodes: int, per_node: int) -> list[SimJob]:
    """`n` bursty jobs of 4 tenants x 3 users: sizes 1 to `per_node` (3 among them), some
    across nodes, some asking CPUs or memory (so one user has classes of one size that differ
    otherwise), time limits shorter and longer than the run, for `nodes` x `per_node` GPUs
    with 16 CPUs and 64 GiB a node."""
    rng = random.Random(f"sim-mixed-{seed}")
    sizes = [g for g in (1, 2, 3, 4, 8) if g <= per_node]
    jobs, t = [], T0
    for i in range(1, n + 1):
        if rng.random() < 0.3:
            t += rng.choice((0, 30, 120, 600, 1800))
        tenant = rng.randrange(4)
        duration = float(rng.choice((60, 300, 900, 1800, 3600)) + rng.randrange(60))
        gpus, spread = rng.choice(sizes), 1
        if nodes > 1 and rng.random() < 0.1:
            spread = rng.randint(2, nodes)
            gpus = per_node // rng.choice((1, 2)) * spread  # whole nodes, or halves
        jobs.append(SimJob(str(i), f"t{tenant}", f"u{tenant}{rng.randrange(3)}", gpus, t,
                           duration, max(60, int(duration * rng.choice((0.8, 1.0, 1.5, 3.0)))),
                           nodes=spread, cpus=rng.choice((0, 0, 2, 8)),
                           mem=rng.choice((0, 0, 0, 32768))))
    return jobs


MIXED = [(seed, cluster) for seed in range(6) for cluster in [((2, 8), (3, 4), (4, 8))[seed % 3]]]
# (a Fair Tree and a classic replay that the cut once left jobs across nodes out of)
MIXED_SUBMIT_ORDER = [(seed, cluster) for seed in (4, 8) for cluster in ((4, 8), (4, 4))]


@pytest.mark.parametrize("policy,cases", [("labq", MIXED),
                                          *((p, MIXED_SUBMIT_ORDER) for p in (
                                              "labq-fairtree", "slurm-classic",
                                              "fifo-backfill", "drf"))])
def test_the_class_cut_starts_every_job_as_the_whole_queue_does_with_mixed_asks(
        policy: str, cases: list[tuple[int, tuple[int, int]]]) -> None:
    """The cut on queues where a user has several classes of one size (other CPUs, memory or
    nodes) and jobs across nodes (a class of them whose GPUs per node a node has free is not
    cut to one job): the same starts as with every waiting job shown."""
    for seed, (nodes, per_node) in cases:
        cluster = Cluster(nodes, per_node, MODEL, cpus=16, mem=65536)
        check_cut(policy, mixed_trace(seed, 200, nodes, per_node), cluster)


def check_cut(policy: str, jobs: list[SimJob], cluster: Cluster) -> None:
    """The same starts with the cut as with the whole queue: usage read at every call with
    equal shares, and every 5 minutes with unequal ones."""
    for calc_period, shares in ((0.0, None), (300.0, {"t0": 1.0, "t1": 2.0, "t3": 3.0})):
        got = [simulate(jobs, cluster, get_policy(policy), half_life=HALF_LIFE_S,
                        calc_period=calc_period, tenant_shares=shares, show_all=show_all)
               for show_all in (False, True)]
        cut, whole = ({r.job.id: r.start for r in result.runs} for result in got)
        assert cut == whole, {j: (cut.get(j), whole.get(j)) for j in cut.keys() | whole.keys()
                              if cut.get(j) != whole.get(j)}


def test_fair_nows_factor_is_flat_from_the_cuts_level() -> None:
    """From `flat_level(past, 1 - p)` on, fair now's factor ((1 - p) 2^-x + past, as the policy
    computes it) is past to the last bit, whatever x: the cut shows no tenant's jobs above
    that level for the tenant-levels of those shown."""
    from scheduler.sim.fairnowusers import flat_level

    for p in (0.2, 0.5, 0.9):
        for factor in (1.0, 0.75, 0.3, 1e-3, 1e-9):
            past = p * factor
            level = flat_level(past, 1.0 - p)
            assert 1.0 <= level < 1100
            for x in (level, level + 0.37, level + 5, 2 * level, 1e4, math.inf):
                assert (1.0 - p) * 2.0 ** -x + past == past
