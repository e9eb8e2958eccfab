"""`tiresias-las` in the simulator: hand-checked replays of discretized 2D-LAS."""

from __future__ import annotations

import csv
from pathlib import Path

from scheduler.sim import Cluster, load_csv, simulate
from scheduler.sim.policies import get_policy
from scheduler.sim.report import summarize, write_outputs
from scheduler.sim.tiresias import THeld, TJob, decide
from tests.sim_checks import assert_no_gpu_shared

HEADER = "job_id,submit_time,user,account,gpus,duration,time_limit\n"


def _runs(tmp_path: Path, rows: str, policy: str = "tiresias-las",
          cluster: str = "1x2") -> list[tuple[str, float, float, bool]]:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + rows)
    result = simulate(load_csv(path), Cluster.parse(cluster), get_policy(policy))
    return sorted((r.job.id, r.start, r.end, r.preempted) for r in result.runs)


def test_demoted_job_is_preempted_and_resumes(tmp_path: Path) -> None:
    # One node of 2 GPUs. A (2 GPUs, 3600 s) starts at 0 and attains 3600 GPU-seconds at
    # t=1800: it drops to queue 1. B (1 GPU, 100 s) came at 1000 and waited behind A (same
    # queue, A older); at 1800 B outranks A, A is preempted, B runs 1800..1900, then A
    # resumes with the 1800 s it has left: 1900..3700.
    rows = "A,0,x,a,2,3600,7200\nB,1000,y,b,1,100,200\n"
    assert _runs(tmp_path, rows) == [("A", 0, 1800, True), ("A", 1900, 3700, False),
                                     ("B", 1800, 1900, False)]
    # The same trace under fifo: B waits for A to finish.
    assert _runs(tmp_path, rows, "fifo") == [("A", 0, 3600, False), ("B", 3600, 3700, False)]


def test_jobs_csv_has_a_row_per_run(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + "A,0,x,a,2,3600,7200\nB,1000,y,b,1,100,200\n")
    result = simulate(load_csv(path), Cluster.parse("1x2"), get_policy("tiresias-las"))
    summary = write_outputs(result, tmp_path / "out")
    with (tmp_path / "out" / "jobs.csv").open() as f:
        rows = [(r["job_id"], r["start"], r["end"], r["gpu_indices"], r["status"])
                for r in csv.DictReader(f)]
    assert rows == [("A", "0", "1800", "0;1", "preempted"), ("B", "1800", "1900", "0", "finished"),
                    ("A", "1900", "3700", "0;1", "finished")]
    assert summary["preemptions"] == 1 and summary["runs"] == 3
    assert summary["wait_avg_s"] == (0 + 800) / 2  # first start - submit
    # queued = JCT - time running: A waited 100 s after its preemption (3700 - 3600), B 800
    assert summary["queued_avg_s"] == (100 + 800) / 2
    assert summary["queued_p99_s"] == 800


def test_jobs_csv_marks_a_job_stopped_at_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + "A,0,x,a,1,5000,1800\n")
    write_outputs(simulate(load_csv(path), Cluster.parse("1x2"), get_policy("fifo")),
                  tmp_path / "out")
    with (tmp_path / "out" / "jobs.csv").open() as f:
        assert [(r["end"], r["status"]) for r in csv.DictReader(f)] == [("1800", "timeout")]


def test_short_jobs_overtake_a_long_one(tmp_path: Path) -> None:
    # A long 1-GPU job (L) and, later, three short ones on a 1-GPU node. L attains 3600
    # GPU-seconds at t=3600; the short ones (queue 0) then run first, in submit order, and
    # L resumes after them with what it has left.
    rows = ("L,0,x,a,1,5000,9000\nS1,100,y,b,1,50,100\nS2,200,y,b,1,50,100\n"
            "S3,4000,z,c,1,50,100\n")
    assert _runs(tmp_path, rows, cluster="1x1") == [
        ("L", 0, 3600, True), ("L", 3700, 4000, True), ("L", 4050, 5150, False),
        ("S1", 3600, 3650, False), ("S2", 3650, 3700, False), ("S3", 4000, 4050, False)]


def test_decide_keeps_order_and_never_preempts_a_higher_job() -> None:
    free = {"n0": [], "n1": [3]}
    running = [THeld((0, 0.0, 1, "1"), "1", 4, "n0", (0, 1, 2, 3)),
               THeld((1, 5.0, 1, "2"), "2", 3, "n1", (0, 1, 2))]
    # A queue-0 job of 4 GPUs outranks job 2 (queue 1): job 2 is preempted on n1, which
    # then has 4 free GPUs. A queue-1 pending job never preempts job 1 (queue 0).
    pending = [TJob((0, 9.0, 1, "3"), "3", 4), TJob((1, 1.0, 1, "4"), "4", 4)]
    d = decide(8, free, running, pending)
    assert d.preempt == ["2"] and d.starts == [("3", "n1", (0, 1, 2, 3))]
    d = decide(8, free, running[:1], [TJob((1, 1.0, 1, "4"), "4", 4)])
    assert d.preempt == [] and d.starts == []
    assert free == {"n0": [], "n1": [3]}  # not changed


def test_tiresias_on_a_busy_trace_finishes_every_job(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i * 30},u{i % 3},t{i % 2},{1 + i % 3},{600 + 97 * i},{9000}\n"
                   for i in range(40))
    path = tmp_path / "t.csv"
    path.write_text(HEADER + rows)
    result = simulate(load_csv(path), Cluster.parse("2x4"), get_policy("tiresias-las"))
    s = summarize(result)
    assert s["jobs_finished"] == 40 and s["preemptions"] > 0
    done: dict[str, float] = {}
    for r in result.runs:  # run time adds up to the duration: progress is kept
        done[r.job.id] = done.get(r.job.id, 0.0) + r.end - r.start
    assert all(abs(done[j.id] - j.duration) < 1e-6 for j in result.jobs)
    assert_no_gpu_shared(result.runs)
