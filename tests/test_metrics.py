"""`/metrics` against the real store: values after real transitions through the store scripts,
parsed back with prometheus_client's own parser, checked against docs/metrics.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from scheduler.accounts.changes import account_changes
from scheduler.cluster.read import fairshare_usage
from scheduler.cluster.shares import share_inputs
from scheduler.cluster.views import node_view, pending_view
from scheduler.config import Settings
from scheduler.coordinator.core import Coordinator
from scheduler.metrics import render
from scheduler.metrics.families import EVICTION_REASONS
from scheduler.model import GpuInfo, GpuProcess, JobState, NodeReport
from scheduler.policy import Snapshot
from scheduler.policy.fairengine import rank
from scheduler.store import Store
from tests.builders import A100, T0, job_of, lead, report, start_job, started, submit_one

CONTRACT = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


class Samples:
    """An exposition parsed by prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def family(self, name: str) -> Any:
        """By exposed name: counters are named without `_total` by the parser."""
        return self.families.get(name) or self.families.get(name.removesuffix("_total"))

    def samples(self) -> Iterator[Sample]:
        for family in self.families.values():
            yield from family.samples

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one series `name{labels}` (exactly those labels), or None."""
        found = [s.value for s in self.samples() if s.name == name and s.labels == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None


def parse(text: str) -> Samples:
    return Samples(text)


def coordinator(store: Store, tmp_path: Path, **settings: Any) -> Coordinator:
    """A real coordinator object (it never reaches Ray here) as the metrics' source."""
    return Coordinator(store, Settings(tmp_path, **settings))


async def scrape(store: Store, source: Coordinator, now: float) -> Samples:
    return parse((await render(store, source, now=now)).decode())


async def admin(store: Store, *bodies: dict[str, Any]) -> None:
    for body in bodies:
        state = await store.accounts()
        assert await store.put_accounts(state.version, account_changes(state, body, T0))


# ------------------------------------------------------------------------------ the contract


def contract() -> dict[str, tuple[str, list[str]]]:
    """name -> (type, labels) from the coordinator table of docs/metrics.md."""
    table = CONTRACT.read_text().split("## Coordinator", 1)[1].split("\n## ", 1)[0]
    out = {}
    for match in re.finditer(r"^\| `(labq_\w+)` \| (\w+) \|([^|]*)\|", table, re.M):
        labels = [x.strip() for x in match.group(3).split(",") if x.strip()]
        out[match.group(1)] = (match.group(2), labels)
    return out


async def test_every_metric_of_the_contract_is_served_with_its_type_and_labels(
        store: Store, tmp_path: Path) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    await admin(store, {"target": "account", "op": "add", "name": "lab", "parent": "root"},
                {"target": "budget", "op": "set", "scope": "account", "name": "lab",
                 "limit": 10})
    running = await started(store, epoch, [0])
    await store.charge(epoch, [running], T0 + 60)
    await store.set_idle(epoch, {running: ({0: T0}, False)})
    victim = await started(store, epoch, [1], qos="scavenger")
    await store.request_stop(epoch, victim, JobState.PREEMPTED, T0 + 30)
    await store.request_stop(epoch, running, JobState.TIMEOUT, T0 + 50)
    await submit_one(store, now=T0)
    source = coordinator(store, tmp_path)
    source.cycle_durations.observe(0.01)
    got = await scrape(store, source, T0 + 60)
    want = contract()
    assert len(want) >= 30
    for name, (kind, labels) in want.items():
        family = got.family(name)
        assert family is not None, f"{name} is not served"
        assert family.type == kind, f"{name} is a {family.type}, the contract says {kind}"
        assert family.samples, f"{name} has no series"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(labels), (name, sample.labels)


# ------------------------------------------------------------------------------ GPUs and nodes


