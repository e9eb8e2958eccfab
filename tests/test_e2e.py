"""End to end: a real `labq up` (embedded Valkey, coordinator, one agent per simulated GPU node
that runs the jobs as their users), driven through the CLI as a user types it."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.client import Client, ClientError
from tests.builders import processes
from tests.e2e_stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack("2x2:A100-80GB", LABQ_NODE_TIMEOUT="5", LABQ_HEARTBEAT_INTERVAL="1").start()
    yield s
    s.stop()


def all_jobs(stack: Stack) -> list[dict[str, Any]]:
    return list(stack.labq_json("queue", "--all", "--done"))


def test_job_runs_as_its_submitter_on_exactly_its_gpus(stack: Stack) -> None:
    alice = pwd.getpwnam("alice")
    probe = ("echo CVD=$CUDA_VISIBLE_DEVICES ORDER=$CUDA_DEVICE_ORDER NODE=$LABQ_NODE "
             "JOB=$LABQ_JOB_ID; echo ID=$(id -u):$(id -g):$(id -G); "
             "echo WHO=$USER:$LOGNAME:$HOME:$SHELL; echo PWD=$(pwd); "
             "env | grep -ci -e redis -e valkey -e password -e secret | sed 's/^/SECRETS=/'; "
             f"{sys.executable} -m scheduler.cli whoami")
    job_id = stack.submit("--as", "alice", "--gpus", "2", "--name", "pinned", "--", probe)
    job = stack.wait_state(job_id, {"SUCCEEDED", "FAILED"})
    assert job["state"] == "SUCCEEDED" and job["exit_code"] == 0, job
    assert len(job["gpu_indices"]) == 2 and job["node"] in ("sim-0", "sim-1")
    assert job["started_at"] and job["ended_at"] >= job["started_at"] >= job["submitted_at"]
    log = stack.labq("logs", job_id, as_root=True).stdout
    cvd = ",".join(str(i) for i in job["gpu_indices"])
    assert f"CVD={cvd} ORDER=PCI_BUS_ID NODE={job['node']} JOB={job_id}" in log
    groups = " ".join(str(g) for g in os.getgrouplist("alice", alice.pw_gid))
    assert f"ID={alice.pw_uid}:{alice.pw_gid}:{groups}" in log
    assert f"WHO=alice:alice:{alice.pw_dir}:{alice.pw_shell}" in log
    assert f"PWD={stack.workdir}" in log
    assert "SECRETS=0" in log  # nothing of the store in the job's environment
    assert f"alice (uid {alice.pw_uid})\n" in log  # labq in a job: that user, not an admin
    # The output is alice's file, private to her.
    out = stack.workdir / f"labq-{job_id}.out"
    info = out.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (alice.pw_uid, 0o600)


def test_concurrent_jobs_never_share_a_gpu_and_ray_gets_only_what_can_start(stack: Stack) -> None:
    ids = [stack.submit("--time", "2m", "--", "sh", "-c", "echo CVD=$CUDA_VISIBLE_DEVICES; sleep 8")
           for _ in range(4)]
    waiting = stack.submit("--", "sleep", "1")
    jobs = [stack.wait_state(j, {"RUNNING"}) for j in ids]
    slots = {(j["node"], i) for j in jobs for i in j["gpu_indices"]}
    assert len(slots) == 4  # 4 one-GPU jobs on 2x2 GPUs: every GPU used exactly once
    pending = stack.job(waiting)
    assert pending["state"] == "PENDING"
    assert pending["reason"] == "Resources"
    assert any("GPUs" in r["detail"] for r in pending["reasons"])
    for job_id, job in zip(ids, jobs, strict=True):
        stack.wait_state(job_id, {"SUCCEEDED"})
        assert f"CVD={job['gpu_indices'][0]}" in stack.labq("logs", job_id).stdout
    assert stack.wait_state(waiting, {"SUCCEEDED"})["exit_code"] == 0


def test_time_limit_stops_the_job_as_timeout(stack: Stack) -> None:
    job_id = stack.submit("--time", "3s", "--", "sleep", "120")
    job = stack.wait_state(job_id, {"TIMEOUT", "FAILED", "SUCCEEDED", "CANCELLED"}, timeout=40)
    assert job["state"] == "TIMEOUT"
    assert job["ended_at"] - job["started_at"] < 20
    assert stack.labq_json("nodes")  # GPUs were freed: nothing still held by the job
    held = [n["allocations"] for n in stack.labq_json("nodes")]
    assert all(job_id not in a.values() for a in held)


def test_failing_command_ends_failed_with_its_exit_code(stack: Stack) -> None:
    job_id = stack.submit("--", "sh", "-c", "echo about to fail; exit 3")
    job = stack.wait_state(job_id, {"FAILED", "SUCCEEDED"})
    assert job["state"] == "FAILED" and job["exit_code"] == 3
    assert "about to fail" in stack.labq("logs", job_id).stdout


def test_cancel_pending_and_running(stack: Stack) -> None:
    running = stack.submit("--gpus", "2", "--", "sleep", "300")
    stack.wait_state(running, {"RUNNING"})
    other = stack.submit("--gpus", "2", "--", "sleep", "300")
    stack.wait_state(other, {"RUNNING"})
    pending = stack.submit("--gpus", "2", "--", "sleep", "300")
    assert stack.job(pending)["state"] == "PENDING"
    assert "cancelled" in stack.labq("cancel", pending).stdout
    assert stack.job(pending)["state"] == "CANCELLED"
    out = stack.labq("cancel", running, other).stdout
    assert out.count("cancelled") == 2
    for job_id in (running, other):
        job = stack.job(job_id)
        assert job["state"] == "CANCELLED" and job["ended_at"]
    assert "already ended" in stack.labq("cancel", running).stdout


def test_output_goes_where_asked_and_a_large_output_is_read_from_its_end(stack: Stack) -> None:
    (stack.workdir / "out").mkdir(mode=0o1777, exist_ok=True)
    os.chmod(stack.workdir / "out", 0o1777)
    job_id = stack.submit("--output", "out/%j-big.log", "--",
                          "head -c 3000000 /dev/zero | tr '\\0' x && echo && echo the-end")
    assert stack.wait_state(job_id, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    path = stack.workdir / "out" / f"{job_id}-big.log"
    assert path.stat().st_size > 3_000_000
    tail = stack.labq("logs", "--bytes", "100", job_id).stdout
    assert tail.endswith("the-end\n") and len(tail) <= 100
    assert len(stack.labq("logs", job_id).stdout) == 1 << 20  # the last MiB by default
    # Another user cannot read it, even through labq.
    refused = stack.labq("logs", job_id, check=False, user="bob")
    assert refused.returncode != 0 and "belongs to labq-e2e" in refused.stderr


def test_a_job_that_double_forks_leaves_nothing_behind(stack: Stack) -> None:
    marker = f"{os.getpid() % 1000}.{int(time.time()) % 1000}"
    job_id = stack.submit("--", f"(setsid nohup sleep {marker} >/dev/null 2>&1 &); "
                          f"setsid sleep {marker} & echo forked")
    assert stack.wait_state(job_id, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    assert stack.wait(lambda: not processes(f"sleep {marker}"), timeout=10,
                      what="the job's orphans to be gone")


def test_logs_follow_streams_until_the_end(stack: Stack) -> None:
    job_id = stack.submit("--", "sh", "-c", "echo first; sleep 3; echo second")
    out = stack.labq("logs", "--follow", job_id).stdout
    assert "first" in out and "second" in out
    assert stack.job(job_id)["state"] == "SUCCEEDED"


@pytest.mark.parametrize(("args", "message"), [
    (["--gpus", "0", "--", "true"], "at least 1 GPU"),
    (["--gpus", "-2", "--", "true"], "at least 1 GPU"),
    (["--gpus", "3", "--", "true"], "largest node has 2 GPUs"),
    (["--gpu-type", "H100", "--", "true"], "unknown --gpu-type 'H100'"),
    (["--time", "soon", "--", "true"], "cannot read time limit 'soon'"),
    (["--"], "empty command"),
    (["--qos", "vip", "--", "true"], "unknown --qos"),
    (["--env", "NOEQUALS", "--", "true"], "NAME=value"),
])
def test_bad_submit_is_refused_with_one_clear_line_and_nothing_written(
    stack: Stack, args: list[str], message: str
) -> None:
    before = len(all_jobs(stack))
    result = stack.labq("submit", *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert len(all_jobs(stack)) == before


@pytest.mark.parametrize("command", [["show", "999999"], ["cancel", "999999"], ["logs", "999999"]])
def test_unknown_job_id_is_a_clear_error(stack: Stack, command: list[str]) -> None:
    result = stack.labq(*command, check=False)
    assert result.returncode != 0
    assert "no job 999999" in result.stderr


def _as_nobody(socket_path: str, method: str, path: str, body: Any = None) -> Any:
    """Call the API from a forked process running as uid `nobody` (the kernel says who)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                result: Any = {"ok": Client(socket_path).request(method, path, body, retries=0)}
            except ClientError as exc:
                result = {"error": str(exc)}
            os.write(write_fd, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as a second user")
def test_identity_comes_from_the_socket_and_users_cancel_only_their_own(stack: Stack) -> None:
    socket_path = str(stack.home / "labq.sock")
    assert _as_nobody(socket_path, "GET", "/v1/whoami")["ok"] == {
        "user": "nobody", "uid": 65534, "admin": False}
    alice = stack.submit("--as", "alice", "--gpus", "2", "--", "sleep", "1")
    assert stack.job(alice)["user"] == "alice"
    refused = _as_nobody(socket_path, "POST", f"/v1/jobs/{alice}/cancel", {})
    assert "belongs to alice" in refused["error"]
    assert "only its owner and admins" in _as_nobody(socket_path, "GET",
                                                     f"/v1/jobs/{alice}/logs")["error"]
    assert "only your own" in _as_nobody(socket_path, "POST", f"/v1/jobs/{alice}/hold",
                                         {})["error"]
    assert stack.job(alice)["state"] != "CANCELLED"
    claimed = _as_nobody(socket_path, "POST", "/v1/jobs",
                         {"command": ["true"], "as_user": "alice", "workdir": "/"})
    assert "only root acts for another user" in claimed["error"]
    mine = _as_nobody(socket_path, "POST", "/v1/jobs",
                      {"command": ["sleep", "30"], "workdir": str(stack.workdir),
                       "token": "nobody-1"})
    job_id = mine["ok"]["ids"][0]
    assert stack.job(job_id)["user"] == "nobody"
    assert _as_nobody(socket_path, "POST", f"/v1/jobs/{job_id}/cancel", {})["ok"]["result"] in (
        "CANCELLED", "STOPPING")
    stack.wait_state(job_id, {"CANCELLED"})
    # The admin role given in the account tree counts at once, and is taken back at once.
    stack.labq("admin", "account", "add", "staff")
    stack.labq("admin", "user", "add", "nobody", "--account", "staff")
    stack.labq("admin", "user", "set", "nobody", "--admin")
    assert _as_nobody(socket_path, "GET", "/v1/whoami")["ok"]["admin"] is True
    other = stack.submit("--as", "alice", "--", "sleep", "30")
    assert _as_nobody(socket_path, "POST", f"/v1/jobs/{other}/cancel", {})["ok"]
    stack.labq("admin", "user", "set", "nobody", "--no-admin")
    assert _as_nobody(socket_path, "GET", "/v1/whoami")["ok"]["admin"] is False


def test_usage_is_charged_while_the_job_runs(stack: Stack) -> None:
    user = "charge-test"
    job_id = stack.submit("--as", user, "--account", "physics", "--", "sleep", "20")
    stack.wait_state(job_id, {"RUNNING"})
    usage = stack.wait(lambda: (q := stack.labq_json("quota", "--user", user))["gpu_seconds"] > 0
                       and q, timeout=15, what="usage while running")
    assert stack.job(job_id)["state"] == "RUNNING"
    assert usage["billed_units"] == pytest.approx(usage["gpu_seconds"] * 3.0)  # A100 weight 3
    stack.labq("cancel", job_id)
    final = stack.labq_json("quota", "--user", user)
    job = stack.job(job_id)
    assert final["gpu_seconds"] == pytest.approx(job["gpu_seconds"])
    assert job["gpu_seconds"] == pytest.approx(job["ended_at"] - job["started_at"], abs=0.5)


def test_nodes_json_has_every_gpu_and_reports_processes_labq_did_not_start(stack: Stack) -> None:
    env = {**os.environ, "LABQ_NODE": "sim-1", "CUDA_VISIBLE_DEVICES": "1"}
    intruder = subprocess.Popen(["sleep", "60"], env=env)
    try:
        def seen() -> Any:
            node = next(n for n in stack.labq_json("nodes") if n["name"] == "sim-1")
            pids = [p["pid"] for p in node["foreign_processes"]]
            return node if intruder.pid in pids else None

        node = stack.wait(seen, timeout=15, what="foreign process report")
        assert node["state"] == "UP" and node["gpus_total"] == 2 and node["simulated"]
        gpu = node["gpus"][1]
        for key in ("index", "uuid", "model", "memory_total_bytes", "memory_used_bytes",
                    "utilization"):
            assert key in gpu
        assert gpu["model"] == "A100-80GB" and gpu["memory_total_bytes"] == 80 * 2**30
        proc = next(p for p in gpu["processes"] if p["pid"] == intruder.pid)
        assert proc["labq_job"] is None
        assert "not started by labq" in stack.labq("nodes").stdout
    finally:
        intruder.kill()
        intruder.wait()


def test_metrics_endpoint_serves_cluster_state(stack: Stack) -> None:
    with urllib.request.urlopen(stack.metrics_url) as response:
        text = response.read().decode()
    assert 'labq_gpus_capacity{model="A100-80GB",node="sim-0"} 2.0' in text
    assert "labq_coordinator_leader 1.0" in text


def test_supervisor_restarts_a_crashed_coordinator(stack: Stack) -> None:
    [pid] = stack.pids("scheduler.cli coordinator")
    os.kill(pid, signal.SIGKILL)
    new = stack.wait(lambda: [p for p in stack.pids("scheduler.cli coordinator") if p != pid],
                     timeout=30, what="a new coordinator")
    assert new
    job_id = stack.wait(lambda: stack.labq("submit", "--", "true", check=False).stdout.strip(),
                        timeout=30, what="the API back")
    assert stack.wait_state(job_id, {"SUCCEEDED"}, timeout=60)["exit_code"] == 0


def test_node_whose_heartbeats_stop_goes_down_and_its_jobs_end_node_lost(stack: Stack) -> None:
    idle(stack)
    plain = stack.submit("--", "sleep", "300")
    job = stack.wait_state(plain, {"RUNNING"})
    requeued = stack.submit("--requeue", "--", "sleep", "300")
    assert stack.wait_state(requeued, {"RUNNING"})["node"] == job["node"]  # best fit: same node
    lost_node = job["node"]
    frozen = stack.pids(f"agent --node {lost_node}")
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)  # alive to the supervisor, silent to the coordinator
    try:
        lost = stack.wait_state(plain, {"FAILED"}, timeout=40)
        assert lost["reason"] == "NodeLost"
        node = next(n for n in stack.labq_json("nodes") if n["name"] == lost_node)
        assert node["state"] == "DOWN" and node["gpus_allocated"] == 0
        # The --requeue job is queued again and runs on the node that is still up.
        again = stack.wait_state(requeued, {"RUNNING"}, timeout=40)
        assert again["node"] != lost_node and again["restarts"] == 1
        # New work avoids the DOWN node: it waits rather than go there.
        waiting = stack.submit("--gpus", "2", "--", "true")
        time.sleep(2)
        assert stack.job(waiting)["state"] == "PENDING"
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    stack.wait(lambda: next(n for n in stack.labq_json("nodes")
                            if n["name"] == lost_node)["state"] == "UP", timeout=20,
               what="node back UP")
    assert stack.wait_state(waiting, {"SUCCEEDED"}, timeout=60)["node"] == lost_node
    stack.labq("cancel", requeued)


