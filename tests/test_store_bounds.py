"""What one user can make labq keep, and what others can learn (issue 18, items 2 and 9), run
as unprivileged users against the real API on a real Valkey: every stored job counts against
a per-user cap until retention removes it; an ended job keeps no environment or script; an
array's tasks share its request; lists come a bounded page at a time without environments;
another user's job shows why it waits or ended as a code only; /v1/accounts and /metrics keep
others' settings and usage to admins (and to a scraper holding the metrics token)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler.config import Settings
from scheduler.coordinator.core import Coordinator
from scheduler.metrics import render
from scheduler.metrics.access import ensure_metrics_token, full_access, metrics_token_path
from scheduler.model import JobState
from scheduler.policy.arrays import parse_array
from scheduler.server.jobroutes import PAGE_MAX
from scheduler.store import Store
from scheduler.store.records import job_from_spec
from tests.builders import T0, lead, spec, start_job
from tests.security_server import ApiServer, can_switch_users, ensure_user

pytestmark = pytest.mark.skipif(not can_switch_users(),
                                reason="needs root, useradd and /usr/bin/python3")
CAT, DOG = "labq-sec-cat", "labq-sec-dog"
JOB = {"command": ["sleep", "1"], "workdir": "/tmp", "time": "1h"}


@pytest.fixture(scope="module", autouse=True)
def users() -> None:
    for name in (CAT, DOG):
        ensure_user(name)


def test_every_stored_job_counts_until_retention_removes_it(valkey_url: str) -> None:
    """Ended and cancelled jobs used to be free: a user kept 100,000 of them with 64 KiB of
    command and env each. Now each counts against max_stored_jobs_per_user."""
    srv = ApiServer(valkey_url, max_stored_jobs_per_user=5).start()
    try:
        ids = [srv.as_user(CAT, "POST", "/v1/jobs", JOB)[1]["ids"][0] for _ in range(3)]
        assert srv.as_user(CAT, "POST", "/v1/jobs", {**JOB, "array": "0-1"})[0] == 200
        for job_id in ids:
            assert srv.as_user(CAT, "POST", f"/v1/jobs/{job_id}/cancel", {})[0] == 200
        before = srv.state()
        status, answer = srv.as_user(CAT, "POST", "/v1/jobs", JOB)
        assert status == 429 and "max_stored_jobs_per_user" in answer["error"], answer
        assert "\n" not in answer["error"] and srv.state() == before
        assert srv.as_user(DOG, "POST", "/v1/jobs", JOB)[0] == 200  # per user

        async def expire() -> int:
            epoch = await lead(srv.store)
            return await srv.store.expire_done(epoch, T0 + 10**10, 0, 0, 86400)
        assert srv.run(expire()) == 3  # the three cancelled jobs leave the store
        assert srv.run(srv.store.stored_jobs(CAT))[0] == 2  # the array's two tasks stay counted
        assert srv.as_user(CAT, "POST", "/v1/jobs", JOB)[0] == 200
    finally:
        srv.stop()


def test_the_bytes_one_user_keeps_in_the_store_are_bounded(valkey_url: str) -> None:
    """Each job's command, environment and script count until they leave the store: the
    environment and script when the job ends, the command at retention."""
    srv = ApiServer(valkey_url, max_stored_bytes_per_user=200_000).start()
    try:
        big = {**JOB, "env": {"BLOB": "x" * 60_000}}
        ids = [srv.as_user(CAT, "POST", "/v1/jobs", big)[1]["ids"][0] for _ in range(3)]
        before = srv.state()
        status, answer = srv.as_user(CAT, "POST", "/v1/jobs", big)
        assert status == 429 and "max_stored_bytes_per_user" in answer["error"], answer
        assert srv.state() == before
        for job_id in ids:  # an ended job keeps its command only: the room comes back
            assert srv.as_user(CAT, "POST", f"/v1/jobs/{job_id}/cancel", {})[0] == 200
        assert srv.run(srv.store.stored_jobs(CAT))[1] < 1000
        assert srv.as_user(CAT, "POST", "/v1/jobs", big)[0] == 200

        async def expire() -> int:
            epoch = await lead(srv.store)
            return await srv.store.expire_done(epoch, T0 + 10**10, 0, 0, 86400)
        assert srv.run(expire()) == 3
        jobs, size = srv.run(srv.store.stored_jobs(CAT))
        assert jobs == 1 and 60_000 < size < 61_000  # exactly the one waiting job's
    finally:
        srv.stop()


def test_an_ended_job_keeps_no_environment_or_script(valkey_url: str) -> None:
    srv = ApiServer(valkey_url).start()
    try:
        body = {**JOB, "command": [], "script": "#!/bin/sh\necho $TOKEN\n",
                "env": {"TOKEN": "s3cret"}}
        (job_id,) = srv.as_user(CAT, "POST", "/v1/jobs", body)[1]["ids"]
        job = srv.run(srv.store.get_job(job_id))
        assert job.env == {"TOKEN": "s3cret"} and job.script.startswith("#!")
        assert srv.as_user(CAT, "POST", f"/v1/jobs/{job_id}/cancel", {})[0] == 200
        job = srv.run(srv.store.get_job(job_id))
        assert (job.state, job.env, job.script) == (JobState.CANCELLED, {}, "")
    finally:
        srv.stop()


async def test_an_arrays_tasks_share_its_request(store: Store) -> None:
    """A 1,000-task array used to store its command and env 1,000 times."""
    epoch = await lead(store)
    template = job_from_spec(spec(env={"BIG": "x" * 1000}), "", T0)
    template.script = "#!/bin/sh\nexit 0\n"
    (array_id,) = await store.submit_array(template, parse_array("0-9", 1000), "tok", 60, False)
    array = await store.array(array_id)
    assert array is not None
    assert await store.spawn_tasks(epoch, array, 3) == "OK"
    raw = await store.r.hgetall(store.keys.job(f"{array_id}_0"))
    assert (raw["command"], raw["env"], raw["script"]) == ("[]", "{}", "")
    from scheduler.model import NodeReport
    from tests.builders import gpu

    await store.heartbeat(NodeReport("n1", [gpu(0)]), T0)
    assert await start_job(store, epoch, f"{array_id}_0", "n1", [0], 1.0, T0 + 1) == "OK"
    runs, _, _ = await store.node_orders("n1")
    record = runs[f"{array_id}_0"]
    assert record.command == ["python", "train.py"] and record.env == {"BIG": "x" * 1000}
    assert record.script.startswith("#!/bin/sh") and record.array_task == 0


def test_lists_come_a_bounded_page_at_a_time_without_environments(valkey_url: str) -> None:
    srv = ApiServer(valkey_url).start()
    try:
        async def many() -> None:
            await srv.store.submit([spec(user=CAT, env={"K": "v" * 100})] * (PAGE_MAX + 20),
                                   "many", T0)
        srv.run(many())
        status, page = srv.as_user(CAT, "GET", "/v1/jobs?limit=100000")
        assert status == 200 and len(page) == PAGE_MAX  # the hard page size
        assert all(line["env"] is None and line["command"] is None for line in page)
        _, rest = srv.as_user(CAT, "GET", f"/v1/jobs?limit=100000&after={page[-1]['id']}")
        assert len(rest) == 20 and {j["id"] for j in rest}.isdisjoint({j["id"] for j in page})
        _, small = srv.as_user(CAT, "GET", "/v1/jobs?limit=10")
        assert [j["id"] for j in small] == [j["id"] for j in page[:10]]
        status, answer = srv.as_user(CAT, "GET", "/v1/jobs?limit=" + "9" * 5000)
        assert status == 400 and "\n" not in answer["error"]
    finally:
        srv.stop()


def test_others_see_why_a_job_ended_as_a_code_and_only_their_own_settings(
        valkey_url: str) -> None:
    srv = ApiServer(valkey_url, admins=["root"]).start()
    try:
        (job_id,) = srv.as_user(DOG, "POST", "/v1/jobs", JOB)[1]["ids"]

        async def fail() -> None:
            epoch = await lead(srv.store)
            assert await start_job(srv.store, epoch, job_id, "n1", [0], 1.0, T0) == "OK"
            job = await srv.store.get_job(job_id)
            assert job is not None
            await srv.store.finish(epoch, job, JobState.FAILED, None,
                                   "LaunchFailed: cannot enter /home/dog/secret-project", T0 + 1)
        srv.run(fail())
        theirs = srv.as_user(CAT, "GET", f"/v1/jobs/{job_id}")[1]
        assert theirs["reason"] == "LaunchFailed" and "secret" not in str(theirs)
        mine = srv.as_user(DOG, "GET", f"/v1/jobs/{job_id}")[1]
        assert "secret-project" in mine["reason"]
        for change in ({"target": "account", "op": "add", "name": "pets"},
                       {"target": "user", "op": "add", "name": DOG, "account": "pets"}):
            status, answer = srv.call("POST", "/v1/admin/accounts", change)
            assert status == 200, answer
        users = srv.as_user(CAT, "GET", "/v1/accounts")[1]["users"]
        assert DOG not in {u["name"] for u in users}
        assert DOG in {u["name"] for u in srv.call("GET", "/v1/accounts")[1]["users"]}
    finally:
        srv.stop()


async def test_metrics_keep_per_user_series_to_the_token_holder(store: Store,
                                                                tmp_path: Path) -> None:
    settings = Settings(tmp_path)
    coordinator = Coordinator(store, settings)
    await store.submit([spec(user=CAT)], "m", T0)
    public = (await render(store, coordinator, now=T0 + 1, private=True)).decode()
    full = (await render(store, coordinator, now=T0 + 1)).decode()
    assert f'user="{CAT}"' in full and f'user="{CAT}"' not in public
    assert "labq_jobs{" in public and 'account="lab"' in public  # per-account series
    token = ensure_metrics_token(settings)
    info = os.stat(metrics_token_path(settings))
    assert info.st_mode & 0o777 == 0o600 and ensure_metrics_token(settings) == token
    assert full_access(f"Bearer {token}", settings)
    assert not full_access("Bearer guess", settings) and not full_access(None, settings)
    assert full_access(None, Settings(tmp_path, private_data=False))