async def test_gpu_series_as_the_agent_reported_them(store: Store, tmp_path: Path) -> None:
    gpus = [GpuInfo(0, "GPU-0", A100, 80 << 30, 1 << 30, 0.25, 312.5, 61.0, "OK"),
            GpuInfo(1, "GPU-1", A100, 80 << 30, None, None, None, None, "LOST")]
    await store.heartbeat(NodeReport("n1", gpus), now=T0)
    await store.heartbeat(report("n2", gpus=1), now=T0 - 100)
    epoch = await lead(store)
    assert await store.node_down(epoch, "n2", T0 - 50) == "DOWN"
    await started(store, epoch, [1])
    got = await scrape(store, coordinator(store, tmp_path), T0 + 7)
    g0 = {"node": "n1", "gpu": "0", "model": A100}
    assert got.value("labq_gpu_power_watts", **g0) == 312.5
    assert got.value("labq_gpu_temperature_celsius", **g0) == 61.0
    assert got.value("labq_gpu_memory_total_bytes", **g0) == 80 << 30
    assert got.value("labq_gpu_memory_used_bytes", **g0) == 1 << 30
    assert got.value("labq_gpu_utilization_ratio", **g0) == 0.25
    assert got.value("labq_gpu_healthy", **g0) == 1.0
    g1 = {**g0, "gpu": "1"}
    assert got.value("labq_gpu_healthy", **g1) == 0.0
    assert got.value("labq_gpu_power_watts", **g1) is None  # not read: no series, not a 0
    assert got.value("labq_gpus_capacity", node="n1", model=A100) == 2
    assert got.value("labq_gpus_allocated", node="n1", model=A100) == 1
    assert got.value("labq_gpus_idle", node="n1", model=A100) == 1
    assert got.value("labq_node_up", node="n1") == 1.0
    assert got.value("labq_node_up", node="n2") == 0.0
    assert got.value("labq_node_heartbeat_age_seconds", node="n2") == 107.0
    # A DOWN node's GPUs are not free for jobs, and its last report is not current.
    assert got.value("labq_gpus_idle", node="n2", model=A100) == 0
    assert got.value("labq_gpus_capacity", node="n2", model=A100) == 1
    assert got.value("labq_gpu_utilization_ratio", node="n2", gpu="0", model=A100) is None


async def test_an_unhealthy_gpu_is_neither_free_nor_given_to_a_job(store: Store,
                                                                    tmp_path: Path) -> None:
    gpus = [GpuInfo(0, "GPU-0", A100, 80 << 30, 0, 0.0, 60.0, 40.0, "OK"),
            GpuInfo(1, "GPU-1", A100, 80 << 30, None, None, None, None, "ECC_ERRORS")]
    await store.heartbeat(NodeReport("n1", gpus), now=T0)
    [node] = await store.nodes()
    assert node_view(node).free == (0,)
    got = await scrape(store, coordinator(store, tmp_path), T0 + 1)
    assert got.value("labq_gpus_idle", node="n1", model=A100) == 1
    gpus[1].health = "OK"  # the agent reports it healthy again: it is free again
    await store.heartbeat(NodeReport("n1", gpus), now=T0 + 2)
    [node] = await store.nodes()
    assert node_view(node).free == (0, 1)


async def test_allocated_idle_gpus_from_the_stored_idle_state(store: Store,
                                                                tmp_path: Path) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    job_id = await started(store, epoch, [0, 1, 2], user="ann", account="lab")
    assert await store.set_idle(epoch, {job_id: ({0: T0 + 10, 1: T0 + 1500}, True)}) == "1"
    source = coordinator(store, tmp_path, idle_gpu_after_s=600.0)
    got = await scrape(store, source, T0 + 1000)
    idle = {"node": "n1", "model": A100, "account": "lab", "user": "ann"}
    assert got.value("labq_gpu_allocated_idle_seconds", gpu="0", **idle) == 990.0
    assert got.value("labq_gpu_allocated_idle_seconds", gpu="1", **idle) == 0.0  # not yet
    assert got.value("labq_gpu_allocated_idle_seconds", gpu="2", **idle) == 0.0  # busy
    assert got.value("labq_gpu_allocated_idle_seconds", gpu="3", **idle) is None  # free GPU
    assert got.value("labq_gpus_allocated_idle", node="n1", model=A100) == 1
    off = coordinator(store, tmp_path, idle_gpu_policy="off")
    assert (await scrape(store, off, T0 + 1000)).value(
        "labq_gpus_allocated_idle", node="n1", model=A100) == 0