def test_restart_on_the_same_home_keeps_queued_and_finished_jobs() -> None:
    first = Stack("1x1:RTX3090").start()
    try:
        done = first.submit("--", "sh", "-c", "echo kept")
        first.wait_state(done, {"SUCCEEDED"})
        blocker = first.submit("--", "sleep", "299.5")
        first.wait_state(blocker, {"RUNNING"})
        queued = first.submit("--name", "still-here", "--", "echo", "ran after restart")
        assert first.job(queued)["state"] == "PENDING"
    finally:
        assert first.stop() == 0
    assert first.leftovers() == []  # nothing left behind: Valkey, coordinator, agents all gone
    assert processes("sleep 299.5") == []  # nor the job that was running

    second = Stack("1x1:RTX3090", home=first.home).start()
    try:
        assert second.job(done)["state"] == "SUCCEEDED"
        assert "kept" in second.labq("logs", done).stdout
        job = second.wait_state(queued, {"SUCCEEDED"}, timeout=90)
        assert job["name"] == "still-here"
        assert "ran after restart" in second.labq("logs", queued).stdout
        # Stopped with the stack: it ends as lost to the shutdown (it was not --requeue).
        stopped = second.wait_state(blocker, {"FAILED"}, timeout=30)
        assert stopped["reason"] == "NodeShutdown"
    finally:
        second.stop()


