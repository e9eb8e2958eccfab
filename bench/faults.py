"""Fault injection on a real `labq up --simulate` stack under a busy multi-user workload (issue
21, item 5), checked afterwards from an audit trail, not only from the end state.

While several Unix users submit short jobs, the harness kill -9s the coordinator at random
moments (some of them right after it allocated a job, through the coordinator's test hook when
it has one), kill -9s the store and agents, freezes agents (SIGSTOP, then SIGCONT), and kill -9s
job processes from outside. All along it samples the store (allocations, active jobs, the
agents' run statuses), `labq nodes --json`, and /proc (which job processes run on which
simulated GPU). Afterwards it checks:

  acked      every acknowledged submission exists in the store
  one-state  every job is in exactly one state: its hash's state and exactly one index set
  gpus       no GPU held by two jobs at once: in any store sample, any `labq nodes` sample, any
             /proc sample, and in the jobs' own records ([started_at, ended_at] per node GPU)
  charges    every ended job charged once for the time it ran: billed against
             (ended_at - started_at) x GPUs x weight, per job in seconds, and each user's usage
             total against the sum of their jobs
  settled    nothing left STARTING or being stopped; the longest STARTING and stop seen
  unknown    no job process of this run the store does not know (or has ended)

    cd bench && ../.venv/bin/python faults.py              # the full run: 50 coordinator kills
    ../.venv/bin/python faults.py --quick                  # about 3 minutes
    ../.venv/bin/python faults.py --kills 80 --users 6 --json out.json

Needs root (it makes its Unix users, fault-u1..N, and reads every process's environment).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:  # run as a script from bench/, or imported as bench.faults by the tests
    from stack import Stack, ensure_user, wait_until
except ImportError:  # pragma: no cover - depends on how it is started
    from bench.stack import Stack, ensure_user, wait_until

HOOK_ENV = "LABQ_TEST_PAUSE_AFTER_ALLOCATE"
HOOK_LINE = re.compile(HOOK_ENV + r": job (\S+) allocated")
COORDINATOR = "scheduler.cli coordinator"
TAG_ENV = "FAULTS_RUN_TAG"  # labq refuses --env LABQ_*
STABLE_S = 10.0  # labq up: a child that stayed up this long is restarted after 0.5 s again
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}
HOLDING = {"STARTING", "RUNNING", "PREEMPTED"}
EXACT_S = 1.0  # a charge within this many seconds of the time run counts as exact
AGENT_START_S = 5.0  # a restarted agent's first report comes within this (2 busy cores)


@dataclass
class Plan:
    coordinator_kills: int = 50
    store_kills: int = 2
    agent_kills: int = 3
    freezes: int = 3
    freeze_s: float = 25.0
    job_kills: int = 5
    users: int = 4
    simulate: str = "2x2"
    gap_s: tuple[float, float] = (2.0, 9.0)  # between two faults
    hook_every: int = 3  # every Nth coordinator kill waits for the hook's line
    backlog: int = 4  # per user: submit only while fewer of their jobs are live
    drain_s: float = 240.0
    seed: int = 21

    @classmethod
    def quick(cls) -> Plan:
        return cls(coordinator_kills=12, store_kills=1, agent_kills=1, freezes=1,
                   freeze_s=15.0, job_kills=2, users=3, drain_s=150.0)


def hook_present() -> bool:
    """Whether the coordinator reads LABQ_TEST_PAUSE_AFTER_ALLOCATE (see docs/faults.md)."""
    import scheduler.coordinator.core as core

    return HOOK_ENV in Path(core.__file__).read_text()


@dataclass
class Audit:
    """What the run saw, and what it found; `ok()` is the invariants that must hold."""

    machine: str = ""
    hook: str = ""
    duration_s: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    fault_log: list[str] = field(default_factory=list)
    submitted: int = 0
    submit_failures: int = 0
    submit_errors: list[str] = field(default_factory=list)  # the first few, distinct
    jobs_by_end_state: dict[str, int] = field(default_factory=dict)
    store_samples: int = 0
    store_unreachable: int = 0
    nodes_samples: int = 0
    proc_samples: int = 0
    missing: list[str] = field(default_factory=list)
    state_errors: list[str] = field(default_factory=list)
    double_booked: list[str] = field(default_factory=list)
    alloc_mismatches: int = 0
    stale_reports: int = 0
    record_overlaps: list[str] = field(default_factory=list)
    left_unsettled: list[str] = field(default_factory=list)
    max_starting_s: float = 0.0
    max_stopping_s: float = 0.0
    stored_unacknowledged: int = 0  # stored, but the submitter got no answer (a kill between)
    unknown_running: list[str] = field(default_factory=list)
    unknown_at_end: list[str] = field(default_factory=list)
    killed_jobs: dict[str, str] = field(default_factory=dict)
    charged_jobs: int = 0
    charges_exact: int = 0
    charge_off: list[dict[str, Any]] = field(default_factory=list)  # |discrepancy| >= EXACT_S
    charge_max_over_s: float = 0.0
    charge_max_under_s: float = 0.0
    charge_frozen_jobs: int = 0
    never_ran_billed: list[str] = field(default_factory=list)
    usage_mismatches: list[str] = field(default_factory=list)
    observed_vs_record_max_s: float = 0.0
    leftovers: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        """The invariants that hold today and must keep holding."""
        found = []
        if self.missing:
            found.append(f"acknowledged submissions missing: {self.missing[:10]}")
        if self.state_errors:
            found.append(f"jobs not in exactly one state: {self.state_errors[:10]}")
        if self.double_booked or self.record_overlaps:
            found.append(f"GPUs held twice: {(self.double_booked + self.record_overlaps)[:10]}")
        if self.left_unsettled:
            found.append(f"left STARTING/stopping: {self.left_unsettled[:10]}")
        if self.unknown_running or self.unknown_at_end:
            unknown = self.unknown_running + self.unknown_at_end
            found.append(f"unknown job processes: {unknown[:10]}")
        if self.never_ran_billed:
            found.append(f"billed without running: {self.never_ran_billed[:10]}")
        if self.usage_mismatches:
            found.append(f"usage totals differ from the jobs' charges: "
                         f"{self.usage_mismatches[:10]}")
        return found

    def charge_failures(self) -> list[str]:
        """Charges exact to the second (issue 21, item 1): not true today on a frozen agent."""
        return [f"job {c['job']}: billed {c['billed_s']:+.1f} s against {c['ran_s']:.1f} s run"
                f"{' (its agent was silent)' if c['frozen'] else ''}" for c in self.charge_off]


def machine() -> str:
    cpus = os.cpu_count() or 0
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()
    return (f"{os.uname().sysname} {os.uname().machine}, {cpus} cores ({model}), Python "
            f"{sys.version.split()[0]}, load average at start {load[0]:.1f}")


class Run:
    def __init__(self, plan: Plan, say: Any = print) -> None:
        self.plan, self.say = plan, say
        self.rng = random.Random(plan.seed)
        self.tag = f"faults-{os.getpid()}-{int(time.time())}"
        self.hook = hook_present()
        env = {"LABQ_FOREIGN_GPU_POLICY": "ignore"}
        if self.hook:
            env[HOOK_ENV] = "1"  # seconds the coordinator pauses after each allocation
        self.stack = Stack(plan.simulate, **env)
        (self.stack.home / "config.toml").write_text("[scheduler]\nstop_grace_s = 2\n")
        self.users = [f"fault-u{i}" for i in range(1, plan.users + 1)]
        for user in self.users:
            ensure_user(user)
        self.nodes = [f"sim-{i}" for i in range(int(plan.simulate.split("x")[0]))]
        self.audit = Audit(machine=machine(), hook="hook present" if self.hook else "hook absent")
        self.lock = threading.Lock()
        self.acked: dict[str, tuple[str, float]] = {}  # id -> (user, when)
        self.states: dict[str, str] = {}  # last state seen in the store
        self.ended_seen: dict[str, float] = {}  # id -> when first seen terminal
        self.seen: dict[str, list[float]] = {}  # job -> [first, last] seen running in /proc
        # node -> spans its agent was silent: frozen, or killed and not reporting yet
        self.frozen: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.stop = threading.Event()
        self.submitting = threading.Event()
        self.faults: dict[str, int] = defaultdict(int)
        self.quick_deaths = 0
        self.unheard: dict[str, str] = {}  # job processes seen before their submit was acked
        self.started = time.time()
        self._redis: Any = None

    # -------------------------------------------------------------- store access

    def redis(self) -> Any:
        if self._redis is None:
            import redis

            password = (self.stack.home / "secrets" / "coordinator.pass").read_text().strip()
            self._redis = redis.Redis(
                unix_socket_path=str(self.stack.home / "valkey" / "valkey.sock"),
                username="labq-coordinator", password=password, decode_responses=True,
                socket_timeout=3, socket_connect_timeout=2)
        return self._redis

    def job_hashes(self, ids: list[str]) -> dict[str, dict[str, str]]:
        pipe = self.redis().pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(f"labq:job:{job_id}")
        return {job_id: raw for job_id, raw in zip(ids, pipe.execute(), strict=True)}

    # -------------------------------------------------------------- the workload

    def submit_loop(self, user: str) -> None:
        rng = random.Random(f"{self.plan.seed}-{user}")
        while not self.stop.is_set():
            if not self.submitting.is_set():
                break
            with self.lock:
                live = sum(1 for j, (u, _) in self.acked.items()
                           if u == user and self.states.get(j) not in TERMINAL)
            if live >= self.plan.backlog:
                time.sleep(0.5)
                continue
            gpus = rng.choice((1, 1, 1, 2))
            run_s = rng.choice((1, 2, 3, 5, 8, 12))
            limit = "4s" if rng.random() < 0.08 else "2m"
            extra = ["--requeue"] if rng.random() < 0.25 else []
            args = ["submit", "--as", user, "--gpus", str(gpus), "--time", limit, *extra,
                    "--env", f"{TAG_ENV}={self.tag}", "--", f"sleep {run_s}"]
            result = self.stack.labq(*args, check=False)
            job_id = result.stdout.strip()
            if result.returncode == 0 and job_id:
                with self.lock:
                    self.acked[job_id] = (user, time.time())
            else:
                error = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["?"]
                with self.lock:
                    self.audit.submit_failures += 1
                    if len(self.audit.submit_errors) < 5 and \
                            error[0] not in self.audit.submit_errors:
                        self.audit.submit_errors.append(error[0])
                time.sleep(1.0)
            time.sleep(rng.uniform(0.2, 1.5))

    def cancel_now_and_then(self) -> None:
        """A person's cancels of running jobs: stops to follow through kills."""
        rng = random.Random(self.plan.seed + 1)
        while self.submitting.is_set() and not self.stop.wait(rng.uniform(10, 25)):
            with self.lock:
                running = [j for j, s in self.states.items() if s == "RUNNING"]
            if running:
                self.stack.labq("cancel", rng.choice(running), check=False)
                self.faults["cancels"] += 1

    # -------------------------------------------------------------- sampling

    def sample_store(self) -> None:
        while not self.stop.wait(0.5):
            try:
                r = self.redis()
                active = sorted(r.smembers("labq:jobs:active"))
                pipe = r.pipeline(transaction=False)
                for node in self.nodes:
                    pipe.hgetall(f"labq:node:{node}:alloc")
                    pipe.hgetall(f"labq:node:{node}:status")
                answers = pipe.execute()
                with self.lock:
                    watched = list(self.acked)
                jobs = self.job_hashes(sorted(set(active) | set(watched)))
            except Exception:
                self.audit.store_unreachable += 1
                time.sleep(0.5)
                continue
            now = time.time()
            self.audit.store_samples += 1
            with self.lock:
                for job_id, raw in jobs.items():
                    if raw:
                        self.states[job_id] = raw.get("state", "")
                        if raw.get("state") in TERMINAL:
                            self.ended_seen.setdefault(job_id, now)
            claims: dict[tuple[str, int], list[str]] = defaultdict(list)
            for job_id in active:
                raw = jobs.get(job_id) or {}
                if raw.get("state") in HOLDING:
                    for node, index in gpus_of(raw):
                        claims[(node, index)].append(job_id)
            for (node, index), holders in claims.items():
                if len(holders) > 1:
                    self.audit.double_booked.append(
                        f"store {now:.1f}: {node} GPU {index} held by jobs {holders}")
            for n, node in enumerate(self.nodes):
                alloc, statuses = answers[2 * n], answers[2 * n + 1]
                for index, job_id in alloc.items():
                    if job_id not in claims.get((node, int(index)), [job_id]):
                        self.audit.alloc_mismatches += 1
                running: dict[int, list[str]] = defaultdict(list)
                for job_id, text in statuses.items():
                    status = json.loads(text)
                    if status.get("phase") == "RUNNING":
                        for held_node, index in gpus_of(jobs.get(job_id) or {}):
                            if held_node == node:
                                running[index].append(job_id)
                for index, holders in running.items():
                    if len(holders) > 1:
                        self.audit.double_booked.append(
                            f"agent {now:.1f}: {node} GPU {index} running jobs {holders}")

    def sample_nodes(self) -> None:
        """`labq nodes --json` as a user sees it (a CLI process each time: every 4 s)."""
        while not self.stop.wait(4.0):
            result = self.stack.labq("nodes", "--json", check=False)
            if result.returncode != 0:
                continue
            self.audit.nodes_samples += 1
            for node in json.loads(result.stdout):
                allocations = node.get("allocations") or {}
                for gpu in node.get("gpus", []):
                    index = str(gpu.get("index"))
                    # the agent's view: which labq jobs' processes use this GPU
                    users = {str(p["labq_job"]) for p in gpu.get("processes", [])
                             if p.get("labq_job")}
                    holder = allocations.get(index)
                    if len(users) > 1:
                        self.audit.double_booked.append(
                            f"labq nodes {time.time():.1f}: {node.get('name')} GPU {index} "
                            f"allocated to {holder}, used by jobs {sorted(users)}")
                    elif users and users != {str(holder)}:
                        # the agent's process list is its last heartbeat's: a job that just
                        # ended may still show on a GPU given to the next one
                        self.audit.stale_reports += 1

    def sample_procs(self) -> None:
        while not self.stop.wait(1.0):
            self.audit.proc_samples += 1
            now = time.time()
            users: dict[tuple[str, int], set[str]] = defaultdict(set)
            for pid, env in self.job_processes():
                job_id = env.get("LABQ_JOB_ID", "")
                with self.lock:
                    span = self.seen.setdefault(job_id, [now, now])
                    span[1] = now
                    state, ended = self.states.get(job_id), self.ended_seen.get(job_id)
                    known = job_id in self.acked
                if not known:  # perhaps acknowledged a moment later: decided in check()
                    self.unheard.setdefault(job_id, f"{now:.1f}: pid {pid} of job {job_id}")
                elif ended and now - ended > 15:
                    self.audit.unknown_running.append(
                        f"{now:.1f}: pid {pid} of job {job_id} ({state}, ended {now - ended:.0f}"
                        " s before)")
                for index in visible(env.get("CUDA_VISIBLE_DEVICES", "")):
                    users[(env.get("LABQ_NODE", ""), index)].add(job_id)
            for (node, index), ids in users.items():
                if len(ids) > 1:
                    self.audit.double_booked.append(
                        f"/proc {now:.1f}: {node} GPU {index} used by jobs {sorted(ids)}")

    def job_processes(self) -> list[tuple[int, dict[str, str]]]:
        """This run's job processes (their environment carries the run's tag)."""
        marker = f"{TAG_ENV}={self.tag}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "environ").read_bytes()
                if marker not in raw:
                    continue
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[0] == "Z":
                continue
            env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                       if "=" in item)
            if "LABQ_JOB_ID" in env:
                found.append((int(entry.name), env))
        return found

    # -------------------------------------------------------------- faults

    def pid_of(self, part: str, timeout: float = 90) -> int:
        pids = wait_until(lambda: self.stack.pids(part), timeout, f"a process '{part}'")
        return int(min(pids))

    def log_fault(self, text: str) -> None:
        self.audit.fault_log.append(f"{time.time() - self.started:7.1f} s  {text}")

    def kill_coordinator(self, via_hook: bool) -> None:
        pid = self.pid_of(COORDINATOR)
        age = time.time() - start_time(pid)
        wait = self.rng.uniform(0.0, 3.0)
        if self.quick_deaths >= 2:  # let labq up's restart delay start over
            wait = max(wait, STABLE_S + 0.5 - age)
        time.sleep(max(0.0, wait))
        how = "at a random moment"
        if via_hook and self.hook:
            log = self.stack.home / "logs" / "coordinator.log"
            offset = log.stat().st_size if log.exists() else 0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                text = log.read_text(errors="replace")[offset:] if log.exists() else ""
                match = HOOK_LINE.search(text)
                if match:
                    how = f"right after allocating job {match[1]} (hook)"
                    self.faults["coordinator_kills_after_allocate"] += 1
                    break
                time.sleep(0.1)
            else:
                how = "at a random moment (no allocation within 30 s)"
        if pid not in self.stack.pids(COORDINATOR):
            pid = self.pid_of(COORDINATOR)
        age = time.time() - start_time(pid)
        os.kill(pid, signal.SIGKILL)
        self.quick_deaths = self.quick_deaths + 1 if age < STABLE_S else 1
        self.faults["coordinator_kills"] += 1
        self.log_fault(f"kill -9 coordinator {pid} ({age:.1f} s up) {how}")
        wait_until(lambda: [p for p in self.stack.pids(COORDINATOR) if p != pid], 90,
                   "the coordinator back")

    def store_pids(self) -> list[int]:
        """The stack's Valkey server: it rewrites its own command line and environment (its
        process title), so it is found by the socket its title names."""
        title = f"unixsocket:{self.stack.home / 'valkey' / 'valkey.sock'}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and title in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def kill_store(self) -> None:
        [pid] = wait_until(self.store_pids, 90, "the store")
        os.kill(pid, signal.SIGKILL)
        self.faults["store_kills"] += 1
        self.log_fault(f"kill -9 store {pid}")
        wait_until(lambda: [p for p in self.store_pids() if p != pid], 90, "the store back")

    def kill_agent(self) -> None:
        node = self.rng.choice(self.nodes)
        pid = self.pid_of(f"agent --node {node}")
        began = time.time()
        os.kill(pid, signal.SIGKILL)
        self.faults["agent_kills"] += 1
        self.log_fault(f"kill -9 agent of {node} ({pid})")
        part = f"agent --node {node}"
        wait_until(lambda: [p for p in self.stack.pids(part) if p != pid], 90, "the agent back")
        # silent from the kill until the new agent's first report (a few seconds on 2 cores)
        self.frozen[node].append((began, time.time() + AGENT_START_S))

    def freeze_agent(self) -> threading.Thread:
        """SIGSTOP an agent whose node runs a job (the case the charges get wrong), for
        freeze_s: longer than a job runs, shorter than node_timeout_s."""
        busy = sorted({env.get("LABQ_NODE", "") for _, env in self.job_processes()} &
                      set(self.nodes))
        node = self.rng.choice(busy or self.nodes)
        pid = self.pid_of(f"agent --node {node}")

        def freeze() -> None:
            began = time.time()
            os.kill(pid, signal.SIGSTOP)
            self.log_fault(f"SIGSTOP agent of {node} ({pid}) for {self.plan.freeze_s:.0f} s")
            time.sleep(self.plan.freeze_s)
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.frozen[node].append((began, time.time()))
            self.log_fault(f"SIGCONT agent of {node}")

        self.faults["agent_freezes"] += 1
        thread = threading.Thread(target=freeze, daemon=True)
        thread.start()
        return thread

    def kill_job(self) -> None:
        """kill -9 of a running job's first process, from outside labq."""
        try:
            procs = wait_until(self.job_processes, 30, "a job process", interval=0.5)
        except AssertionError:
            self.log_fault("no job process to kill within 30 s")
            return
        pid, env = self.rng.choice(procs)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.faults["job_kills"] += 1
        self.audit.killed_jobs[env["LABQ_JOB_ID"]] = ""
        self.log_fault(f"kill -9 job {env['LABQ_JOB_ID']}'s process {pid}")

    def inject(self) -> None:
        plan = self.plan
        events = (["coordinator"] * plan.coordinator_kills + ["store"] * plan.store_kills
                  + ["agent"] * plan.agent_kills + ["freeze"] * plan.freezes
                  + ["job"] * plan.job_kills)
        self.rng.shuffle(events)
        freezes: list[threading.Thread] = []
        coordinator_kills = 0
        for event in events:
            time.sleep(self.rng.uniform(*plan.gap_s))
            if event == "coordinator":
                coordinator_kills += 1
                self.kill_coordinator(via_hook=coordinator_kills % plan.hook_every == 0)
            elif event == "store":
                self.kill_store()
            elif event == "agent":
                self.kill_agent()
            elif event == "freeze":
                freezes.append(self.freeze_agent())
            else:
                self.kill_job()
        for thread in freezes:
            thread.join()

    # -------------------------------------------------------------- the run

    def run(self) -> Audit:
        self.say(f"faults: {self.audit.machine}")
        self.say(f"faults: LABQ_HOME {self.stack.home}, {self.plan.simulate} simulated GPUs, "
                 f"users {', '.join(self.users)}; {self.audit.hook}")
        self.stack.start()
        self.started = time.time()
        self.submitting.set()
        threads = [threading.Thread(target=self.submit_loop, args=(u,), daemon=True)
                   for u in self.users]
        threads += [threading.Thread(target=f, daemon=True) for f in (
            self.sample_store, self.sample_nodes, self.sample_procs, self.cancel_now_and_then)]
        for thread in threads:
            thread.start()
        try:
            self.inject()
            self.say(f"faults: {dict(self.faults)} done in {time.time() - self.started:.0f} s; "
                     "draining")
            self.submitting.clear()
            self.drain()
            self.stop.set()
            for thread in threads:
                thread.join(timeout=70)
            self.audit.duration_s = time.time() - self.started
            self.check()
        finally:
            self.stop.set()
            self.stack.stop()
            try:
                wait_until(lambda: self.stack.leftovers() == [], 30, "nothing of the stack left")
            except AssertionError:
                self.audit.leftovers = self.stack.leftovers()
        return self.audit

    def drain(self) -> None:
        deadline = time.monotonic() + self.plan.drain_s
        while time.monotonic() < deadline:
            with self.lock:
                live = [j for j in self.acked if self.states.get(j) not in TERMINAL]
            if not live:
                break
            time.sleep(1.0)
        time.sleep(3.0)  # a last store and /proc sample after the last end

    # -------------------------------------------------------------- the audit

    def check(self) -> None:
        audit, r = self.audit, self.redis()
        audit.faults = dict(self.faults)
        audit.submitted = len(self.acked)
        members = {name: set(r.zrange(f"labq:jobs:{name}", 0, -1)) for name in
                   ("waiting", "held", "done")}
        members["active"] = set(r.smembers("labq:jobs:active"))
        # Every job the store holds, acknowledged or not: a submit stored by a coordinator
        # killed before it could answer runs (and is charged) like any other.
        stored = set().union(*members.values())
        audit.stored_unacknowledged = len(stored - set(self.acked))
        jobs = self.job_hashes(sorted(set(self.acked) | stored, key=job_order))
        by_state: dict[str, int] = defaultdict(int)
        for job_id, raw in jobs.items():
            if not raw:
                audit.missing.append(job_id)
                continue
            state = raw.get("state", "")
            by_state[state] += 1
            where = sorted(name for name, ids in members.items() if job_id in ids)
            allowed = {"PENDING": {"waiting"}, "HELD": {"waiting", "held"},
                       "STARTING": {"active"}, "RUNNING": {"active"},
                       "PREEMPTED": {"active"}}.get(state, {"done"} if state in TERMINAL else set())
            if len(where) != 1 or where[0] not in allowed:
                audit.state_errors.append(f"job {job_id}: state {state!r}, in {where}")
            if state in HOLDING or state == "RUNNING" and raw.get("stop_request"):
                audit.left_unsettled.append(f"job {job_id}: {state}")
            started, ended = fnum(raw, "started_at"), fnum(raw, "ended_at")
            starting = fnum(raw, "starting_at")
            if starting is not None and started is not None:
                audit.max_starting_s = max(audit.max_starting_s, started - starting)
            stop_asked = fnum(raw, "stop_requested_at")
            if stop_asked is not None and ended is not None:
                audit.max_stopping_s = max(audit.max_stopping_s, ended - stop_asked)
        audit.jobs_by_end_state = dict(sorted(by_state.items()))
        for job_id in audit.killed_jobs:
            raw = jobs.get(job_id) or {}
            audit.killed_jobs[job_id] = f"{raw.get('state')} {raw.get('reason', '')}".strip()
        self.check_intervals(jobs)
        self.check_charges(jobs)
        audit.unknown_running += [seen for job_id, seen in self.unheard.items()
                                  if job_id not in self.acked and job_id not in stored]
        for pid, env in self.job_processes():
            audit.unknown_at_end.append(f"pid {pid} of job {env.get('LABQ_JOB_ID')}")

    def check_intervals(self, jobs: dict[str, dict[str, str]]) -> None:
        spans: dict[tuple[str, int], list[tuple[float, float, str]]] = defaultdict(list)
        for job_id, raw in jobs.items():
            started, ended = fnum(raw, "started_at"), fnum(raw, "ended_at")
            if started is None or ended is None:
                continue
            for node, index in gpus_of(raw):
                spans[(node, index)].append((started, ended, job_id))
        for (node, index), items in spans.items():
            items.sort()
            end_a, a = items[0][1], items[0][2]  # the latest end so far, and whose
            for start_b, end_b, b in items[1:]:
                if start_b < end_a:
                    self.audit.record_overlaps.append(
                        f"{node} GPU {index}: job {a} until {end_a:.2f}, job {b} from "
                        f"{start_b:.2f} ({end_a - start_b:.2f} s)")
                if end_b > end_a:
                    end_a, a = end_b, b

    def check_charges(self, jobs: dict[str, dict[str, str]]) -> None:
        audit = self.audit
        totals: dict[str, float] = defaultdict(float)
        for job_id, raw in jobs.items():
            if not raw or raw.get("state") not in TERMINAL:
                continue
            billed, gpus = float(raw.get("billed") or 0), int(raw.get("gpus") or 1)
            weight = float(raw.get("billing_weight") or 1.0)
            totals[raw.get("user", "")] += billed
            started, ended = fnum(raw, "started_at"), fnum(raw, "ended_at")
            if started is None or ended is None:
                if billed > 0 and int(raw.get("restarts") or 0) == 0:
                    audit.never_ran_billed.append(f"job {job_id}: billed {billed:.1f}")
                continue
            if int(raw.get("restarts") or 0) > 0:
                continue  # billed covers every attempt; the record keeps the last one's times
            audit.charged_jobs += 1
            ran = ended - started
            off = billed / (gpus * weight) - ran
            span = self.seen.get(job_id)
            if span:
                audit.observed_vs_record_max_s = max(audit.observed_vs_record_max_s,
                                                     abs((span[1] - span[0]) - ran))
            frozen = any(a < ended and started < b for a, b in self.frozen[raw.get("node", "")])
            audit.charge_frozen_jobs += frozen
            audit.charge_max_over_s = max(audit.charge_max_over_s, off)
            audit.charge_max_under_s = min(audit.charge_max_under_s, off)
            if abs(off) < EXACT_S:
                audit.charges_exact += 1
            else:
                audit.charge_off.append({"job": job_id, "ran_s": round(ran, 2),
                                         "billed_s": round(off, 2), "gpus": gpus,
                                         "frozen": frozen, "state": raw.get("state"),
                                         "reason": raw.get("reason", "")})
        usage = self.redis().hgetall("labq:usage")
        for user in self.users:
            stored = float(usage.get(f"user:{user}:billed") or 0)
            if abs(stored - totals[user]) > 0.01:
                audit.usage_mismatches.append(
                    f"{user}: usage {stored:.2f}, sum of jobs {totals[user]:.2f}")


