"""The one cluster read every reader builds from (`scheduler.cluster.read.ClusterState`): a
cycle that changes jobs goes on with a new state, the one it read is never edited."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.accounts.tree import Accounts
from scheduler.cluster.read import ClusterState
from scheduler.model import Job, JobState

pytestmark = pytest.mark.unit


def job(job_id: str) -> Job:
    return Job(id=job_id, user="ann", account="lab", state=JobState.RUNNING, gpus=1,
               command=["true"], submitted_at=0.0, time_limit_s=60)


def state() -> ClusterState:
    return ClusterState(100.0, [], Accounts({}, {}), [job("1"), job("2"), job("3")], {})


def test_with_jobs_replaces_by_id_and_leaves_the_read_as_it_was() -> None:
    read = state()
    marked = replace(read.active[1], started_at=50.0)
    after = read.with_jobs({"2": marked})
    assert [j.id for j in after.active] == ["1", "2", "3"]
    assert after.active[1] is marked
    assert read.active[1].started_at is None  # the state read is not edited
    assert read.with_jobs({}) is read


def test_without_jobs_drops_the_ended_ones() -> None:
    read = state()
    after = read.without_jobs({"1", "3"})
    assert [j.id for j in after.active] == ["2"]
    assert [j.id for j in read.active] == ["1", "2", "3"]
    assert read.without_jobs(set()) is read