def idle(stack: Stack) -> None:
    try:
        stack.wait(lambda: all(n["gpus_allocated"] == 0 for n in stack.labq_json("nodes")),
                   timeout=90, what="an idle cluster")
    except AssertionError:
        active = [j for j in stack.labq_json("queue", "--all") if j["state"] not in
                  ("PENDING", "HELD")]
        raise AssertionError(f"the cluster never became idle; still active: {active}") from None


def test_budget_holds_a_job_until_an_admin_tops_it_up(stack: Stack) -> None:
    stack.labq("admin", "account", "add", "budgeted")
    stack.labq("admin", "user", "add", "bud", "--account", "budgeted")
    stack.labq("admin", "budget", "set", "--account", "budgeted", "--limit", "0.01")
    # 1 A100 (weight 3) x 60 s = 180 billed GPU-seconds = 0.05 billed GPU-hours > 0.01
    job_id = stack.submit("--as", "bud", "--time", "1m", "--", "sh", "-c", "sleep 2")
    held = stack.wait_state(job_id, {"HELD"}, timeout=30)
    assert held["reason"] == "BudgetExhausted"
    assert "account budgeted's month budget has 0.01 of 0.01 billed GPU-hours left" in \
        held["reasons"][0]["detail"]
    stack.labq("admin", "budget", "topup", "--account", "budgeted", "--add", "0.05")
    done = stack.wait_state(job_id, {"SUCCEEDED"}, timeout=60)
    assert done["billed"] == pytest.approx(done["gpu_seconds"] * 3.0)
    rows = stack.labq_json("admin", "budget", "list")
    [row] = [r for r in rows if r["name"] == "budgeted"]
    assert row["limit_hours"] == pytest.approx(0.06)
    assert row["spent_hours"] == pytest.approx(done["billed"] / 3600, abs=1e-4)
    # Past 80 %, a submit warns (and still queues the job). A new budget has no top-ups.
    stack.labq("admin", "budget", "rm", "--account", "budgeted")
    stack.labq("admin", "budget", "set", "--account", "budgeted", "--limit", "0.001")
    result = stack.labq("submit", "--as", "bud", "--time", "10s", "--", "true")
    assert "warning: account budgeted has used" in result.stderr
    stack.labq("cancel", result.stdout.strip())