# ------------------------------------------------------------------------------ jobs and counters


async def test_admissions_waits_and_preemptions_survive_a_new_coordinator(
        store: Store, valkey_url: str, tmp_path: Path) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    job_id = await submit_one(store, now=T0, account="lab", qos="scavenger")
    assert await start_job(store, epoch, job_id, "n1", [0], 1.0, T0 + 40) == "OK"  # waited 40 s
    assert await store.mark_running(epoch, job_id, T0 + 41) == "OK"
    assert await store.request_stop(epoch, job_id, JobState.PREEMPTED, T0 + 50) == "OK"
    assert await store.request_stop(epoch, job_id, JobState.PREEMPTED, T0 + 51) != "OK"
    assert await store.requeue(epoch, await job_of(store, job_id), "Preempted", T0 + 100) == "OK"
    # 3 s since the requeue:
    assert await start_job(store, epoch, job_id, "n1", [1], 1.0, T0 + 103) == "OK"

    # Another coordinator process, later, under a new leader: the same counts.
    other = Store.from_url(valkey_url, store.keys.prefix)
    try:
        await store.r.delete(store.keys.leader)
        assert await lead(other, "coord-2") > epoch
        got = await scrape(other, coordinator(other, tmp_path), T0 + 200)
    finally:
        await other.close()
    assert got.value("labq_admissions_total", account="lab") == 2
    assert got.value("labq_preemptions_total", account="lab") == 1
    wait = {"account": "lab"}
    assert got.value("labq_admission_wait_seconds_count", **wait) == 2
    assert got.value("labq_admission_wait_seconds_sum", **wait) == 43
    buckets = {le: got.value("labq_admission_wait_seconds_bucket", le=le, **wait)
               for le in ("1.0", "5.0", "30.0", "60.0", "+Inf")}
    assert buckets == {"1.0": 0, "5.0": 1, "30.0": 1, "60.0": 2, "+Inf": 2}


async def test_evictions_by_reason_counted_once(store: Store, tmp_path: Path) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    timed = await started(store, epoch, [0], account="lab")
    assert await store.request_stop(epoch, timed, JobState.TIMEOUT, T0 + 5) == "OK"
    assert await store.finish(epoch, await job_of(store, timed), JobState.TIMEOUT, None,
                              "TimeLimit", T0 + 9) == "OK"
    idle = await started(store, epoch, [1], account="lab")
    assert await store.request_stop(epoch, idle, JobState.CANCELLED, T0 + 5, "IdleGpu") == "OK"
    # The Ray job was gone: the requeue path ends it as asked, with the stop's reason.
    assert await store.requeue(epoch, await job_of(store, idle), "RayLost", T0 + 6) == "ENDED"
    ended = await job_of(store, idle)
    assert (ended.state, ended.reason) == (JobState.CANCELLED, "IdleGpu")
    lost = await started(store, epoch, [2], account="lab")
    requeued = await started(store, epoch, [3], account="other", requeue=True)
    assert await store.finish(epoch, await job_of(store, lost), JobState.FAILED, None,
                              "NodeLost", T0 + 20) == "OK"
    assert await store.requeue(epoch, await job_of(store, requeued), "NodeLost", T0 + 20) == "OK"
    got = await scrape(store, coordinator(store, tmp_path), T0 + 30)
    assert got.value("labq_evictions_total", account="lab", reason="TimeLimit") == 1
    assert got.value("labq_evictions_total", account="lab", reason="IdleGpu") == 1
    assert got.value("labq_evictions_total", account="lab", reason="NodeLost") == 1
    assert got.value("labq_evictions_total", account="other", reason="NodeLost") == 1
    assert got.value("labq_preemptions_total", account="lab") == 0  # known: it starts at 0


