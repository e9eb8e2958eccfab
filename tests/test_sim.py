"""The trace simulator: loaders, hand-checked replays, outputs, a Philly smoke run."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli.sim import sim
from scheduler.config import Settings
from scheduler.sim import Cluster, TraceError, load_accounts, load_csv, load_philly, simulate
from scheduler.sim.policies import get_policy
from scheduler.sim.report import JOB_COLUMNS, summarize, write_outputs
from tests.sim_checks import assert_no_gpu_shared

# The Philly trace lives beside the checkout (../shared/traces) or where LABQ_TRACES says.
TRACES = os.environ.get("LABQ_TRACES") or Path(__file__).resolve().parents[2] / "shared" / "traces"
PHILLY = Path(TRACES) / "philly.csv"
HEADER = "job_id,submit_time,user,account,gpus,duration,time_limit\n"


def _trace(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + rows)
    return path


def _waits(path: Path, policy: str, cluster: str = "1x2") -> dict[str, float]:
    result = simulate(load_csv(path), Cluster.parse(cluster), get_policy(policy), calc_period=0)
    return {r.job.id: r.start - r.job.submit for r in result.runs}


# One node with 2 GPUs. Job 1 (alice) holds both GPUs 0..100. At t=10 alice submits job 2
# (2 GPUs, 100 s), at t=20 bob submits job 3 (1 GPU, 100 s) and job 4 (1 GPU, 100 s).
HEAVY = ("1,0,alice,a,2,100,100\n2,10,alice,a,2,100,100\n"
         "3,20,bob,b,1,100,100\n4,20,bob,b,1,100,100\n")


def test_fifo_runs_in_submit_order(tmp_path: Path) -> None:
    waits = _waits(_trace(tmp_path, HEAVY), "fifo")
    # job 2 starts at 100 (wait 90); jobs 3 and 4 after it, at 200 (wait 180).
    assert waits == {"1": 0, "2": 90, "3": 180, "4": 180}


def test_labq_fair_share_lets_bob_first(tmp_path: Path) -> None:
    waits = _waits(_trace(tmp_path, HEAVY), "labq")
    # alice has used 200 GPU-seconds by t=100, bob none: bob's jobs go first (wait 80),
    # alice's job 2 after them at 200 (wait 190).
    assert waits == {"1": 0, "3": 80, "4": 80, "2": 190}


def test_fair_now_counts_holdings_where_fair_tree_counts_usage(tmp_path: Path) -> None:
    # 1 node x 4 GPUs. bob ran a 3-GPU job 0..100 (300 GPU-s of past usage); from t=100
    # alice's job 2 holds 3 GPUs (to 10,000) and carol's job 3 the 4th (to 120). At t=110
    # alice queues job 4, at 111 bob job 5; at 120 one GPU frees. Fair Tree (usage by then:
    # bob 300, alice 60) picks alice; fair now sees alice holding 3 of the 4 GPUs, bob none.
    rows = ("1,0,bob,b,3,100,100\n2,100,alice,a,3,9900,9900\n3,100,carol,c,1,20,20\n"
            "4,110,alice,a,1,100,100\n5,111,bob,b,1,100,100\n")
    path = _trace(tmp_path, rows)
    fair_now, fair_tree = _waits(path, "labq", "1x4"), _waits(path, "labq-fairtree", "1x4")
    assert fair_now["5"] < fair_now["4"]
    assert fair_tree["4"] < fair_tree["5"]


def test_fifo_backfill_fills_a_gap(tmp_path: Path) -> None:
    # Job 1 holds 1 GPU until 100; job 2 needs 2 GPUs (reserved at 100); job 3 (1 GPU, 50 s)
    # fits before that, so backfill starts it at once; strict fifo does not.
    rows = "1,0,a,a,1,100,100\n2,1,b,b,2,100,100\n3,2,c,c,1,50,50\n"
    path = _trace(tmp_path, rows)
    assert _waits(path, "fifo-backfill") == {"1": 0, "2": 99, "3": 0}
    assert _waits(path, "fifo") == {"1": 0, "2": 99, "3": 198}


def test_too_large_jobs_are_skipped(tmp_path: Path) -> None:
    path = _trace(tmp_path, "1,0,a,a,4,10,10\n2,0,a,a,1,10,10\n")
    result = simulate(load_csv(path), Cluster.parse("1x2"), get_policy("labq"))
    assert [j.id for j in result.skipped] == ["1"]
    assert [r.job.id for r in result.runs] == ["2"]


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="not found"):
        load_csv(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("job_id,submit_time,user\n1,0,a\n")
    with pytest.raises(TraceError, match="lacks column"):
        load_csv(bad)
    with pytest.raises(TraceError, match="line 3: bad GPU count"):
        load_csv(_trace(tmp_path, "1,0,a,a,1,10,\n2,0,a,a,x,10,\n"))
    philly = tmp_path / "p.csv"
    philly.write_text("timestamp,duration,num_gpus,gpu_time,cluster\n"
                      "2017-10-09 07:01:55,66.0,1,66.0,vc1\nnot-a-time,1,1,1,vc1\n")
    with pytest.raises(TraceError, match="line 3: bad time"):
        load_philly(philly)


def test_philly_loader_filters_and_users(tmp_path: Path) -> None:
    philly = tmp_path / "p.csv"
    philly.write_text("timestamp,duration,num_gpus,gpu_time,cluster\n"
                      "2017-10-09 07:00:00,600,1,600,vc1\n"
                      "2017-10-09 07:00:10,30,1,30,vc1\n"  # too short
                      "2017-10-09 09:00:00,600,2,1200,vc2\n"
                      "2017-10-10 09:00:00,60000,8,480000,vc2\n")
    jobs = load_philly(philly)
    assert [j.id for j in jobs] == ["1", "3", "4"]
    assert jobs[0].submit == 0 and jobs[1].submit == 7200
    assert all(j.user.startswith(j.account + "-u") for j in jobs)
    assert jobs[0].time_limit == 900
    busiest = load_philly(philly, window_hours=1)
    assert [j.id for j in busiest] == ["4"]


def test_outputs_and_cli(tmp_path: Path) -> None:
    path = _trace(tmp_path, HEAVY)
    result = simulate(load_csv(path), Cluster.parse("1x2"), get_policy("labq"))
    summary = write_outputs(result, tmp_path / "out")
    with (tmp_path / "out" / "jobs.csv").open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == JOB_COLUMNS
    assert rows[1] == ["1", "a", "alice", "2", "0", "0", "100", "n0", "0;1", "finished"]
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data == json.loads(json.dumps(summary))
    for key in ("wait_avg_s", "wait_p50_s", "wait_p99_s", "jct_avg_s", "jct_p99_s",
                "makespan_s", "gpu_utilization", "jain_index", "sim_wall_s"):
        assert key in data
    assert data["makespan_s"] == 300
    # The default 5-minute fair-share refresh has not seen any usage in this 300 s replay,
    # so it runs in submit order: waits 0 and 90 (tenant a), 180 and 180 (tenant b).
    assert data["wait_tenant_avg_s"] == pytest.approx((45 + 180) / 2)
    assert data["wait_tenant_max_s"] == pytest.approx(180)
    assert data["gpu_utilization"] == pytest.approx(600 / 600)
    out = CliRunner().invoke(sim, ["--trace", str(path), "--format", "csv", "--cluster", "1x2",
                                   "--compare", "fifo,labq", "--min-duration", "0",
                                   "--out", str(tmp_path / "cmp")])
    assert out.exit_code == 0, out.output
    assert "avg wait" in out.output
    assert (tmp_path / "cmp" / "fifo" / "jobs.csv").exists()
    for name in ("share_over_time.png", "queue_length.png", "wait_cdf.png"):
        png = (tmp_path / "cmp" / name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000, name
    bad = CliRunner().invoke(sim, ["--trace", str(tmp_path / "nope.csv"), "--cluster", "1x2"])
    assert bad.exit_code != 0 and "not found" in bad.output


@pytest.mark.skipif(not PHILLY.is_file(), reason="the Philly trace is not here")
@pytest.mark.parametrize("policy", ["labq", "fifo", "slurm-classic", "drf", "tiresias-las"])
def test_philly_smoke(policy: str) -> None:
    jobs = load_philly(PHILLY, max_rows=2000)
    result = simulate(jobs, Cluster.parse("8x8"), get_policy(policy))
    finished = {r.job.id for r in result.runs if not r.preempted}
    assert finished == {j.id for j in result.jobs}
    assert_no_gpu_shared(result.runs)


def test_cli_names_every_simulator_policy() -> None:
    from scheduler.cli.sim import POLICY_NAMES
    from scheduler.sim.policies import POLICIES

    assert set(POLICY_NAMES) == set(POLICIES)


def test_fairness_formulas_by_hand(tmp_path: Path) -> None:
    # 1x2 cluster, tenants a and b, equal shares: each is entitled to 1 GPU (1/2 of it).
    # a: job 1, 2 GPUs, 100 s at t=0 (alone: on 1 GPU, 2 x slower: 200 s; JCT 100: rho 0.5).
    # b: job 2, 1 GPU, 100 s at t=0 (waits for job 1: runs 100..200; JCT 200: rho 2).
    path = _trace(tmp_path, "1,0,x,a,2,100,100\n2,0,y,b,1,100,100\n")
    result = simulate(load_csv(path), Cluster.parse("1x2"), get_policy("fifo"))
    s = summarize(result, window_s=100)
    assert s["rho_max"] == pytest.approx(2.0)
    assert s["rho_frac_above_1"] == pytest.approx(0.5)
    # window 0 (0..100): both present; a asks for 2 GPUs, b for 1: water-filling entitles
    #   each to 1 GPU (1/2); a got 200/200 = 1 of the GPUs, b 0: |1 - .5| + |0 - .5|;
    #   Jain on x = (2, 0): 4 / (2 * 4) = 0.5.
    # window 1 (100..200): only b is present and asks for 1 GPU: entitled 1/2, got 100/200
    #   = .5: deviation 0, Jain 1.  Deviation (.5 + .5 + 0) / 3; Jain (0.5 + 1) / 2.
    assert s["share_deviation"] == pytest.approx(1 / 3)
    assert s["jain_index"] == pytest.approx(0.75)
    # With shares a=3, b=1, a is entitled to 1.5 GPUs: alone 100 * 2 / 1.5 s; b to 0.5 GPU.
    weighted = simulate(load_csv(path), Cluster.parse("1x2"), get_policy("fifo"),
                        tenant_shares={"a": 3, "b": 1})
    w = summarize(weighted, window_s=100)
    assert w["rho_max"] == pytest.approx(200 / 200)  # b: 1 GPU > 0.5 entitled: alone 200 s
    # window 0: |1 - .75| + |0 - .25|; window 1: b alone, entitled what it asks: 0.
    assert w["share_deviation"] == pytest.approx((0.25 + 0.25 + 0) / 3)


def test_entitlement_is_capped_at_demand(tmp_path: Path) -> None:
    # 1x4 cluster: a runs three 1-GPU jobs, b one, all 0..3600. Everyone gets what it asks
    # for, so the split is perfectly fair: b asks for 1 GPU and is entitled to 1, a to the
    # other 3. (An entitlement of 1/2 each regardless of demand scored this 0.25 and 0.8.)
    rows = "a1,0,x,a,1,3600,3600\na2,0,x,a,1,3600,3600\na3,0,x,a,1,3600,3600\n" \
           "b1,0,y,b,1,3600,3600\n"
    result = simulate(load_csv(_trace(tmp_path, rows)), Cluster.parse("1x4"),
                      get_policy("fifo"))
    s = summarize(result, window_s=3600)
    assert s["share_deviation"] == pytest.approx(0.0)
    assert s["jain_index"] == pytest.approx(1.0)
    # With b on 3 of the 4 shares and a demanding 3 GPUs, b is entitled to what it asks (1
    # GPU), a to the 3 left: still fair. Had a asked for 4 and b for 2 on 1x4, shares 1:3
    # would entitle b to its 2 and a to 2.
    assert summarize(simulate(result.jobs, Cluster.parse("1x4"), get_policy("fifo"),
                              tenant_shares={"a": 1, "b": 3}),
                     window_s=3600)["share_deviation"] == pytest.approx(0.0)


def test_waterfill_by_hand() -> None:
    from scheduler.sim.report import waterfill

    assert waterfill(4, {"a": 4, "b": 2}, {"a": 1, "b": 3}) == {"a": 2, "b": 2}
    assert waterfill(4, {"a": 4, "b": 4}, {"a": 1, "b": 3}) == {"a": 1, "b": 3}
    assert waterfill(8, {"a": 1, "b": 10, "c": 10}, {}) == {"a": 1, "b": 3.5, "c": 3.5}
    assert waterfill(8, {"a": 1, "b": 2}, {}) == {"a": 1, "b": 2}


def test_rho_alone_counts_only_up_to_the_time_limit(tmp_path: Path) -> None:
    # One 1-GPU job on 1x1 that would run 5000 s but is stopped at its 1800 s limit: alone
    # it would also have run 1800 s, so ρ = 1800 / 1800 (not 1800 / 5000).
    result = simulate(load_csv(_trace(tmp_path, "1,0,x,a,1,5000,1800\n")),
                      Cluster.parse("1x1"), get_policy("fifo"))
    assert summarize(result)["rho_max"] == pytest.approx(1.0)


# Two tenants, one node of 2 GPUs, equal usage so far: a1 and b1 (1 GPU, 100 s each) run
# 0..100; a2 (2 GPUs) is submitted at 10, b2 (2 GPUs) at 20. With equal shares a2 (older)
# goes first at 100; give b three times a's shares and b2 goes first.
SHARED = ("a1,0,x,a,1,100,100\nb1,0,y,b,1,100,100\n"
          "a2,10,x,a,2,100,100\nb2,20,y,b,2,100,100\n")


def test_accounts_file_changes_order(tmp_path: Path) -> None:
    path = _trace(tmp_path, SHARED)
    equal = _waits(path, "labq")
    assert equal["a2"] == 90 and equal["b2"] == 180
    accounts = tmp_path / "acc.csv"
    accounts.write_text("tenant,shares\na,1\nb,3\n")
    shares = load_accounts(accounts)
    assert shares == {"a": 1.0, "b": 3.0}
    result = simulate(load_csv(path), Cluster.parse("1x2"), get_policy("labq"), calc_period=0,
                      tenant_shares=shares)
    waits = {r.job.id: r.start - r.job.submit for r in result.runs}
    assert waits["b2"] == 80 and waits["a2"] == 190
    out = CliRunner().invoke(sim, ["--trace", str(path), "--format", "csv", "--cluster", "1x2",
                                   "--min-duration", "0", "--accounts", str(accounts), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["tenant_shares"] == {"a": 1.0, "b": 3.0}


@pytest.mark.parametrize(("text", "message"), [
    ("a,1\nb\n", "line 2: expected 'tenant,shares'"),
    ("a,1\nb,zero\n", "line 2: bad shares 'zero'"),
    ("a,1\nb,0\n", "line 2: bad shares '0'"),
    ("a,1\na,2\n", "line 2: tenant 'a' is listed twice"),
    ("tenant,shares\n", "no tenant,shares rows"),
])
def test_accounts_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "acc.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=message):
        load_accounts(path)
    with pytest.raises(TraceError, match="not found"):
        load_accounts(tmp_path / "none.csv")


def test_fifo_with_many_jobs_at_one_time(tmp_path: Path) -> None:
    # More jobs of one class share a submit time than the snapshot holds (class_depth 4):
    # strict fifo must still run them all (it once stopped at the cut).
    rows = "".join(f"{i},0,u,a,1,10,10\n" for i in range(1, 13))
    result = simulate(load_csv(_trace(tmp_path, rows)), Cluster.parse("1x2"),
                      get_policy("fifo"))
    assert len([r for r in result.runs if not r.preempted]) == 12


def test_backfill_does_not_reorder_a_class_past_its_free_gpus(tmp_path: Path) -> None:
    # One node of 8 GPUs; user a submits ten 1-GPU jobs and user b one 4-GPU job "99", all at
    # t=0. In submit order jobs 1-8 fill the node and 99 waits; the snapshot once held only 4
    # jobs per class, so 99 started at 0 ahead of a's jobs 5-8.
    rows = "".join(f"{i},0,a,a,1,100,100\n" for i in range(1, 11)) + "99,0,b,b,4,100,100\n"
    result = simulate(load_csv(_trace(tmp_path, rows)), Cluster.parse("1x8"),
                      get_policy("fifo-backfill"))
    starts = {r.job.id: r.start for r in result.runs}
    assert sorted((j for j, s in starts.items() if s == 0), key=int) == [str(i)
                                                                           for i in range(1, 9)]
    assert starts["99"] == 100


def test_drf_shares_freed_gpus_max_min(tmp_path: Path) -> None:
    # One node of 4 GPUs, held by c's job until t=100. Tenant a then has four 1-GPU jobs
    # waiting and tenant b four: max-min gives 2 and 2 at t=100 (a's being older does not
    # give it all 4, as it did when every key used the GPUs held before the call).
    rows = ("c0,0,c,c,4,100,100\n" + "".join(f"a{i},1,a,a,1,100,100\n" for i in range(4))
            + "".join(f"b{i},2,b,b,1,100,100\n" for i in range(4)))
    result = simulate(load_csv(_trace(tmp_path, rows)), Cluster.parse("1x4"), get_policy("drf"))
    at_100 = sorted(r.job.account for r in result.runs if r.start == 100)
    assert at_100 == ["a", "a", "b", "b"]


def test_a_time_step_that_never_settles_raises(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The engine calls the policy again at one time while a job could still start; past its
    # call limit it must fail loudly (it once stopped silently with work left unexamined).
    # With the limit at 0 the first time step with a startable job is already past it.
    from scheduler.sim import engine

    jobs = load_csv(_trace(tmp_path, "1,0,u,a,1,10,10\n2,5,u,a,1,10,10\n"))
    assert len(simulate(jobs, Cluster.parse("1x1"), get_policy("labq")).runs) == 2
    monkeypatch.setattr(engine, "_MAX_CALLS", 0)
    with pytest.raises(RuntimeError, match="0 policy calls at t=0 s and could still start"):
        simulate(jobs, Cluster.parse("1x1"), get_policy("fifo-backfill"))


def test_labq_replays_the_default_and_the_old_names_still_work() -> None:
    """`labq` is the default fair share (fair now), `labq-fairtree` Fair Tree, and the name
    fair now had before it became the default still replays it."""
    assert get_policy("labq").algorithm == Settings(Path("/nonexistent")).fairshare_algorithm
    assert get_policy("labq").algorithm == "fair_now"
    assert get_policy("labq-fairtree").algorithm == "fair_tree"
    assert get_policy("labq-fairnow") is get_policy("labq")


def test_a_job_across_nodes_holds_k_times_g_gpus(tmp_path: Path) -> None:
    # 2 nodes x 2 GPUs. alice's job 1 needs 2 GPUs on each of 2 nodes for 100 s: the whole
    # cluster; bob's 1-GPU job waits for it; a job of 3 nodes can never run here.
    path = tmp_path / "t.csv"
    path.write_text("job_id,submit_time,user,account,gpus,duration,time_limit,nodes\n"
                    "1,0,alice,a,2,100,100,2\n2,1,bob,b,1,10,10,1\n3,2,carol,c,1,10,10,3\n")
    jobs = load_csv(path)
    assert [(j.gpus, j.nodes) for j in jobs] == [(4, 2), (1, 1), (3, 3)]
    result = simulate(jobs, Cluster.parse("2x2"), get_policy("labq"), calc_period=0)
    assert [j.id for j in result.skipped] == ["3"]
    runs = {r.job.id: r for r in result.runs}
    first = runs["1"]
    assert first.start == 0 and {first.node, *(n for n, _ in first.rest)} == {"n0", "n1"}
    assert runs["2"].start == 100  # all 4 GPUs were the job's
    summary = summarize(result)
    assert summary["gpu_utilization"] == pytest.approx((4 * 100 + 10) / (4 * 110), rel=1e-6)