def test_scavenger_jobs_fill_idle_gpus_and_are_preempted_for_normal_work(stack: Stack) -> None:
    idle(stack)
    scavengers = [stack.submit("--qos", "scavenger", "--as", "sc", "--", "sleep", "300")
                  for _ in range(4)]
    for job_id in scavengers:
        stack.wait_state(job_id, {"RUNNING"})
    extra = stack.submit("--qos", "scavenger", "--as", "sc", "--", "sleep", "300")
    assert stack.labq("hold", extra).returncode == 0
    assert stack.job(extra)["reason"] == "AdminHold"  # held by root, an admin
    assert stack.job(extra)["state"] == "HELD"
    normal = stack.submit("--gpus", "2", "--", "sh", "-c", "echo normal work")
    assert stack.wait_state(normal, {"SUCCEEDED"}, timeout=90)["exit_code"] == 0
    jobs = [stack.job(j) for j in scavengers]
    preempted = [j for j in jobs if j["restarts"] >= 1]
    assert len(preempted) == 2  # exactly the two GPUs the normal job needed
    assert all(j["state"] in ("PENDING", "STARTING", "RUNNING") for j in jobs)
    assert stack.job(scavengers[0])["billed"] == 0.0  # scavenger runs free
    stack.labq("release", extra)
    assert stack.job(extra)["state"] in ("PENDING", "HELD", "STARTING", "RUNNING")
    stack.labq("cancel", extra, *scavengers)


