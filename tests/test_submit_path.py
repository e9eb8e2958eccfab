"""The submit fast path: the jobs the API hands the coordinator are the jobs as stored."""

from __future__ import annotations

from scheduler.model import Job, JobSpec
from scheduler.store import Store

T0 = 1000.0


def spec(**kw: object) -> JobSpec:
    base: dict[str, object] = dict(user="alice", account="lab", command=["python", "train.py"],
                                   gpus=2, gpu_type="A100", time_limit_s=3600, qos="normal",
                                   name="run", workdir="/data", env={"SEED": "1"},
                                   requeue=True, submitter="root")
    return JobSpec(**{**base, **kw})  # type: ignore[arg-type]


async def test_created_jobs_equal_what_the_store_reads_back(store: Store) -> None:
    created: list[Job] = []
    ids = await store.submit([spec(), spec(name="b", env={})], "tok-1", T0 + 0.123456, created)
    assert [j.id for j in created] == ids
    assert created == await store.get_jobs(ids)  # the coordinator caches these as read


async def test_a_repeated_token_hands_over_no_jobs(store: Store) -> None:
    first: list[Job] = []
    ids = await store.submit([spec()], "tok-2", T0, first)
    again: list[Job] = []
    assert await store.submit([spec()], "tok-2", T0 + 1, again) == ids
    assert len(first) == 1 and again == []
    assert await store.submit([spec()], "tok-3", T0) != ids  # no `created`: same as before
