"""The per-user pending cap (max_pending_jobs) holds exactly: the store keeps each user's
waiting count (waiting|{user}) in the same scripts that move jobs into and out of waiting, and
a submit is checked against it in the step that stores it, whichever coordinator's API takes
it. Tried with two APIs on one store and a burst of concurrent submits from a real user."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from scheduler.model import JobSpec
from scheduler.policy.arrays import parse_array
from scheduler.store import JobCapError, PendingCapError, Store, StoredCapError, SubmitCaps
from scheduler.store.records import job_from_spec
from tests.builders import T0, job_of, lead, report, spec, start_job, submit_one
from tests.security_server import ApiServer, ensure_user

USER = "labq-cap-cat"
JOB = {"command": ["python", "train.py"], "workdir": "/tmp"}


async def recount(store: Store, user: str) -> int:
    """The user's waiting jobs, counted from the queue itself."""
    _active, waiting = await store.queue_ids()
    owners = [row[0] for row in await store.job_fields(waiting, ["user"])]
    arrays = sum(len(a.remaining_indices) for a in await store.arrays()
                 if a.template.user == user and a.state == "PENDING")
    return owners.count(user) + arrays


async def test_every_way_in_and_out_of_waiting_keeps_the_count(store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    steps: list[tuple[str, int]] = []

    async def check(step: str) -> None:
        steps.append((step, await store.waiting_count("alice")))
        assert steps[-1][1] == await recount(store, "alice"), steps

    first = await submit_one(store)
    second = await submit_one(store)
    await check("two submitted")
    assert await store.hold(second, "alice", False, False, T0) == "OK"
    await check("one held")
    assert await store.cancel(second, "alice", False, T0 + 1) == "CANCELLED"
    await check("the held one cancelled")
    assert await start_job(store, epoch, first, "n1", [0], 1.0, T0 + 2) == "OK"
    await check("one started")
    assert await store.requeue(epoch, await job_of(store, first), "NodeLost", T0 + 3) == "OK"
    await check("requeued")
    template = job_from_spec(spec(), "", T0)
    [array_id] = await store.submit_array(template, parse_array("0-9", 100), "tok-a", 60, False)
    await check("an array of 10")
    array = await store.array(array_id)
    assert array is not None
    assert await store.spawn_tasks(epoch, array, 4) == "OK"
    await check("4 tasks made")
    array = await store.array(array_id)
    assert array is not None
    assert await store.cancel_unmade(array, 9, "alice", False, T0 + 4) == "OK"
    await check("an unmade index cancelled")
    array = await store.array(array_id)
    assert array is not None
    assert await store.array_set(array, "alice", False, {"state": "CANCELLED"}) == "OK"
    await check("the array's rest cancelled")
    assert [n for _, n in steps] == [2, 2, 1, 0, 1, 11, 11, 10, 5]
    # counted from scratch (a store an older labq wrote): the same
    await store.r.hdel(store.keys.stats, "waiting_counted", "waiting|alice")
    assert await store.count_waiting() == 1
    assert await store.waiting_count("alice") == 5
    assert await store.count_waiting() == -1  # once per store


async def test_the_store_refuses_past_the_cap_and_stores_nothing(store: Store) -> None:
    await store.submit([spec(), spec()], "t1", T0, caps=SubmitCaps(pending=3))
    try:
        await store.submit([spec(), spec()], "t2", T0, caps=SubmitCaps(pending=3))
    except PendingCapError as exc:
        assert exc.has == 2
    else:
        raise AssertionError("a submit past the cap was stored")
    assert await store.waiting_count("alice") == 2
    assert (await store.job_counts())["waiting"] == 2


def burst_through_two_apis(valkey_url: str, user: str, cap: str,
                           count: Callable[[Store], Awaitable[Any]],
                           admin: Sequence[dict[str, Any]] = (), refusal: str = "",
                           **settings: Any) -> tuple[list[int], Any]:
    """30 submits at once as `user`, half through each of two APIs of one install (two
    coordinators on one store), each refusal checked to say `refusal` (by default, that `user`
    may have the setting `cap`'s limit); the answers' statuses and what `count(store)` reads of
    the store afterwards. `admin`: accounts requests root makes first."""
    ensure_user(user)
    one = ApiServer(valkey_url, **settings).start()
    two = ApiServer(valkey_url, **settings)
    two.prefix = one.prefix  # a second coordinator of the same install
    two.start()
    try:
        for body in admin:
            status, answer = one.call("POST", "/v1/admin/accounts", body)
            assert status == 200, answer
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(
                lambda i: (one if i % 2 else two).as_user(user, "POST", "/v1/jobs", JOB),
                range(30)))
        refusal = refusal or f"may have {settings[cap]} ({cap})"
        assert all(refusal in str(answer)
                   for status, answer in answers if status != 200), answers
        return sorted(status for status, _ in answers), one.run(count(one.store))
    finally:
        two.stop()
        one.stop()


