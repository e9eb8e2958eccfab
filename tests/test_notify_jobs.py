"""Job notifications (--notify, Slurm's --mail-type) in the coordinator's watch step, against
the real store and a real local command: the admin's notify_command runs once per event the
owner asked for, with the job's facts (never its environment) in its own environment, and a
burst of events never runs more than MAX_RUNNING commands at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from scheduler.config import Settings
from scheduler.coordinator.core import Coordinator
from scheduler.coordinator.notify import MAX_RUNNING, Notifier, end_event
from scheduler.model import JobState, NotifyEvent
from scheduler.noderun import EXITED, RUNNING, RunStatus
from scheduler.store import Store
from tests.builders import T0, job_of, lead, report, started

FIELDS = ("EVENT", "USER", "JOB", "STATE", "REASON", "NAME", "ACCOUNT", "EXIT_CODE", "NODES",
          "RUN_S", "MESSAGE")
# One line per run: the LABQ_NOTIFY_* variables, and whether the job's secret leaked in.
COMMAND = ("printf '%s\\n' \"" + "|".join(f"${{LABQ_NOTIFY_{f}}}" for f in FIELDS)
           + "|${SECRET_TOKEN:-none}\" >> OUT")


async def watch_once(coord: Coordinator, epoch: int, now: float) -> None:
    await coord._watch(epoch, await coord.store.active_jobs(), now)
    await asyncio.gather(*coord.notifier.running)


def lines(out: Path) -> list[dict[str, str]]:
    if not out.exists():
        return []
    return [dict(zip((*FIELDS, "SECRET"), line.split("|"), strict=True))
            for line in out.read_text().splitlines()]


async def test_begin_and_a_failed_end_are_told_once_each_with_the_jobs_facts(
        store: Store, tmp_path: Path) -> None:
    out = tmp_path / "told"
    coord = Coordinator(store, Settings(tmp_path, notify_command=COMMAND.replace("OUT", str(out))))
    epoch = coord.epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await started(store, epoch, [1], run=False, notify="begin,end,fail",
                           name="train", env={"SECRET_TOKEN": "hunter2"})
    quiet = await started(store, epoch, [0], run=False)  # asked for nothing
    running = RunStatus(phase=RUNNING, started_at=T0 + 1)
    await store.report_runs("n1", {job_id: running, quiet: running})
    await watch_once(coord, epoch, T0 + 2)
    await watch_once(coord, epoch, T0 + 3)  # nothing new: nothing told again
    assert [(t["EVENT"], t["STATE"], t["NAME"], t["NODES"]) for t in lines(out)] == [
        ("begin", "RUNNING", "train", "n1")]
    ended = RunStatus(phase=EXITED, started_at=T0 + 1, ended_at=T0 + 61, exit_code=3)
    await store.report_runs("n1", {job_id: ended, quiet: ended})
    await watch_once(coord, epoch, T0 + 62)
    told = lines(out)
    assert len(told) == 2, told  # end and fail asked: the failure told once, as a failure
    assert {k: told[1][k] for k in ("EVENT", "USER", "JOB", "STATE", "REASON", "ACCOUNT",
                                    "EXIT_CODE", "RUN_S", "SECRET")} == {
        "EVENT": "fail", "USER": "alice", "JOB": job_id, "STATE": "FAILED",
        "REASON": "NonZeroExitCode 3", "ACCOUNT": "lab", "EXIT_CODE": "3", "RUN_S": "60",
        "SECRET": "none"}
    assert f"job {job_id} (train) ended FAILED" in told[1]["MESSAGE"]
    assert (await job_of(store, quiet)).state is JobState.FAILED


async def test_a_preempted_job_is_told_it_was_queued_again(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "told"
    coord = Coordinator(store, Settings(tmp_path, notify_command=COMMAND.replace("OUT", str(out))))
    epoch = coord.epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=1), now=T0)
    job_id = await started(store, epoch, [0], notify="requeue,end")
    assert await store.request_stop(epoch, job_id, JobState.PREEMPTED, T0 + 1) == "OK"
    stopped = RunStatus(phase=EXITED, started_at=T0, ended_at=T0 + 5, exit_code=143,
                        stopped=True)
    await store.report_runs("n1", {job_id: stopped})
    await watch_once(coord, epoch, T0 + 6)
    assert [(t["EVENT"], t["STATE"], t["REASON"]) for t in lines(out)] == [
        ("requeue", "PENDING", "Preempted")]
    assert (await job_of(store, job_id)).state is JobState.PENDING


def test_the_most_specific_asked_event_tells_an_end() -> None:
    assert end_event("end,fail,timeout", JobState.TIMEOUT) is NotifyEvent.TIMEOUT
    assert end_event("end", JobState.TIMEOUT) is NotifyEvent.END
    assert end_event("fail", JobState.SUCCEEDED) is None
    assert end_event("begin", JobState.FAILED) is None
    assert end_event("", JobState.FAILED) is None


async def test_a_burst_of_events_runs_at_most_max_running_commands_at_once(
        tmp_path: Path) -> None:
    live, seen = tmp_path / "live", tmp_path / "seen"
    live.mkdir()
    # each run marks itself live, notes how many are live, waits, and leaves
    command = (f'touch {live}/$LABQ_NOTIFY_JOB; ls {live} | wc -l >> {seen}; sleep 0.3; '
               f'rm {live}/$LABQ_NOTIFY_JOB')
    notifier = Notifier(command, timeout_s=10)
    for i in range(3 * MAX_RUNNING):
        notifier.send("end", "alice", str(i), "done")
    await asyncio.gather(*notifier.running)
    counts = [int(n) for n in seen.read_text().split()]
    assert len(counts) == 3 * MAX_RUNNING
    assert max(counts) <= MAX_RUNNING
