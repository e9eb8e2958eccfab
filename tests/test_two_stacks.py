"""Two labq installs on one host (tests beside a demo, two labs' stacks): the same node names,
the same job ids, at the same time. Each agent keeps its jobs under its own install's cgroup,
so ending a job of one never touches the other's job of the same id."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_stack import Stack

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="runs jobs as other users")]


@pytest.fixture(scope="module")
def stacks() -> Iterator[tuple[Stack, Stack]]:
    # The simulated GPUs of both are this host's sim-0 GPU 0: each stack sees the other's job
    # there as a process it did not start; "ignore" lets both run at once, as asked here.
    env = {"LABQ_FOREIGN_GPU_POLICY": "ignore", "LABQ_HEARTBEAT_INTERVAL": "1"}
    first = Stack("1x1", **env).start()
    try:
        second = Stack("1x1", **env).start()
    except BaseException:
        first.stop()
        raise
    yield first, second
    second.stop()
    first.stop()


def output(stack: Stack, job_id: str) -> str:
    return Path(stack.workdir, f"labq-{job_id}.out").read_text()


def run_both(stacks: tuple[Stack, Stack], commands: tuple[str, str]) -> tuple[str, str]:
    ids = tuple(s.submit("--", "sh", "-c", c) for s, c in zip(stacks, commands, strict=True))
    assert ids[0] == ids[1], ids  # the same job id in both installs
    for stack, job_id in zip(stacks, ids, strict=True):
        stack.wait_state(job_id, {"RUNNING"})
        stack.wait(lambda s=stack, j=job_id: "started" in output(s, j), 30, "the job's output")
    return ids[0], ids[1]


def test_a_job_ending_in_one_install_leaves_the_same_job_of_the_other_running(
        stacks: tuple[Stack, Stack]) -> None:
    first, second = stacks
    assert [line for line in first.output + second.output if "nodes   sim-0" in line]
    a, b = run_both(stacks, ("echo A started; sleep 6; echo A done",
                             "echo B started; sleep 1; echo B done"))
    assert second.wait_state(b, {"SUCCEEDED", "FAILED"}, 30)["state"] == "SUCCEEDED"
    assert first.job(a)["state"] == "RUNNING"  # the other install's job 1 went on
    assert first.wait_state(a, {"SUCCEEDED", "FAILED"}, 30)["state"] == "SUCCEEDED"
    assert output(first, a) == "A started\nA done\n"
    assert output(second, b) == "B started\nB done\n"


def test_cancelling_a_job_in_one_install_never_stops_the_others(
        stacks: tuple[Stack, Stack]) -> None:
    first, second = stacks
    a, b = run_both(stacks, ("echo A started; sleep 300",
                             "echo B started; sleep 6; echo B done"))
    first.labq("cancel", a)
    assert first.wait_state(a, {"CANCELLED", "FAILED"}, 30)["state"] == "CANCELLED"
    assert second.job(b)["state"] == "RUNNING"
    assert second.wait_state(b, {"SUCCEEDED", "FAILED"}, 30)["state"] == "SUCCEEDED"
    assert output(second, b) == "B started\nB done\n"
