"""fair_now: fair share on GPUs held now plus decayed past use (scheduler.policy.fairnow)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy import NodeView, PendingJob, RunningJob, Snapshot, schedule
from scheduler.policy.fairengine import rank
from scheduler.policy.fairnow import FAIR_NOW, factor_of, waterfill
from scheduler.policy.fairshare import Account, Assoc
from scheduler.policy.ranking import order_queue
from scheduler.policy.snapshot import DEFAULT_PAST_WEIGHT, ShareInputs
from scheduler.sim.report import waterfill as report_waterfill

WEEK = 7 * 86400.0
NOW = 100 * 86400.0


def shares(tenants: dict[str, float], users: dict[str, str] | None = None,
           usage: dict[tuple[str, str], float] | None = None,
           past_weight: float = DEFAULT_PAST_WEIGHT) -> ShareInputs:
    """A flat tree: each tenant under root with its shares; `users` maps user -> tenant (by
    default one user per tenant, named like it)."""
    users = users or {t: t for t in tenants}
    return ShareInputs(
        accounts=tuple(Account(t, "root", s) for t, s in tenants.items()),
        assocs=tuple(Assoc(u, t) for u, t in users.items()),
        usage=usage or {}, algorithm=FAIR_NOW, past_weight=past_weight)


def node(name: str, gpus: int, free: tuple[int, ...]) -> NodeView:
    return NodeView(name, "A100", gpus, free)


def job(job_id: str, user: str, account: str, gpus: int = 1, at: float = NOW - 60,
        limit: int = 3600) -> PendingJob:
    return PendingJob(job_id, user, account, gpus, at, time_limit_s=limit)


def held(job_id: str, user: str, account: str, gpus: int, where: str,
         first: int) -> RunningJob:
    return RunningJob(job_id, user, account, gpus, where, tuple(range(first, first + gpus)),
                      NOW + 3600)


# ----------------------------------------------------------------------------- the parts


@pytest.mark.parametrize(("capacity", "asks", "expected"), [
    (8, [(1, 10), (1, 10)], [4, 4]),
    (8, [(1, 1), (1, 10)], [1, 7]),  # the small ask is met, the rest goes to the other
    (8, [(3, 100), (1, 100)], [6, 2]),  # by shares
    (8, [(0, 5), (1, 5)], [0, 5]),  # no shares, nothing
    (8, [(1, 0), (1, 3)], [0, 3]),  # no demand, nothing; capped at demand
])
def test_waterfill(capacity: float, asks: list[tuple[float, float]],
                   expected: list[float]) -> None:
    assert waterfill(capacity, asks) == pytest.approx(expected)


def test_factor_halves_per_fair_share_held() -> None:
    assert factor_of(0.0) == 1.0
    assert factor_of(1.0) == 0.5
    assert factor_of(2.0) == 0.25
    assert factor_of(math.inf) == 0.0


def test_entitlement_splits_down_the_tree_among_those_with_jobs() -> None:
    # lab -> vision (3 shares), nlp (1 share), idle (4 shares, no jobs): vision and nlp split
    # 16 GPUs 3:1; inside vision, alice and bob (both with jobs) split 12 equally.
    inputs = ShareInputs(
        accounts=(Account("lab", "root"), Account("vision", "lab", 3),
                  Account("nlp", "lab", 1), Account("idle", "lab", 4)),
        assocs=(Assoc("alice", "vision"), Assoc("bob", "vision"), Assoc("carol", "nlp"),
                Assoc("dave", "idle")),
        algorithm=FAIR_NOW)
    pending = tuple(job(str(i), u, a, 4) for i, (u, a) in enumerate(
        [("alice", "vision"), ("bob", "vision"), ("carol", "nlp")] * 4))
    snap = Snapshot((node("n1", 8, ()), node("n2", 8, ())), pending, NOW, shares=inputs)
    loads = rank(snap).loads
    assert loads[("vision", "alice")].entitled == pytest.approx(6)
    assert loads[("vision", "bob")].entitled == pytest.approx(6)
    assert loads[("nlp", "carol")].entitled == pytest.approx(4)
    assert loads[("vision", "alice")].account_entitled == pytest.approx(12)
    assert ("idle", "dave") not in loads


# ----------------------------------------------------------------------------- behaviour


def test_current_allocation_counts_not_only_the_past() -> None:
    # a holds 6 of 8 GPUs now but has no past usage; b holds none but used a little lately.
    # Fair Tree on past usage alone would pick a; fair now picks b.
    snap = Snapshot(
        (node("n1", 8, (6, 7)),), (job("1", "a", "a", at=NOW - 600), job("2", "b", "b")),
        NOW, running=(held("r", "a", "a", 6, "n1", 0),),
        shares=shares({"a": 1, "b": 1}, usage={("b", "b"): 3600.0}))
    decisions = schedule(snap)
    assert [s.job_id for s in decisions.starts][:1] == ["2"]
    tree = snap.shares
    assert tree is not None
    fair_tree = Snapshot(snap.nodes, snap.pending, NOW, running=snap.running,
                         shares=ShareInputs(tree.accounts, tree.assocs, {("b", "b"): 3600.0}))
    assert order_queue(fair_tree.pending, rank(fair_tree).totals)[0].id == "1"


def test_heavy_user_last_week_yields_to_a_light_user_this_week() -> None:
    # Both hold nothing now. heavy ran 8 GPUs for 5 days last week; light ran 1 GPU for an
    # hour. heavy queued first, and asks for more GPUs (the size factor favours it): light
    # still goes first.
    heavy_used = 8 * 5 * 86400.0 * 2 ** (-1.0)  # decayed by about one half-life
    snap = Snapshot(
        (node("n1", 8, (0,)),), (job("1", "heavy", "h", 1, at=NOW - 3600),
                                 job("2", "light", "l", 1, at=NOW - 60)),
        NOW, shares=shares({"h": 1, "l": 1}, usage={("h", "heavy"): heavy_used,
                                                   ("l", "light"): 3600.0}))
    assert [s.job_id for s in schedule(snap).starts] == ["2"]
    ranked = rank(snap).breakdown
    assert ranked["2"].factors["fairshare"] > ranked["1"].factors["fairshare"]


def test_past_weight_zero_forgets_the_past() -> None:
    snap = Snapshot(
        (node("n1", 8, (0,)),), (job("1", "heavy", "h", at=NOW - 3600),
                                 job("2", "light", "l", at=NOW - 60)),
        NOW, shares=shares({"h": 1, "l": 1}, usage={("h", "heavy"): 1e7}, past_weight=0.0))
    assert [s.job_id for s in schedule(snap).starts] == ["1"]  # older first


def test_one_cycle_shares_free_gpus_out_max_min() -> None:
    # 8 GPUs free; tenant a queued 8 one-GPU jobs first, b queued 8 later: each gets 4 in
    # this one cycle (progressive filling), not a all 8.
    pending = tuple(job(f"a{i}", "a", "a", at=NOW - 600 + i) for i in range(8)) + tuple(
        job(f"b{i}", "b", "b", at=NOW - 60 + i) for i in range(8))
    snap = Snapshot((node("n1", 8, tuple(range(8))),), pending, NOW,
                    shares=shares({"a": 1, "b": 1}))
    started = [s.job_id[0] for s in schedule(snap).starts]
    assert sorted(started) == ["a"] * 4 + ["b"] * 4


def test_group_level_counts_before_the_users_in_it() -> None:
    # Group g (2 users) holds 8 of 16 GPUs through user g1; user g2 has none. Group s (1
    # user) holds 8 through s1. The groups are level (8 of 8 each), so neither g2's nor s1's
    # next job outranks the other's by fair share: a user in a many-user group does not get
    # extra just because a group-mate holds the group's GPUs.
    inputs = ShareInputs(
        accounts=(Account("g", "root"), Account("s", "root")),
        assocs=(Assoc("g1", "g"), Assoc("g2", "g"), Assoc("s1", "s")), algorithm=FAIR_NOW)
    snap = Snapshot(
        (node("n1", 8, ()), node("n2", 8, ()), node("n3", 8, tuple(range(8)))),
        (job("1", "g2", "g", 8), job("2", "s1", "s", 8)), NOW,
        running=(held("r1", "g1", "g", 8, "n1", 0), held("r2", "s1", "s", 8, "n2", 0)),
        shares=inputs)
    ranked = rank(snap).breakdown
    assert ranked["1"].factors["fairshare"] == pytest.approx(ranked["2"].factors["fairshare"])


def test_scavenger_jobs_do_not_count_as_held() -> None:
    running = (RunningJob("r", "a", "a", 4, "n1", (0, 1, 2, 3), NOW + 60, "scavenger"),)
    snap = Snapshot((node("n1", 8, (4, 5, 6, 7)),), (job("1", "a", "a"),), NOW,
                    running=running, shares=shares({"a": 1, "b": 1}))
    assert rank(snap).loads[("a", "a")].held == 0


def test_zero_shares_get_factor_zero() -> None:
    snap = Snapshot((node("n1", 8, (0,)),), (job("1", "a", "a"), job("2", "b", "b")), NOW,
                    shares=shares({"a": 0, "b": 1}))
    ranked = rank(snap).breakdown
    assert ranked["1"].factors["fairshare"] == 0.0
    assert ranked["2"].factors["fairshare"] == 1.0


def test_quota_table_stays_fair_tree_on_past_usage() -> None:
    snap = Snapshot((node("n1", 8, (0,)),), (job("1", "a", "a"),), NOW,
                    shares=shares({"a": 1}, usage={("a", "a"): 10.0}))
    table = rank(snap).table
    assert table is not None and table.algorithm == "fair_tree"
    row = table.row("a", "a")
    assert row is not None and row.raw_usage == 10.0


# ----------------------------------------------------------------------------- guarantee

TENANTS = ("t0", "t1", "t2", "t3")


@st.composite
def contended(draw: st.DrawFn) -> Snapshot:
    """2 nodes x 8 GPUs, up to 4 tenants (one user each, equal shares, past usage drawn), some
    GPUs held, some jobs queued; no caps, budgets or scavengers."""
    free: dict[str, list[int]] = {"n0": list(range(8)), "n1": list(range(8))}
    running = []
    for i in range(draw(st.integers(0, 8))):
        where = draw(st.sampled_from(("n0", "n1")))
        gpus = draw(st.integers(1, 4))
        if len(free[where]) < gpus:
            continue
        taken, free[where] = free[where][:gpus], free[where][gpus:]
        tenant = draw(st.sampled_from(TENANTS))
        running.append(RunningJob(f"r{i}", tenant, tenant, gpus, where, tuple(taken),
                                  NOW + draw(st.integers(60, 86400))))
    pending = tuple(
        job(f"{i}", t, t, draw(st.sampled_from((1, 1, 2, 4, 8))),
            at=NOW - draw(st.integers(0, 86400)), limit=draw(st.sampled_from((600, 3600))))
        for i, t in enumerate(draw(st.lists(st.sampled_from(TENANTS), min_size=1,
                                            max_size=14))))
    nodes = tuple(NodeView(n, "A100", 8, tuple(f)) for n, f in free.items())
    usage = {(t, t): draw(st.sampled_from((0.0, 3600.0, 1e6))) for t in TENANTS}
    return Snapshot(nodes, pending, NOW, running=tuple(running),
                    shares=shares(dict.fromkeys(TENANTS, 1.0), usage=usage))


@settings(max_examples=300, deadline=None)
@given(contended())
def test_no_tenant_below_half_its_share_waits_while_one_above_its_share_starts(
        snap: Snapshot) -> None:
    """The guarantee: a tenant holding less than half its entitlement (max-min fair split of
    the GPUs by shares, capped at what each tenant holds and asks for; holdings counted as
    the cycle goes, its earlier starts included) does not wait while a tenant at or above
    its entitlement starts a job on GPUs the waiting one could use (its
    job fits on that node's GPUs the start took or left free), unless a reservation is why:
    the waiting job's reason says it would delay the reserved job, or the reservation is
    the poor tenant's own (its reserved job shows "GPUs reserved from ...")."""
    decisions = schedule(snap)
    demand: dict[str, float] = {}
    holding: dict[str, float] = {}
    for r in snap.running:
        demand[r.account] = demand.get(r.account, 0) + r.gpus
        holding[r.account] = holding.get(r.account, 0) + r.gpus
    for p in snap.pending:
        demand[p.account] = demand.get(p.account, 0) + p.gpus
    entitled = report_waterfill(16, demand, dict.fromkeys(demand, 1.0))
    started = {s.job_id for s in decisions.starts}
    by_id = {p.id: p for p in snap.pending}
    left = {n.name: set(n.free) for n in snap.nodes}
    for s in decisions.starts:
        left[s.node] -= set(s.indices)
    for s in decisions.starts:  # in the order the cycle started them
        starter = by_id[s.job_id].account
        if holding.get(starter, 0) < entitled[starter]:
            holding[starter] = holding.get(starter, 0) + by_id[s.job_id].gpus
            continue
        for waiting in snap.pending:
            poor = waiting.account
            if (waiting.id in started or holding.get(poor, 0) >= 0.5 * entitled[poor]
                    or waiting.gpus > len(s.indices) + len(left[s.node])):
                continue
            codes = {r.code for r in decisions.reasons[waiting.id]}
            reserved = decisions.reservation
            assert "Reservation" in codes or (
                reserved is not None and by_id[reserved.job_id].account == poor), (
                f"{poor} (holds {holding.get(poor, 0)} of {entitled[poor]:.1f}) waits with "
                f"{decisions.reasons[waiting.id]} while {starter} (holds "
                f"{holding.get(starter, 0)} of {entitled[starter]:.1f}) starts {s.job_id}")
        holding[starter] = holding.get(starter, 0) + by_id[s.job_id].gpus


@settings(max_examples=200, deadline=None)
@given(contended())
def test_every_waiting_job_says_why(snap: Snapshot) -> None:
    decisions = schedule(snap)
    started = {s.job_id for s in decisions.starts}
    for p in snap.pending:
        if p.id not in started:
            assert decisions.reasons[p.id], p


# ----------------------------------------------------------------------------- in words


def test_explanation_says_what_you_hold_and_your_share() -> None:
    from scheduler.policy.explain import fair_now_text
    snap = Snapshot(
        (node("n1", 8, (6, 7)), node("n2", 8, tuple(range(8)))),
        (job("1", "ann", "vision"), job("2", "bo", "nlp", 8), job("3", "cy", "nlp", 8)), NOW,
        running=(held("r", "ann", "vision", 6, "n1", 0),),
        shares=shares({"vision": 1, "nlp": 3}, {"ann": "vision", "bo": "nlp", "cy": "nlp"}))
    text = fair_now_text(rank(snap).loads[("vision", "ann")])
    assert text.startswith("you hold 6 of 16 GPUs, your fair share now is 4; "
                           "your group vision holds 6, its share is 4.")
    assert "1.5x your share" in text
    below = fair_now_text(rank(snap).loads[("nlp", "bo")])
    assert ("you hold 0 of 16 GPUs, your fair share now is 6; your group nlp holds 0, its "
            "share is 12") in below
    assert "below your share" in below


def test_standing_texts_explain_every_active_user_with_the_past_part() -> None:
    from scheduler.policy.explain import standing_texts
    snap = Snapshot(
        (node("n1", 8, (6, 7)), node("n2", 8, tuple(range(8)))),
        (job("1", "ann", "vision"), job("2", "bo", "nlp", 8)), NOW,
        running=(held("r", "ann", "vision", 6, "n1", 0),),
        shares=shares({"vision": 1, "nlp": 1}, {"ann": "vision", "bo": "nlp"},
                      usage={("vision", "ann"): 1e6}))
    texts = standing_texts(rank(snap))
    assert set(texts) == {("vision", "ann"), ("nlp", "bo")}
    assert texts[("vision", "ann")].startswith("you hold 6 of 16 GPUs, your fair share now is 7")
    assert "(fair-share factor 0.50 on past use)" in texts[("vision", "ann")]
    assert "counts for 20% of your fair-share factor" in texts[("vision", "ann")]
    assert "below your share" in texts[("nlp", "bo")]


def test_within_share_goes_first_whatever_the_past_age_and_size() -> None:
    # poor holds 0 of its 8 but used the cluster heavily lately (Fair Tree factor low) and
    # asked for 8 GPUs just now; rich holds 8 of its 8, no past, and its 8-GPU job has waited
    # a week (age at its maximum): poor's job still goes first.
    snap = Snapshot(
        (node("n1", 8, ()), node("n2", 8, tuple(range(8)))),
        (job("1", "rich", "rich", 8, at=NOW - WEEK), job("2", "poor", "poor", 8)), NOW,
        running=(held("r", "rich", "rich", 8, "n1", 0),),
        shares=shares({"rich": 1, "poor": 1}, usage={("poor", "poor"): 1e9}))
    assert [s.job_id for s in schedule(snap).starts][:1] == ["2"]


def test_a_users_short_jobs_go_before_their_own_long_ones() -> None:
    snap = Snapshot((node("n1", 8, (0,)),),
                    (job("1", "a", "a", at=NOW - 600, limit=86400), job("2", "a", "a")), NOW,
                    shares=shares({"a": 1, "b": 1}))
    assert [s.job_id for s in schedule(snap).starts] == ["2"]