def test_priority_and_quota_show_fair_share_factors(stack: Stack) -> None:
    idle(stack)
    blocker = stack.submit("--gpus", "2", "--", "sleep", "30")
    other = stack.submit("--gpus", "2", "--", "sleep", "30")
    stack.wait_state(blocker, {"RUNNING"})
    stack.wait_state(other, {"RUNNING"})
    waiting = stack.submit("--as", "newcomer", "--", "true")
    [row] = stack.labq_json("priority", waiting)
    assert set(row["factors"]) == {"fairshare", "age", "size", "qos"}
    assert row["priority"] == pytest.approx(sum(row["weighted"].values()))
    job = stack.wait(lambda: (j := stack.job(waiting))["est_start"] and j, timeout=20,
                     what="an estimated start")
    assert job["est_start"] >= job["submitted_at"]
    assert "START" in stack.labq("queue", "--all", "--start").stdout
    assert "expected start" in stack.labq("show", waiting).stdout
    quota = stack.labq_json("quota", "--user", "newcomer")
    assert (quota["algorithm"], quota["table_algorithm"]) == ("fair_now", "fair_tree")
    assert any(r["user"] == "newcomer" for r in quota["shares"])
    stack.labq("cancel", blocker, other, waiting)


def test_a_killed_agent_comes_back_and_adopts_its_running_jobs(stack: Stack) -> None:
    idle(stack)
    job_id = stack.submit("--gpus", "2", "--", "sleep", "298.5")
    job = stack.wait_state(job_id, {"RUNNING"})
    [sleeper] = stack.wait(lambda: processes("sleep 298.5"), timeout=10, what="the job")
    agents = stack.pids(f"agent --node {job['node']}")
    for pid in agents:
        os.kill(pid, signal.SIGKILL)  # an upgrade, an OOM kill, a crash
    stack.wait(lambda: [p for p in stack.pids(f"agent --node {job['node']}") if p not in agents],
               timeout=30, what="the agent restarted")
    time.sleep(2)
    assert stack.job(job_id)["state"] == "RUNNING"
    assert processes("sleep 298.5") == [sleeper]  # the same process, never started twice
    stack.labq("cancel", job_id)
    assert stack.wait_state(job_id, {"CANCELLED"}, timeout=30)["reason"] == "Cancelled"
    assert stack.wait(lambda: not processes("sleep 298.5"), timeout=20, what="the job gone")


