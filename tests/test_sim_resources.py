"""The simulator counts CPUs and memory as the live policy does: a cluster whose nodes offer
some (`--cluster 1x4,cpus=4,mem=16G`) runs at once only the jobs whose CPUs and memory fit,
a trace's `cpus` and `mem` columns say what each job asks (empty: its node's share), and a
job no node could ever hold is skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.sim import Cluster, load_csv, simulate
from scheduler.sim.policies import get_policy

pytestmark = pytest.mark.unit
HEADER = "job_id,submit_time,user,account,gpus,duration,time_limit,cpus,mem\n"


def trace(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + rows)
    return path


def starts(cluster: str, path: Path, policy: str = "labq", show_all: bool = False
           ) -> dict[str, float]:
    result = simulate(load_csv(path), Cluster.parse(cluster), get_policy(policy), calc_period=0,
                      show_all=show_all)
    return {run.job.id: run.start for run in result.runs}


def test_jobs_whose_cpus_do_not_fit_together_run_one_after_another(tmp_path: Path) -> None:
    path = trace(tmp_path, "".join(f"{i},0,u,a,1,100,200,2,\n" for i in range(1, 5)))
    assert starts("1x4", path) == dict.fromkeys("1234", 0.0)  # CPUs not counted
    got = starts("1x4,cpus=4", path)
    assert sorted(got.values()) == [0.0, 0.0, 100.0, 100.0]
    assert got == starts("1x4,cpus=4", path, show_all=True)  # the cut shows what it must


def test_memory_and_the_nodes_share_count_too(tmp_path: Path) -> None:
    # job 1 takes 12G of 16G; job 2 asks nothing (a quarter: 4G) and fits beside it; job 3
    # asks 8G and waits for job 1
    path = trace(tmp_path, "1,0,u,a,1,100,200,,12G\n2,0,u,a,1,100,200,,\n"
                           "3,1,u,a,1,100,200,,8G\n")
    assert starts("1x4,cpus=8,mem=16G", path, "fifo-backfill") == {"1": 0.0, "2": 0.0,
                                                                   "3": 100.0}


def test_a_job_no_node_can_hold_is_skipped(tmp_path: Path) -> None:
    path = trace(tmp_path, "1,0,u,a,1,100,200,16,\n2,0,u,a,1,100,200,,\n")
    result = simulate(load_csv(path), Cluster.parse("2x4,cpus=8"), get_policy("labq"))
    assert [j.id for j in result.skipped] == ["1"] and [r.job.id for r in result.runs] == ["2"]


@pytest.mark.parametrize("text", ["1x4,cpus=0", "1x4,cpus=x", "1x4,mem=lots", "1x4,disk=1G"])
def test_a_bad_cluster_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        Cluster.parse(text)
    assert str(caught.value).startswith(f"bad --cluster {text!r}: ")
    assert Cluster.parse("2x8:A100,cpus=64,mem=512G") == Cluster(2, 8, "A100", cpus=64,
                                                                  mem=512 * 1024)