def gpus_of(raw: dict[str, str]) -> list[tuple[str, int]]:
    """(node, GPU index) pairs a job record holds."""
    parts = json.loads(raw.get("parts") or "[]")
    if parts:
        return [(str(node), int(i)) for node, indices in parts for i in indices]
    node = raw.get("node") or ""
    return [(node, int(i)) for i in json.loads(raw.get("gpu_indices") or "[]")] if node else []


def visible(value: str) -> list[int]:
    return [int(x) for x in value.split(",") if x.strip().isdigit()]


def fnum(raw: dict[str, str], key: str) -> float | None:
    value = raw.get(key) or ""
    return float(value) if value else None


def job_order(job_id: str) -> tuple[int, str]:
    head = job_id.split("_")[0]
    return (int(head) if head.isdigit() else 0, job_id)


def start_time(pid: int) -> float:
    """When process `pid` started, in Unix seconds."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def report(audit: Audit, say: Any = print) -> None:
    say(f"machine              {audit.machine}")
    say(f"test hook            {audit.hook}")
    say(f"duration             {audit.duration_s:.0f} s")
    say(f"faults injected      {json.dumps(audit.faults, sort_keys=True)}")
    say(f"submissions          {audit.submitted} acknowledged, {audit.submit_failures} refused "
        f"or failed (not acknowledged) {audit.submit_errors}")
    say(f"jobs by state        {json.dumps(audit.jobs_by_end_state)}")
    say(f"samples              store {audit.store_samples} (unreachable {audit.store_unreachable})"
        f", labq nodes {audit.nodes_samples}, /proc {audit.proc_samples}")
    say(f"acked missing        {len(audit.missing)} {audit.missing[:10]}")
    say(f"stored, not acked    {audit.stored_unacknowledged} (their submitter got no answer: "
        "stored, then the coordinator was killed before it replied; each runs like any job)")
    say(f"not in one state     {len(audit.state_errors)} {audit.state_errors[:5]}")
    say(f"GPU held twice       {len(audit.double_booked)} in samples, "
        f"{len(audit.record_overlaps)} in the jobs' records {audit.double_booked[:3]}"
        f"{audit.record_overlaps[:3]}")
    say(f"alloc mismatches     {audit.alloc_mismatches} samples where the alloc hash named a "
        "job not holding that GPU (read between two writes)")
    say(f"stale GPU reports    {audit.stale_reports} `labq nodes` GPUs whose process list (the "
        "agent's last heartbeat) named a job other than the GPU's allocation")
    say(f"left unsettled       {len(audit.left_unsettled)} {audit.left_unsettled[:5]}")
    say(f"longest STARTING     {audit.max_starting_s:.1f} s; longest stop "
        f"{audit.max_stopping_s:.1f} s (asked -> ended)")
    say(f"unknown processes    {len(audit.unknown_running)} during, {len(audit.unknown_at_end)} "
        f"at the end {(audit.unknown_running + audit.unknown_at_end)[:3]}")
    say(f"killed from outside  {audit.killed_jobs}")
    say(f"charges              {audit.charged_jobs} ended jobs that ran once: "
        f"{audit.charges_exact} within {EXACT_S:g} s, {len(audit.charge_off)} off; "
        f"most over {audit.charge_max_over_s:+.1f} s, most under {audit.charge_max_under_s:+.1f} s;"
        f" {audit.charge_frozen_jobs} ran while their agent was silent (frozen or restarting)")
    for item in sorted(audit.charge_off, key=lambda c: -abs(c["billed_s"]))[:15]:
        say(f"  job {item['job']:>6}: ran {item['ran_s']:6.1f} s on {item['gpus']} GPU(s), "
            f"billed {item['billed_s']:+7.1f} s more{' (agent silent)' if item['frozen'] else ''}"
            f" {item['state']} {item['reason']}")
    say(f"billed, never ran    {len(audit.never_ran_billed)} {audit.never_ran_billed[:5]}")
    say(f"usage vs jobs        {len(audit.usage_mismatches)} {audit.usage_mismatches[:5]}")
    say(f"run time: /proc vs   {audit.observed_vs_record_max_s:.1f} s most (sampled every 1 s)")
    say(f"left after stop      {audit.leftovers}")
    say("fault log (first 10):")
    for line in audit.fault_log[:10]:
        say(f"  {line}")
    failures = audit.failures()
    say("INVARIANTS: " + ("all hold" if not failures else "FAILED: " + "; ".join(failures)))
    say("CHARGES TO THE SECOND: " + ("exact" if not audit.charge_off else
                                     f"{len(audit.charge_off)} jobs off"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 3 minutes")
    parser.add_argument("--kills", type=int, help="coordinator kill -9s (default 50)")
    parser.add_argument("--store-kills", type=int)
    parser.add_argument("--agent-kills", type=int)
    parser.add_argument("--freezes", type=int)
    parser.add_argument("--job-kills", type=int)
    parser.add_argument("--users", type=int)
    parser.add_argument("--simulate", help="nodes x GPUs (default 2x2)")
    parser.add_argument("--duration", type=float,
                        help="aim for about this many seconds of faults (sets the gap between "
                             "two faults from the number of faults)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--json", type=Path, help="write the audit here")
    args = parser.parse_args()
    plan = Plan.quick() if args.quick else Plan()
    for name, attr in (("kills", "coordinator_kills"), ("store_kills", "store_kills"),
                       ("agent_kills", "agent_kills"), ("freezes", "freezes"),
                       ("job_kills", "job_kills"), ("users", "users"),
                       ("simulate", "simulate"), ("seed", "seed")):
        if getattr(args, name) is not None:
            setattr(plan, attr, getattr(args, name))
    if args.duration:
        count = (plan.coordinator_kills + plan.store_kills + plan.agent_kills + plan.freezes
                 + plan.job_kills)
        mean = max(0.5, args.duration / max(count, 1) - 2.0)
        plan.gap_s = (mean * 0.5, mean * 1.5)
    if os.geteuid() != 0:
        print("faults: run as root (it makes Unix users and reads every process's environment)")
        return 2
    audit = Run(plan, say=lambda text: print(text, flush=True)).run()
    report(audit)
    if args.json:
        args.json.write_text(json.dumps(asdict(audit), indent=1))
    return 1 if audit.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