RAY_PROGRAM = """
import json, os, time, ray
ray.init()
gpus = ray.cluster_resources().get("GPU")
@ray.remote(num_gpus=1)
def task(i):
    start = time.time()
    time.sleep(1.0)
    return os.environ.get("CUDA_VISIBLE_DEVICES"), start, time.time()
runs = ray.get([task.remote(i) for i in range(4)])
print("RESULT " + json.dumps({"gpus": gpus, "runs": runs, "uid": os.getuid()}), flush=True)
"""


def test_ray_inside_a_job_sees_exactly_the_jobs_gpus(stack: Stack) -> None:
    idle(stack)
    command = f"{sys.executable} -c {shlex.quote(RAY_PROGRAM)}"
    one = stack.submit("--as", "alice", "--gpus", "1", "--time", "5m", "--", command)
    two = stack.submit("--as", "alice", "--gpus", "2", "--time", "5m", "--", command)
    results = {}
    for job_id in (one, two):
        job = stack.wait_state(job_id, {"SUCCEEDED", "FAILED"}, timeout=240)
        log = stack.labq("logs", job_id, as_root=True).stdout
        assert job["state"] == "SUCCEEDED", log[-3000:]
        line = next(x for x in log.splitlines() if x.startswith("RESULT "))
        results[job_id] = (job, json.loads(line[len("RESULT "):]))
    for job, result in results.values():
        assert result["uid"] == pwd.getpwnam("alice").pw_uid  # Ray ran as the job's user
        assert result["gpus"] == job["gpus"]  # ray.cluster_resources()["GPU"]
        seen = {run[0] for run in result["runs"]}
        assert seen <= {str(i) for i in job["gpu_indices"]}  # tasks never leave the job's GPUs
    job, result = results[one]
    spans = sorted((run[1], run[2]) for run in result["runs"])
    # One GPU: its tasks ran one at a time.
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    job, result = results[two]
    assert {run[0] for run in result["runs"]} == {str(i) for i in job["gpu_indices"]}