def test_two_apis_on_one_store_accept_exactly_the_cap(valkey_url: str) -> None:
    statuses, waiting = burst_through_two_apis(
        valkey_url, USER, "max_pending_jobs", lambda store: store.waiting_count(USER),
        max_pending_jobs=10)
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    assert waiting == 10


def test_two_apis_on_one_store_keep_exactly_the_stored_cap(valkey_url: str) -> None:
    """What a user may keep in the store (max_stored_jobs_per_user, ended jobs included) is
    checked in the step that stores, too: a burst through two APIs never passes it."""
    user = f"{USER}-kept"
    statuses, (kept, _bytes) = burst_through_two_apis(
        valkey_url, user, "max_stored_jobs_per_user", lambda store: store.stored_jobs(user),
        max_stored_jobs_per_user=7)
    assert statuses.count(200) == 7 and statuses.count(429) == 23
    assert kept == 7


async def test_the_store_refuses_past_the_stored_bytes_and_stores_nothing(store: Store) -> None:
    big = JobSpec(user="alice", account="lab", command=["python", "x" * 500])
    await store.submit([big], "b1", T0, caps=SubmitCaps(stored_bytes=1200))
    try:
        await store.submit([big, big], "b2", T0, caps=SubmitCaps(stored_bytes=1200))
    except StoredCapError as exc:
        assert exc.what == "bytes" and 500 < exc.has < 600
    else:
        raise AssertionError("a submit past the stored bytes was stored")
    jobs, kept = await store.stored_jobs("alice")
    assert jobs == 1 and 500 < kept < 600
    assert (await store.job_counts())["waiting"] == 1


def test_two_apis_on_one_store_keep_exactly_a_users_max_jobs(valkey_url: str) -> None:
    """The accounts file's max_jobs (waiting and running together) is checked in the step that
    stores, too: before, it was a count read first, which two APIs overran by a burst."""
    user = f"{USER}-max"
    admin = [{"target": "account", "op": "add", "name": "capped"},
             {"target": "user", "op": "add", "name": user, "account": "capped"},
             {"target": "user", "op": "set", "name": user, "max_jobs": 6}]
    statuses, waiting = burst_through_two_apis(
        valkey_url, user, "max_jobs", lambda store: store.waiting_count(user), admin,
        f"{user} may have 6 pending and running jobs")
    assert statuses.count(200) == 6 and statuses.count(429) == 24
    assert waiting == 6


async def test_max_jobs_counts_running_jobs_and_arrays_and_stores_nothing_past_it(
        store: Store) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    caps = SubmitCaps(live=4)
    first = await submit_one(store)
    await store.submit([spec()], "l1", T0, caps=caps)
    assert await start_job(store, epoch, first, "n1", [0], 1.0, T0 + 1) == "OK"
    template = job_from_spec(spec(), "", T0)
    await store.submit_array(template, parse_array("0-1", 100), "l2", 60, False, caps)
    refused: list[int] = []
    for attempt in (store.submit([spec()], "l3", T0, caps=caps),
                    store.submit_array(template, parse_array("0-1", 100), "l4", 60, False,
                                       caps)):
        try:
            await attempt
        except JobCapError as exc:
            refused.append(exc.has)
    assert refused == [4, 4]  # one running, one waiting job, an array of two waiting
    assert await store.waiting_count("alice") == 3
    assert await store.submit([spec()], "l5", T0, caps=SubmitCaps(live=5))
