"""The lifecycle is declared once (scheduler.model) and the store's Lua scripts keep to it.

Every state-changing script is run on a job in every state, against a real Valkey: the state
it leaves is the one it found or a move `TRANSITIONS` allows. And every result a script can
return is an `Outcome` the Python side knows.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from importlib import resources

import pytest
import redis.exceptions as redis_errors

from scheduler.model import (
    GPU_HOLDING_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    WAITING_STATES,
    Job,
    JobState,
    NodeState,
    ReasonCode,
    lua_lifecycle,
)
from scheduler.store import Outcome, Store
from scheduler.store.arrays import ARRAY_STATES
from tests.builders import T0, job_of, lead, report, submit_one

Op = Callable[[Store, int, Job], Awaitable[object]]

OPS: dict[str, Op] = {
    "start": lambda s, e, j: s.start(e, j, "n1", [1], 1.0, T0 + 1),
    "mark_running": lambda s, e, j: s.mark_running(e, j.id, T0 + 1),
    "finish": lambda s, e, j: s.finish(e, j, JobState.FAILED, 1, "NonZeroExitCode 1", T0 + 1),
    "requeue": lambda s, e, j: s.requeue(e, j, "NodeLost", T0 + 1),
    "cancel": lambda s, e, j: s.cancel(j.id, j.user, False, T0 + 1),
    "hold": lambda s, e, j: s.hold(j.id, j.user, False, release=False, now=T0 + 1),
    "release": lambda s, e, j: s.hold(j.id, j.user, False, release=True, now=T0 + 1),
    "time_limit": lambda s, e, j: s.request_stop(e, j.id, JobState.TIMEOUT, T0 + 1),
    "preempt": lambda s, e, j: s.request_stop(e, j.id, JobState.PREEMPTED, T0 + 1),
    "update": lambda s, e, j: s.update_job(j, j.user, False, {"time_limit_s": "60"}),
    "requeue_by_hand": lambda s, e, j: s.requeue_job(j.id, j.user, False, T0 + 1),
    "budget_hold": lambda s, e, j: s.set_reasons({j.id: [{"code": "BudgetExhausted",
                                                          "detail": "x"}]}, held=[j.id]),
}


async def job_in(store: Store, epoch: int, state: JobState) -> Job:
    """A job on node n1 in `state`, its record as the scripts would have left it."""
    job_id = await submit_one(store, now=T0)
    fields: dict[str, str] = {"state": state.value}
    if state in GPU_HOLDING_STATES:
        fields.update(node="n1", gpu_indices="[0]", started_at=str(T0), charged_until=str(T0))
        await store.r.hset(store.keys.node_alloc("n1"), "0", job_id)
        await store.r.zrem(store.keys.waiting, job_id)
        await store.r.sadd(store.keys.active, job_id)
    if state == JobState.PREEMPTED:
        fields["stop_request"] = "PREEMPTED"
    if state in TERMINAL_STATES:
        fields["ended_at"] = str(T0)
        await store.r.zrem(store.keys.waiting, job_id)
        await store.r.zadd(store.keys.done, {job_id: T0})
    await store.r.hset(store.keys.job(job_id), mapping=fields)
    return await job_of(store, job_id)


@pytest.mark.parametrize("state", list(JobState))
@pytest.mark.parametrize("op", list(OPS))
async def test_every_script_moves_a_job_only_as_the_lifecycle_allows(
        store: Store, state: JobState, op: str) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    job = await job_in(store, epoch, state)
    await OPS[op](store, epoch, job)
    after = (await job_of(store, job.id)).state
    assert after == state or after in TRANSITIONS[state], f"{op}: {state} -> {after}"


def test_the_lifecycle_is_whole() -> None:
    assert set(TRANSITIONS) == set(JobState)
    assert all(not TRANSITIONS[s] for s in TERMINAL_STATES)  # nothing leaves an end
    assert set(JobState) == WAITING_STATES | GPU_HOLDING_STATES | TERMINAL_STATES
    for state in JobState:  # the Python helpers answer from the same sets
        assert state.is_terminal() == (state in TERMINAL_STATES)
        assert state.holds_gpus() == (state in GPU_HOLDING_STATES)
        assert state.is_waiting() == (state in WAITING_STATES)


def test_the_scripts_get_the_lifecycle_from_the_model_and_return_known_outcomes() -> None:
    folder = resources.files("scheduler.store") / "lua"
    scripts = {f.name: f.read_text() for f in folder.iterdir() if f.name.endswith(".lua")}
    prelude = lua_lifecycle()
    for state in TERMINAL_STATES:
        assert f"{state.value} = true" in prelude.splitlines()[1]
    for name, text in scripts.items():
        # No script spells out a state set of its own: they use the generated helpers.
        assert not re.search(r"state\s*==\s*'SUCCEEDED'\s*or", text), name
        for literal in re.findall(r"return '([A-Z_]+)'", text):
            assert literal in Outcome.__members__, f"{name} returns {literal}: not an Outcome"


_DECLARED = {
    *(s.value for s in JobState), *(r.value for r in ReasonCode), *(n.value for n in NodeState),
    *ARRAY_STATES,
}


def test_no_script_spells_a_state_or_a_reason_code_that_python_declares() -> None:
    """States, node states, array states and labq's own reason codes reach the scripts from
    Python (STATE.x, REASON.x, NODE.x, ARRAY_STATE.x): a script that wrote one as a string
    literal could drift from the Python side. Outcomes (`return 'X'`) are checked above."""
    folder = resources.files("scheduler.store") / "lua"
    for script in folder.iterdir():
        if not script.name.endswith(".lua"):
            continue
        for number, line in enumerate(script.read_text().splitlines(), 1):
            code = line.split("--", 1)[0]
            code = re.sub(r"return '[A-Z_]+'", "", code)
            spelled = set(re.findall(r"'([A-Za-z_]+)'", code)) & _DECLARED
            assert not spelled, f"{script.name}:{number} spells {sorted(spelled)}: use the tables"


async def test_a_script_naming_an_undeclared_value_fails_loudly(store: Store) -> None:
    script = store.r.register_script(
        lua_lifecycle() + "return STATE.PENDING .. REASON.NodeLost .. STATE.BOGUS")
    with pytest.raises(redis_errors.ResponseError, match="STATE.BOGUS is not declared"):
        await script(keys=[], args=[])
    ok = store.r.register_script(lua_lifecycle() + "return STATE.HELD .. REASON.UserHold")
    assert await ok(keys=[], args=[]) == "HELDUserHold"