async def test_every_known_account_and_user_starts_at_0(store: Store, tmp_path: Path) -> None:
    # A new cluster: a tree, its users, one job waiting from a user nobody configured, nothing
    # run yet. Dashboards must show 0 for each of them, not "No data".
    await admin(store,
                {"target": "account", "op": "add", "name": "lab", "parent": "root"},
                {"target": "account", "op": "add", "name": "vision", "parent": "lab",
                 "shares": 3},
                {"target": "account", "op": "add", "name": "nlp", "parent": "lab"},
                {"target": "user", "op": "add", "name": "alice", "account": "vision"},
                {"target": "user", "op": "add", "name": "carol", "account": "nlp"})
    await submit_one(store, now=T0, account="guests", user="dan")
    got = await scrape(store, coordinator(store, tmp_path), T0 + 5)

    accounts = {"lab", "vision", "nlp", "default", "guests"}  # default: the unconfigured's
    for account in accounts:
        assert got.value("labq_admissions_total", account=account) == 0, account
        assert got.value("labq_preemptions_total", account=account) == 0, account
        for reason in EVICTION_REASONS:
            assert got.value("labq_evictions_total", account=account, reason=reason) == 0
        assert got.value("labq_account_billed_units_total", account=account) == 0
        assert got.value("labq_account_gpu_seconds_total", account=account) == 0
        assert got.value("labq_admission_wait_seconds_count", account=account) == 0
        assert got.value("labq_admission_wait_seconds_sum", account=account) == 0
        assert got.value("labq_admission_wait_seconds_bucket", account=account, le="+Inf") == 0
        assert got.value("labq_admission_wait_seconds_bucket", account=account, le="60.0") == 0
    for user in ("alice", "carol", "dan"):
        assert got.value("labq_user_billed_units_total", user=user) == 0
        assert got.value("labq_user_gpu_seconds_total", user=user) == 0
    assert got.value("labq_pending_jobs", account="vision", user="alice") == 0
    assert got.value("labq_pending_jobs", account="nlp", user="carol") == 0
    assert got.value("labq_pending_jobs", account="guests", user="dan") == 1
    # Only what is known: no account for the tree's root, no user in an account not theirs.
    served = {s.labels.get("account") for s in got.family("labq_admissions_total").samples}
    assert served == accounts
    assert got.value("labq_pending_jobs", account="nlp", user="alice") is None


async def test_a_count_replaces_its_0_and_keeps_the_others(store: Store, tmp_path: Path) -> None:
    await admin(store, {"target": "account", "op": "add", "name": "lab", "parent": "root"},
                {"target": "account", "op": "add", "name": "phys", "parent": "root"})
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=1), now=T0)
    job_id = await started(store, epoch, [0], account="lab")
    assert await store.request_stop(epoch, job_id, JobState.TIMEOUT, T0 + 5) == "OK"
    got = await scrape(store, coordinator(store, tmp_path), T0 + 10)
    assert got.value("labq_evictions_total", account="lab", reason="TimeLimit") == 1
    assert got.value("labq_evictions_total", account="lab", reason="IdleGpu") == 0
    assert got.value("labq_evictions_total", account="phys", reason="TimeLimit") == 0
    assert got.value("labq_admissions_total", account="lab") == 1
    assert got.value("labq_admissions_total", account="phys") == 0
    assert got.value("labq_admission_wait_seconds_count", account="lab") == 1


def test_the_eviction_reasons_served_from_0_are_the_documented_ones() -> None:
    row = next(line for line in CONTRACT.read_text().splitlines()
               if line.startswith("| `labq_evictions_total`"))
    documented = re.search(r"`reason` ∈ ([A-Za-z, ]+)", row)
    assert documented is not None, row
    assert sorted(r.strip() for r in documented.group(1).split(",")) == sorted(EVICTION_REASONS)


