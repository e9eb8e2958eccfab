"""Reads and writes over a whole queue go in bounded scripts (READ_CHUNK jobs each), so a
100,000-job queue never holds the store past its busy limit: the same rows and reasons as in
one script, across chunk boundaries. A real Valkey."""

from __future__ import annotations

import pytest

from scheduler.model import JobState
from scheduler.store import Store, jobstore
from tests.builders import job_of, submit_one

pytestmark = pytest.mark.store


async def test_rows_and_reasons_cross_chunk_boundaries(store: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [await submit_one(store, user=f"u{i}") for i in range(10)]
    whole = await store.job_fields(ids, ["id", "user"])
    monkeypatch.setattr(jobstore, "READ_CHUNK", 3)
    assert await store.job_fields(ids, ["id", "user"]) == whole == [
        [job_id, f"u{i}"] for i, job_id in enumerate(ids)]
    reasons = {job_id: [{"code": "Priority", "detail": f"behind {i}"}]
               for i, job_id in enumerate(ids)}
    assert await store.set_reasons(reasons, held=ids[-1:]) == 10
    for i, job_id in enumerate(ids):
        job = await job_of(store, job_id)
        assert job.reason == "Priority" and job.reasons[0]["detail"] == f"behind {i}"
    assert (await job_of(store, ids[-1])).state == JobState.HELD