RAY_OWNER = """
import time, ray
ray.init()
print("GCS " + ray.get_runtime_context().gcs_address, flush=True)
time.sleep(240)
"""
RAY_INTRUDER = """
import sys, ray
try:
    ray.init(address=sys.argv[1])
    print("CONNECTED", flush=True)
except Exception as exc:
    print("REFUSED", exc, flush=True)
"""


def test_no_other_user_can_connect_to_a_jobs_ray(stack: Stack) -> None:
    command = f"{sys.executable} -c {shlex.quote(RAY_OWNER)}"
    job_id = stack.submit("--as", "alice", "--time", "5m", "--", command)
    out = stack.workdir / f"labq-{job_id}.out"

    def address() -> str | None:
        text = out.read_text() if out.exists() else ""
        line = next((x for x in text.splitlines() if x.startswith("GCS ")), None)
        return line.split()[1] if line else None

    gcs = stack.wait(address, timeout=180, what="the job's Ray to start")
    bob = pwd.getpwnam("bob")
    intruder = subprocess.run(
        [sys.executable, "-c", RAY_INTRUDER, gcs], capture_output=True, text=True, timeout=120,
        user=bob.pw_uid, group=bob.pw_gid, extra_groups=[], cwd=str(stack.workdir),
        env={"PATH": "/usr/bin:/bin", "HOME": bob.pw_dir, "RAY_TMPDIR": str(stack.workdir)})
    said = intruder.stdout + intruder.stderr
    assert "CONNECTED" not in said and "REFUSED" in intruder.stdout, said[-2000:]
    assert "Authentication token is missing or incorrect" in said  # the job's token, not luck
    stack.labq("cancel", job_id, as_root=True)
    stack.wait_state(job_id, {"CANCELLED"}, timeout=60)