async def test_jobs_by_state_and_the_oldest_wait(store: Store, tmp_path: Path) -> None:
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=1), now=T0)
    await started(store, epoch, [0], account="lab")
    await submit_one(store, now=T0 + 10, account="lab", user="ann")
    await submit_one(store, now=T0 + 50, account="lab", user="bob")
    held = await submit_one(store, now=T0 + 70, account="phys", user="cy")
    assert await store.hold(held, "cy", False, release=False) == "OK"
    got = await scrape(store, coordinator(store, tmp_path), T0 + 100)
    assert got.value("labq_jobs", state="RUNNING") == 1
    assert got.value("labq_jobs", state="PENDING") == 2
    assert got.value("labq_jobs", state="HELD") == 1
    assert got.value("labq_jobs", state="PREEMPTED") == 0
    assert got.value("labq_jobs", state="SUCCEEDED") is None  # terminal states are not shown
    assert got.value("labq_pending_jobs", account="lab", user="ann") == 1
    assert got.value("labq_pending_jobs", account="phys", user="cy") == 1
    assert got.value("labq_pending_oldest_seconds", account="lab") == 90
    # A job a person holds is not stuck in the queue (0: none waits); once released it waits
    # from then.
    assert got.value("labq_pending_oldest_seconds", account="phys") == 0
    assert await store.hold(held, "cy", False, release=True, now=T0 + 400) == "OK"
    got = await scrape(store, coordinator(store, tmp_path), T0 + 410)
    assert got.value("labq_pending_oldest_seconds", account="phys") == 10
    assert got.value("labq_pending_oldest_seconds", account="lab") == 400


# ------------------------------------------------------------------------------ shares, budgets


async def test_fairshare_factors_are_the_ones_priority_uses(store: Store, tmp_path: Path) -> None:
    await admin(store,
                {"target": "account", "op": "add", "name": "lab", "parent": "root", "shares": 1},
                {"target": "user", "op": "add", "name": "ann", "account": "lab"},
                {"target": "user", "op": "add", "name": "bob", "account": "lab"},
                {"target": "budget", "op": "set", "scope": "account", "name": "lab",
                 "limit": 2},
                {"target": "budget", "op": "set", "scope": "user", "name": "ann", "limit": 1})
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    heavy = await started(store, epoch, [0, 1], user="ann", account="lab", weight=3.0)
    await store.charge(epoch, [heavy], T0 + 600)  # 2 GPUs x 600 s x 3 = 3600 billed
    waiting = await submit_one(store, now=T0 + 600, user="bob", account="lab")
    settings = Settings(tmp_path)
    got = await scrape(store, coordinator(store, tmp_path), T0 + 600)

    # The table the coordinator's priority ordering computes (policy.fairengine.Ranking.table).
    pending = await store.waiting_jobs()
    inputs = share_inputs(await store.accounts(),
                          await fairshare_usage(store, settings, T0 + 600), settings,
                          {(j.account, j.user) for j in pending})
    table = rank(Snapshot((), tuple(pending_view(j) for j in pending), T0 + 600,
                          shares=inputs)).table
    assert table is not None and waiting in {j.id for j in pending}
    factors = {u: got.value("labq_fairshare_factor", account="lab", user=u) for u in ("ann", "bob")}
    assert factors == {u: pytest.approx(table.factor("lab", u)) for u in ("ann", "bob")}
    assert factors["bob"] == 1.0 and factors["ann"] == 0.5  # Fair Tree: rank / users
    assert got.value("labq_effective_usage_ratio", account="lab", user="ann") == pytest.approx(1)
    assert got.value("labq_effective_usage_ratio", account="lab", user="bob") == 0

    assert got.value("labq_budget_spent_billed_seconds", account="lab", user="",
                     period="month") == pytest.approx(3600)
    assert got.value("labq_budget_limit_billed_seconds", account="lab", user="",
                     period="month") == 7200
    assert got.value("labq_budget_spent_billed_seconds", account="", user="ann",
                     period="month") == pytest.approx(3600)
    assert got.value("labq_budget_limit_billed_seconds", account="", user="ann",
                     period="month") == 3600
    assert got.value("labq_user_billed_units_total", user="ann") == pytest.approx(3600)
    assert got.value("labq_user_gpu_seconds_total", user="ann") == pytest.approx(1200)
    assert got.value("labq_account_billed_units_total", account="lab") == pytest.approx(3600)


# ------------------------------------------------------------------------------ this coordinator


