"""`labq sim --budgets`: labq admits through the live BudgetGate, so it never overruns a
budget; the baselines ignore budgets, and their overruns are reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli.sim import sim
from scheduler.policy.cycle import schedule
from scheduler.policy.snapshot import NodeView, PendingJob, Snapshot
from scheduler.sim import Cluster, TraceError, load_csv, simulate
from scheduler.sim.budgets import Ledger, load_budgets
from scheduler.sim.policies import POLICIES, get_policy
from scheduler.sim.report import summarize

HEADER = "job_id,submit_time,user,account,gpus,duration,time_limit\n"
# Tenant a has 1 billed GPU-hour; its three 1-GPU jobs may cost 1800 GPU-s each (their time
# limits), so only two fit. Tenant b has no budget.
ROWS = ("a1,0,x,a,1,1800,1800\na2,0,x,a,1,1800,1800\na3,0,x,a,1,1800,1800\n"
        "b1,0,y,b,1,1800,1800\n")


def _trace(tmp_path: Path, rows: str = ROWS) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + rows)
    return path


def test_labq_never_overruns_baselines_do(tmp_path: Path) -> None:
    jobs = load_csv(_trace(tmp_path))
    labq = summarize(simulate(jobs, Cluster.parse("1x4"), get_policy("labq"),
                              budgets={"a": 1.0}))
    assert labq["budget_overruns"]["tenants"] == 0
    assert labq["budget_overruns"]["gpu_hours"] == 0
    assert labq["budget_overruns"]["used_gpu_hours"] == {"a": 1.0}
    assert labq["jobs_never_started"] == 1  # a3: held, BudgetExhausted
    assert labq["jobs_finished"] == 3
    fifo = summarize(simulate(jobs, Cluster.parse("1x4"), get_policy("fifo-backfill"),
                              budgets={"a": 1.0}))
    assert fifo["budget_overruns"] == {"tenants": 1, "gpu_hours": pytest.approx(0.5),
                                       "by_tenant_gpu_hours": {"a": pytest.approx(0.5)},
                                       "used_gpu_hours": {"a": pytest.approx(1.5)}}
    assert fifo["jobs_never_started"] == 0
    plain = summarize(simulate(jobs, Cluster.parse("1x4"), get_policy("labq")))
    assert plain["budget_overruns"] is None and plain["jobs_never_started"] == 0


@pytest.mark.parametrize("policy", sorted(p for p in POLICIES if not POLICIES[p].budgets))
def test_every_baseline_ignores_budgets(tmp_path: Path, policy: str) -> None:
    # Tenant a's 1 GPU-hour fits two of its three 1800 GPU-s jobs; a baseline runs all three.
    result = simulate(load_csv(_trace(tmp_path)), Cluster.parse("1x4"), get_policy(policy),
                      budgets={"a": 1.0})
    s = summarize(result)
    assert s["jobs_never_started"] == 0
    assert s["budget_overruns"]["by_tenant_gpu_hours"] == {"a": pytest.approx(0.5)}


def test_a_job_past_its_time_limit_is_stopped_there(tmp_path: Path) -> None:
    # a1 would run 5000 s but its limit is 1800: it is stopped at 1800, as the coordinator
    # times a job out, so its charge never exceeds what admission counted.
    jobs = load_csv(_trace(tmp_path, "a1,0,x,a,1,5000,1800\na2,0,x,a,1,1800,1800\n"))
    result = simulate(jobs, Cluster.parse("1x4"), get_policy("labq"), budgets={"a": 1.0})
    assert sorted((r.job.id, r.start, r.end) for r in result.runs) == [
        ("a1", 0, 1800), ("a2", 0, 1800)]
    s = summarize(result)
    assert s["jobs_timed_out"] == 1 and s["budget_overruns"]["tenants"] == 0


def test_the_ledger_feeds_the_live_budget_gate() -> None:
    # What the replay hands the policy: the coordinator's BudgetState. With a1 running
    # (rate 1, from 0, limit 1800) and 600 s charged before, at t=900 tenant a has spent
    # 600 + 900 and committed 900 of its 3600, 1200 left: a 1-GPU job of limit 1300 does
    # not fit, one of 1100 does.
    ledger = Ledger({"a": 1.0})
    ledger.started("a", 1.0, 0.0, 1800.0)
    ledger.charged["a"] = 600.0
    state = ledger.state(900.0)
    assert state is not None
    assert state.spent == {("account", "a"): 1500.0}
    assert state.committed == {("account", "a"): 900.0}
    snap = Snapshot((NodeView("n0", "gpu", 4, (1, 2, 3)),),
                    (PendingJob("2", "x", "a", 1, 10.0, time_limit_s=1300),
                     PendingJob("3", "x", "a", 1, 20.0, time_limit_s=1100)), 900.0,
                    budgets=state)
    d = schedule(snap)
    assert [s.job_id for s in d.starts] == ["3"]  # 1500 + 900 + 1100 <= 3600
    assert d.reasons["2"][0].code == "BudgetExhausted"
    assert Ledger(None).state(0.0) is None


def test_cli_budgets(tmp_path: Path) -> None:
    budgets = tmp_path / "b.csv"
    budgets.write_text("tenant,budget\n# GPU-hours\na,1\n")
    out = CliRunner().invoke(sim, ["--trace", str(_trace(tmp_path)), "--format", "csv",
                                   "--cluster", "1x4", "--min-duration", "0", "--budgets",
                                   str(budgets), "--compare", "labq,fifo", "--json"])
    assert out.exit_code == 0, out.output
    labq, fifo = json.loads(out.output)
    assert labq["budget_overruns"]["tenants"] == 0 and fifo["budget_overruns"]["tenants"] == 1
    assert labq["budgets_gpu_hours"] == {"a": 1.0}
    table = CliRunner().invoke(sim, ["--trace", str(_trace(tmp_path)), "--format", "csv",
                                     "--cluster", "1x4", "--min-duration", "0", "--budgets",
                                     str(budgets), "--compare", "labq,fifo"])
    assert "budget overruns" in table.output and "1 (0.5 GPU-h)" in table.output
    bad = CliRunner().invoke(sim, ["--trace", str(_trace(tmp_path)), "--format", "csv",
                                   "--cluster", "1x4", "--budgets", str(tmp_path / "no.csv")])
    assert bad.exit_code != 0 and "budgets file" in bad.output


@pytest.mark.parametrize(("text", "message"), [
    ("a,1\nb\n", "line 2: expected 'tenant,budget'"),
    ("a,1\nb,lots\n", "line 2: bad budget 'lots'"),
    ("a,-1\n", "line 1: bad budget '-1'"),
    ("a,1\na,2\n", "line 2: tenant 'a' is listed twice"),
    ("tenant,budget\n", "no tenant,budget rows"),
])
def test_budgets_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "b.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=message):
        load_budgets(path)
