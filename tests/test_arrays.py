"""Job arrays and dependencies: the pure parts (index sets, expressions, verdicts), and the
coordinator making tasks, throttling them and holding dependent jobs back, against a real
store with nodes played by the test (InMemoryNodes)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from scheduler.config import Settings
from scheduler.coordinator.core import Coordinator
from scheduler.coordinator.nodes import InMemoryNodes
from scheduler.coordinator.waiting import aggregate, array_tasks
from scheduler.model import JobState
from scheduler.noderun import EXITED, RUNNING, RunStatus
from scheduler.policy.arrays import ArraySpecError, format_ranges, parse_array, parse_ranges
from scheduler.policy.dependency import (
    MET,
    NEVER,
    WAIT,
    DependencyError,
    Target,
    evaluate,
    parse_dependency,
)
from scheduler.store import Store
from scheduler.store.records import job_from_spec
from tests.builders import T0, job_of, lead, report, spec, submit_one

# ------------------------------------------------------------------ pure: arrays


@pytest.mark.parametrize(("text", "indices", "throttle"), [
    ("0-9", list(range(10)), 0),
    ("0-99%8", list(range(100)), 8),
    ("1,3,5-7", [1, 3, 5, 6, 7], 0),
    ("0-20:2", list(range(0, 21, 2)), 0),
    ("7", [7], 0),  # as in Slurm: the one task 7, not seven copies
    ("3,1,3", [1, 3], 0),
])
def test_array_specs_read_as_slurm_reads_them(text: str, indices: list[int],
                                              throttle: int) -> None:
    array = parse_array(text, 1000)
    assert (list(array.indices), array.throttle) == (indices, throttle)
    assert parse_ranges(format_ranges(array.indices)) == indices


@pytest.mark.parametrize(("text", "message"), [
    ("0-1000", "max_array_size"), ("9-3", "goes up"), ("0-9%0", "at least 1"),
    ("a-b", "write indices"), ("0-9:0", "step"), ("", "write indices"),
])
def test_bad_array_specs_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ArraySpecError, match=message):
        parse_array(text, 1000)


def test_ranges_are_compact() -> None:
    assert format_ranges([1, 3, 5, 6, 7, 9]) == "1,3,5-7,9"
    assert format_ranges([]) == ""


# ------------------------------------------------------------------ pure: dependencies

OK = Target(started=True, ended=True)
BAD = Target(started=True, ended=True, failed="FAILED (exit 1)")
RUNS = Target(started=True, ended=False)
WAITS = Target(started=False, ended=False)


@pytest.mark.parametrize(("text", "targets", "verdict"), [
    ("afterok:1", {"1": OK}, MET),
    ("afterok:1", {"1": RUNS}, WAIT),
    ("afterok:1", {"1": BAD}, NEVER),
    ("afternotok:1", {"1": BAD}, MET),
    ("afternotok:1", {"1": OK}, NEVER),
    ("afterany:1:2", {"1": OK, "2": BAD}, MET),
    ("afterany:1:2", {"1": OK, "2": RUNS}, WAIT),
    ("after:1", {"1": RUNS}, MET),
    ("after:1", {"1": WAITS}, WAIT),
    ("afterok:1,afterany:2", {"1": OK, "2": RUNS}, WAIT),
    ("afterok:1,afterany:2", {"1": BAD, "2": RUNS}, NEVER),
    ("afterok:1?afterok:2", {"1": BAD, "2": OK}, MET),
    ("afterok:1?afterok:2", {"1": BAD, "2": BAD}, NEVER),
    ("afterok:1?afterok:2", {"1": BAD, "2": RUNS}, WAIT),
    ("afterok:1", {"1": None}, MET),  # gone from the store: met, as in Slurm
])
def test_dependencies_are_met_wait_or_never(text: str, targets: dict[str, Target | None],
                                            verdict: str) -> None:
    assert evaluate(parse_dependency(text), targets).state == verdict


def test_a_never_satisfiable_dependency_names_the_job_and_how_it_ended() -> None:
    verdict = evaluate(parse_dependency("afterok:12"), {"12": BAD})
    assert "job 12 ended FAILED (exit 1)" in verdict.detail


def test_singleton_waits_for_an_earlier_job_of_the_same_name() -> None:
    dep = parse_dependency("singleton")
    assert evaluate(dep, {}, "7").state == WAIT
    assert evaluate(dep, {}, None).state == MET


@pytest.mark.parametrize("text", ["afterok", "afterok:x", "afterok:1,afterany:2?after:3",
                                  "aftercorr:1", "before:1", "afterok:1+5"])
def test_bad_dependencies_are_refused(text: str) -> None:
    with pytest.raises(DependencyError):
        parse_dependency(text)


# ------------------------------------------------------------------ the coordinator


async def coordinator(store: Store, tmp_path: Path, gpus: int = 4,
                      **settings: object) -> tuple[Coordinator, InMemoryNodes]:
    nodes = InMemoryNodes()
    coord = Coordinator(store, Settings(tmp_path, **settings), nodes=nodes)  # type: ignore[arg-type]
    coord.epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=gpus), now=T0)
    return coord, nodes


async def submit_array(store: Store, text: str, **kw: object) -> str:
    template = job_from_spec(spec(**kw), "", T0)  # type: ignore[arg-type]
    (array_id,) = await store.submit_array(template, parse_array(text, 1000),
                                           uuid.uuid4().hex, 60, hold=False)
    return array_id


async def states(store: Store, ids: list[str]) -> dict[str, str]:
    return {job.id: job.state.value for job in await store.get_jobs(ids)}


async def test_an_array_is_one_record_and_its_tasks_run_at_most_throttle_at_once(
        store: Store, tmp_path: Path) -> None:
    coord, nodes = await coordinator(store, tmp_path, gpus=4)
    array_id = await submit_array(store, "0-99%2")
    assert await store.waiting_ids() == []  # one record, no job yet
    await coord.cycle(T0 + 1)
    array = await store.array(array_id)
    assert array is not None
    tasks = [f"{array_id}_{i}" for i in range(4)]
    assert await states(store, tasks) == {tasks[0]: "STARTING", tasks[1]: "STARTING"}
    task = await job_of(store, tasks[0])
    assert (task.array_job, task.array_task) == (array_id, 0)
    assert array.remaining == "2-99"  # the throttle leaves free GPUs idle: 2 at once
    await coord.cycle(T0 + 2)
    assert await states(store, tasks[2:]) == {}
    for t in tasks[:2]:  # one ends: the next task is made and starts
        nodes.report("n1", t, RunStatus(0, RUNNING, T0 + 2))
    nodes.report("n1", tasks[0], RunStatus(0, EXITED, T0 + 2, T0 + 3, 0))
    await coord.cycle(T0 + 4)
    await coord.cycle(T0 + 5)
    assert (await states(store, tasks))[tasks[2]] == "STARTING"
    assert "3" not in await states(store, [tasks[3]])


async def test_without_a_throttle_only_what_could_run_is_made(store: Store,
                                                               tmp_path: Path) -> None:
    coord, _ = await coordinator(store, tmp_path, gpus=4)
    array_id = await submit_array(store, "0-999", gpus=2)
    await coord.cycle(T0 + 1)
    array = await store.array(array_id)
    assert array is not None
    made = len(array.made)
    assert 2 <= made <= 4  # 2 run (4 GPUs / 2), and at most as many more wait as jobs
    assert len(array.remaining_indices) == 1000 - made


async def test_cancel_of_one_task_not_made_yet(
        store: Store, tmp_path: Path) -> None:
    coord, _ = await coordinator(store, tmp_path, gpus=1)
    array_id = await submit_array(store, "0-9%1")
    await coord.cycle(T0 + 1)
    array = await store.array(array_id)
    assert array is not None
    assert await store.cancel_unmade(array, 5, "alice", False, T0 + 2) == "OK"
    task = await job_of(store, f"{array_id}_5")
    assert task.state == JobState.CANCELLED
    array = await store.array(array_id)
    assert array is not None and 5 not in array.remaining_indices and array.cancelled == [5]
    summary = aggregate(array, await array_tasks(store, array))
    assert summary["state"] == "RUNNING"  # task 0 holds the GPU (STARTING)
    assert summary["array_states"] == {"STARTING": 1, "PENDING": 8, "CANCELLED": 1}


async def test_a_dependent_job_waits_with_a_reason_then_starts(store: Store,
                                                               tmp_path: Path) -> None:
    coord, nodes = await coordinator(store, tmp_path, gpus=4)
    first = await submit_one(store, now=T0)
    second = await submit_one(store, now=T0, dependency=f"afterok:{first}")
    await coord.cycle(T0 + 1)
    job = await job_of(store, second)
    assert (job.state, job.reason) == (JobState.PENDING, "Dependency")
    assert f"job {first} to succeed" in job.reasons[0]["detail"]
    nodes.report("n1", first, RunStatus(0, EXITED, T0 + 1, T0 + 2, 0))
    await coord.cycle(T0 + 3)
    await coord.cycle(T0 + 4)
    assert (await job_of(store, second)).state == JobState.STARTING


async def test_a_dependency_that_can_never_be_met_says_so_or_is_cancelled(
        store: Store, tmp_path: Path) -> None:
    for kill in (False, True):
        coord, nodes = await coordinator(store, tmp_path, gpus=4, kill_invalid_depend=kill)
        first = await submit_one(store, now=T0)
        second = await submit_one(store, now=T0, dependency=f"afterok:{first}")
        await coord.cycle(T0 + 1)
        nodes.report("n1", first, RunStatus(0, EXITED, T0 + 1, T0 + 2, 3))
        await coord.cycle(T0 + 3)
        await coord.cycle(T0 + 4)
        job = await job_of(store, second)
        if kill:
            assert (job.state, job.reason) == (JobState.CANCELLED, "DependencyNeverSatisfied")
        else:
            assert (job.state, job.reason) == (JobState.PENDING, "DependencyNeverSatisfied")
            assert f"job {first} ended FAILED (exit 3)" in job.reasons[0]["detail"]
        await store.r.flushdb()


async def test_afterok_on_an_array_waits_for_every_task(store: Store, tmp_path: Path) -> None:
    coord, nodes = await coordinator(store, tmp_path, gpus=4)
    array_id = await submit_array(store, "0-1")
    after = await submit_one(store, now=T0 + 1, dependency=f"afterok:{array_id}")
    await coord.cycle(T0 + 2)
    tasks = [f"{array_id}_0", f"{array_id}_1"]
    assert set((await states(store, tasks)).values()) == {"STARTING"}
    nodes.report("n1", tasks[0], RunStatus(0, EXITED, T0 + 2, T0 + 3, 0))
    await coord.cycle(T0 + 4)
    assert (await job_of(store, after)).reason == "Dependency"
    nodes.report("n1", tasks[1], RunStatus(0, EXITED, T0 + 2, T0 + 5, 0))
    await coord.cycle(T0 + 6)
    await coord.cycle(T0 + 7)
    assert (await job_of(store, after)).state == JobState.STARTING


async def test_a_person_changes_a_waiting_job_and_the_leader_sees_it(
        store: Store, tmp_path: Path) -> None:
    coord, _ = await coordinator(store, tmp_path, gpus=2)
    blocker = await submit_one(store, now=T0, gpus=2)
    job_id = await submit_one(store, now=T0 + 1, gpus=2)
    await coord.cycle(T0 + 2)
    job = await job_of(store, job_id)
    assert job.state == JobState.PENDING
    assert await store.update_job(job, "alice", False, {"gpus": "1", "name": "smaller"}) == "OK"
    assert await store.update_job(job, "bob", False, {"gpus": "1"}) == "FORBIDDEN"
    await coord.cycle(T0 + 3)
    job = await job_of(store, job_id)
    assert (job.gpus, job.name) == (1, "smaller")
    running = await job_of(store, blocker)
    assert await store.update_job(running, "alice", False, {"gpus": "1"}) == "NOT_WAITING"
    assert await store.requeue_job(blocker, "alice", False, T0 + 4) == "STOPPING"
    assert (await job_of(store, blocker)).stop_reason == "Requeued"


async def test_arrays_past_retention_are_forgotten_once_every_index_is_a_task(
        store: Store, tmp_path: Path) -> None:
    coord, _ = await coordinator(store, tmp_path, gpus=4)
    made = await submit_array(store, "0-1")
    waiting = await submit_array(store, "0-99%1")
    await coord.cycle(T0 + 1)
    assert await store.expire_arrays(T0 + 10, keep_s=60) == 0  # not old enough
    assert await store.expire_arrays(T0 + 100, keep_s=60) == 1
    assert await store.array(made) is None
    assert await store.array(waiting) is not None  # indices left: kept