async def test_cycle_histogram_and_leadership(store: Store, tmp_path: Path) -> None:
    source = coordinator(store, tmp_path)
    for seconds in (0.003, 0.02, 0.02, 0.3, 7.0):
        source.cycle_durations.observe(seconds)
    source.last_cycle_s = 7.0
    got = await scrape(store, source, T0)
    bucket = "labq_scheduling_cycle_duration_seconds_bucket"
    assert [got.value(bucket, le=le) for le in ("0.005", "0.025", "0.5", "5.0", "+Inf")] == [
        1, 3, 4, 4, 5]
    assert got.value("labq_scheduling_cycle_duration_seconds_sum") == pytest.approx(7.343)
    assert got.value("labq_scheduling_cycle_last_seconds") == 7.0
    assert got.value("labq_coordinator_leader") == 0.0
    source.epoch = 3
    assert (await scrape(store, source, T0)).value("labq_coordinator_leader") == 1.0


# ------------------------------------------------------------------------------ label hygiene


async def test_no_label_value_is_a_job_id_or_a_pid(store: Store, tmp_path: Path) -> None:
    await store.r.set(store.keys.ids, 70_000)  # job ids unlike any GPU index or count
    epoch = await lead(store)
    procs = [GpuProcess(pid=43210 + i, used_memory_bytes=1, name="python", labq_job=None)
             for i in range(2)]
    gpus = [GpuInfo(i, f"GPU-{i}", A100, 1 << 30, 1, 0.0, 50.0, 30.0, "OK", procs)
            for i in range(2)]
    await store.heartbeat(NodeReport("n1", gpus, hostname="host-a"), now=T0)
    ids = [await started(store, epoch, [0], name="secret-name"),
           await submit_one(store, now=T0, name="secret-name")]
    idle = await started(store, epoch, [1])
    await store.set_idle(epoch, {idle: ({1: T0 - 5000}, True)})
    await store.request_stop(epoch, idle, JobState.CANCELLED, T0, "IdleGpu")
    text = (await render(store, coordinator(store, tmp_path), now=T0)).decode()
    values = {v for sample in parse(text).samples() for v in sample.labels.values()}
    forbidden = {*ids, idle, *(str(p.pid) for p in procs), "secret-name", "python", "train.py"}
    assert values and not values & forbidden
    allowed_keys = {"node", "model", "gpu", "account", "user", "state", "reason", "period", "le",
                    "drained_by", "version", "python"}
    assert {k for s in parse(text).samples() for k in s.labels} <= allowed_keys


async def test_exposition_passes_promtool(store: Store, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt install prometheus)")
    await admin(store, {"target": "account", "op": "add", "name": "lab", "parent": "root"},
                {"target": "account", "op": "add", "name": "quiet", "parent": "lab"},
                {"target": "user", "op": "add", "name": "ann", "account": "quiet"})
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=2), now=T0)
    await started(store, epoch, [0])
    text = await render(store, coordinator(store, tmp_path), now=T0 + 5)
    assert b'labq_admissions_total{account="quiet"} 0.0' in text  # the 0 series pass too
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            timeout=30)
    problems = set((result.stdout + result.stderr).decode().strip().splitlines())
    assert result.returncode == 0, problems
    assert problems == set(), problems


async def test_fairshare_factors_under_fair_now_are_its_past_part(store: Store,
                                                                  tmp_path: Path) -> None:
    # fair_now ranks the past by Fair Tree: /metrics shows that table (it once asked the
    # fair-share code for a "fair_now" table, which does not exist, and failed).
    await admin(store,
                {"target": "account", "op": "add", "name": "lab", "parent": "root", "shares": 1},
                {"target": "user", "op": "add", "name": "ann", "account": "lab"},
                {"target": "user", "op": "add", "name": "bob", "account": "lab"})
    epoch = await lead(store)
    await store.heartbeat(report("n1", gpus=4), now=T0)
    heavy = await started(store, epoch, [0, 1], user="ann", account="lab")
    await store.charge(epoch, [heavy], T0 + 600)
    await submit_one(store, now=T0 + 600, user="bob", account="lab")
    got = await scrape(store, coordinator(store, tmp_path, fairshare_algorithm="fair_now"),
                       T0 + 600)
    factors = {u: got.value("labq_fairshare_factor", account="lab", user=u) for u in ("ann", "bob")}
    assert factors == {"bob": 1.0, "ann": 0.5}  # Fair Tree on the past: rank / users

