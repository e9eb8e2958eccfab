"""Load (issue 21, item 7): a deep queue, many agents, a stream of submissions, one coordinator.

100,000 queued jobs, 1,000 simulated agents heartbeating every 5 s, 500 submissions/s for 60 s
against a real coordinator process (`python -m scheduler.cli coordinator`) on a scratch
valkey-server. Prints the coordinator's CPU and RSS, its scheduling cycle's p50/p99 (from the
`labq_scheduling_cycle_duration_seconds` histogram of its /metrics, read before and after the
load), the store's memory per job, whether every acknowledged submission exists, and whether the
leader lease was ever lost (the fencing epoch moved).

The cluster is full, as a queue this deep means: each agent is a coroutine of this process that
calls the store's heartbeat script (as `agents.agent.Agent.beat_once` does) with 8 simulated
GPUs, each busy with a process that is not a labq job (`foreign_gpu_policy = "avoid"`, the
default), so nothing starts and every cycle ranks and places the whole queue and explains every
waiting job. The queued jobs are stored through the store's submit script (40 users, 2,500
each); the stream goes through the API (`POST /v1/jobs` over the Unix socket, one job per
request, 32 keep-alive connections, paced to the rate), as root for 10 Unix users made here, so
the default per-user caps hold.

Usage (as root, from this folder or the repository root):
  python bench/bench_load.py            # 100,000 jobs, 1,000 agents, 500/s for 60 s
  python bench/bench_load.py --quick    # 10,000 jobs, 100 agents, 500/s for 20 s (~2 min)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import machine, scratch_valkey

from scheduler.model import GpuInfo, GpuProcess, JobSpec, NodeReport
from scheduler.server.ports import free_port
from scheduler.store import Store

PREFIX = "labq:"
GPUS_PER_NODE = 8
QUEUED_USERS = 40  # owners of the preloaded queue (names only: they never run anything)
SUBMITTERS = [f"labq-load-{i}" for i in range(10)]  # Unix users the API stream submits as
CONNECTIONS = 32
HEARTBEAT_S = 5.0


@dataclass
class Plan:
    jobs: int
    agents: int
    rate: float
    seconds: float


FULL = Plan(100_000, 1_000, 500.0, 60.0)
QUICK = Plan(10_000, 100, 500.0, 20.0)


@dataclass
class Seen:
    """What the load phase saw."""

    acked: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    rss_bytes: list[int] = field(default_factory=list)
    epochs: set[str | None] = field(default_factory=set)
    leaders: set[str | None] = field(default_factory=set)
    lease_left_ms: list[int] = field(default_factory=list)  # the leader key's PTTL, each poll
    beats: int = 0
    beat_errors: int = 0
    store_busy: int = 0  # polls of the lease that the store did not answer
    died: str = ""
    load_before: float = 0.0  # the machine's 1-minute load average when the stream began
    cut_off: bool = False  # the stream did not finish within 4x its planned time (+60 s)


def ensure_users(names: list[str]) -> None:
    import pwd

    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                           check=True, capture_output=True)


# ------------------------------------------------------------------ the cluster

def report(node: str) -> NodeReport:
    gpus = [GpuInfo(i, f"GPU-{node}-{i}", "A100-80GB", 80 << 30, 40 << 30, 0.9, 300.0, 60.0,
                    processes=[GpuProcess(100_000 + i, 40 << 30, "python")])
            for i in range(GPUS_PER_NODE)]
    return NodeReport(node, gpus, simulated=True, hostname=node, agent_pid=1,
                      address="127.0.0.1")


async def agent(store: Store, node: str, stop: asyncio.Event, seen: Seen) -> None:
    """One node's agent: a heartbeat every HEARTBEAT_S, the first at a random moment of it."""
    await asyncio.sleep(random.uniform(0, HEARTBEAT_S))
    beat = report(node)
    while not stop.is_set():
        began = time.monotonic()
        try:
            await store.heartbeat(beat, time.time())
            seen.beats += 1
        except Exception:
            seen.beat_errors += 1
        await asyncio.sleep(max(0.0, HEARTBEAT_S - (time.monotonic() - began)))


async def preload(store: Store, count: int) -> None:
    """`count` waiting jobs, stored by the submit script in batches (as an API submit would)."""
    now = time.time()
    batch = 500
    for first in range(0, count, batch):
        specs = [JobSpec(user=f"queued-{i % QUEUED_USERS:02d}", account="default",
                         command=["python", "train.py", f"--seed={i}"], gpus=random.choice(
                             (1, 1, 1, 2, 4, 8)), time_limit_s=random.choice((3600, 86400)),
                         workdir="/tmp", name=f"load-{i}")
                 for i in range(first, min(count, first + batch))]
        await store.submit(specs, uuid.uuid4().hex, now - (count - first) * 0.01)


# ------------------------------------------------------------------ the coordinator

def start_coordinator(home: Path, url: str, metrics_port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABQ_REDIS_USERNAME", "LABQ_REDIS_PASSWORD", "LABQ_AGENT_"))}
    env.update(LABQ_HOME=str(home), LABQ_REDIS_URL=url, LABQ_REDIS_PREFIX=PREFIX,
               PYTHONUNBUFFERED="1")
    with open(home / "coordinator.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "scheduler.cli", "coordinator",
                                 "--metrics-port", str(metrics_port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd="/")


def leading(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
        return bool(json.loads(answer.read())["leader"])


def cycles_done(port: int, timeout: float) -> float | None:
    """Seconds until the coordinator leads and has finished two cycles (/metrics read every
    10 s: a scrape reads the whole queue too), or None if not within `timeout`."""
    began = time.monotonic()
    deadline = began + timeout
    while time.monotonic() < deadline:
        try:
            if leading(port) and cycle_histogram(scrape(port))[1] >= 2:
                return time.monotonic() - began
        except Exception:
            pass
        time.sleep(10)
    return None


def scrape_or_none(port: int) -> str | None:
    try:
        return scrape(port)
    except Exception as exc:
        print(f"/metrics did not answer: {exc!r}", flush=True)
        return None


def stop(coordinator: subprocess.Popen[bytes]) -> None:
    if coordinator.poll() is None:
        coordinator.send_signal(signal.SIGTERM)
        try:
            coordinator.wait(30)
        except subprocess.TimeoutExpired:
            coordinator.kill()
            coordinator.wait()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as answer:
        return str(answer.read().decode())


def cycle_histogram(text: str) -> tuple[dict[float, float], float, float]:
    """(cumulative count per upper bound, count, sum) of the cycle duration histogram."""
    name = "labq_scheduling_cycle_duration_seconds"
    buckets: dict[float, float] = {}
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            bound = re.search(r'le="([^"]+)"', line)[1]  # type: ignore[index]
            buckets[math.inf if bound == "+Inf" else float(bound)] = float(line.split()[-1])
        elif line.startswith(f"{name}_count"):
            count = float(line.split()[-1])
        elif line.startswith(f"{name}_sum"):
            total = float(line.split()[-1])
    return buckets, count, total


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Prometheus's histogram_quantile over the cycles between two scrapes (linear within a
    bucket; the highest finite bound if it falls in +Inf)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_bytes(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    return 0


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


# ------------------------------------------------------------------ the stream

async def submitter(path: str, plan: Plan, index: int, began: float, seen: Seen) -> None:
    """Connection `index` of CONNECTIONS: submissions index, index + CONNECTIONS, ..., each
    sent no earlier than its moment of the paced stream. A refusal or a dropped connection is
    counted (and the connection opened again); it is not tried again."""
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: labq\r\nContent-Type: application/json\r\n"
    total = int(plan.rate * plan.seconds)
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        for n in range(index, total, CONNECTIONS):
            delay = began + n / plan.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = {"command": ["python", "train.py", f"--run={n}"], "workdir": "/tmp",
                    "time": "1h", "gpus": 1, "as_user": SUBMITTERS[n % len(SUBMITTERS)],
                    "token": uuid.uuid4().hex}
            payload = json.dumps(body).encode()
            sent = time.monotonic()
            try:
                writer.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(payload), payload))
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                data = await reader.readexactly(length) if length else b"{}"
                try:
                    answer = json.loads(data)
                except ValueError:  # an error page: "500: Internal Server Error"
                    answer = {"text": data[:80].decode(errors="replace")}
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                seen.refused.append(f"connection: {exc!r}")
                writer.close()
                reader, writer = await asyncio.open_unix_connection(path)
                continue
            seen.latencies.append(time.monotonic() - sent)
            if status.split()[1:2] == [b"200"]:
                seen.acked += [str(x) for x in answer["ids"]]
            else:
                seen.refused.append(f"{status.decode().strip()} {answer}")
                if not status:
                    writer.close()
                    reader, writer = await asyncio.open_unix_connection(path)
    finally:
        writer.close()


async def watch(store: Store, coordinator: subprocess.Popen[bytes], stop: asyncio.Event,
                seen: Seen) -> None:
    """Every 0.5 s: the coordinator's RSS, the leader, the fencing epoch and how long the
    lease has left (renewed every second, it lasts 5 s: what is left says how late the last
    renewal was)."""
    said = time.monotonic()
    pid = coordinator.pid
    while not stop.is_set():
        if coordinator.poll() is not None:
            seen.died = f"the coordinator ENDED during the load (status {coordinator.returncode})"
            print(seen.died, flush=True)
            return
        if time.monotonic() - said >= 15:
            said = time.monotonic()
            print(f"  ... {len(seen.acked):,} acknowledged, {len(seen.refused):,} refused",
                  flush=True)
        seen.rss_bytes.append(status_bytes(pid, "VmRSS"))
        try:
            seen.leaders.add(await store.r.get(store.keys.leader))
            seen.epochs.add(await store.r.get(store.keys.epoch))
            seen.lease_left_ms.append(int(await store.r.pttl(store.keys.leader)))
        except Exception:  # the store busy with a script: polled again in 0.5 s
            seen.store_busy += 1
        await asyncio.sleep(0.5)


async def load(store: Store, socket_path: str, coordinator: subprocess.Popen[bytes], plan: Plan,
               seen: Seen) -> float:
    seen.load_before = os.getloadavg()[0]
    stop_watch = asyncio.Event()
    watcher = asyncio.create_task(watch(store, coordinator, stop_watch, seen))
    began = time.monotonic()
    stream = asyncio.gather(*(submitter(socket_path, plan, i, began, seen)
                              for i in range(CONNECTIONS)))
    try:  # a coordinator that cannot keep up at all: the stream is cut off, and said so
        await asyncio.wait_for(stream, 4 * plan.seconds + 60)
    except TimeoutError:
        seen.cut_off = True
    except OSError as exc:  # the socket is gone: the coordinator ended
        seen.refused.append(f"connection: {exc!r}")
        seen.cut_off = True
    spent = time.monotonic() - began
    stop_watch.set()
    await watcher
    return spent


async def patiently(call: Any, *args: Any) -> Any:
    """`await call(*args)`, tried again while the store is busy running a script or does not
    answer in time (a long script of the coordinator's), for up to 5 minutes."""
    import redis.exceptions as redis_errors

    deadline = time.monotonic() + 300
    while True:
        try:
            return await call(*args)
        except (redis_errors.ResponseError, redis_errors.TimeoutError) as exc:
            if time.monotonic() > deadline or isinstance(exc, redis_errors.ResponseError) and \
                    not str(exc).startswith("BUSY"):
                raise
            await asyncio.sleep(1)


async def used_memory(store: Store) -> int:
    return int((await patiently(store.r.info, "memory"))["used_memory"])


async def exists_each(store: Store, ids: list[str]) -> list[int]:
    async with store.r.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.exists(store.keys.job(job_id))
        return list(await pipe.execute())


async def missing(store: Store, ids: list[str]) -> list[str]:
    lost = []
    for first in range(0, len(ids), 1000):
        chunk = ids[first:first + 1000]
        found = await patiently(exists_each, store, chunk)
        lost += [j for j, there in zip(chunk, found, strict=True) if not there]
    return lost


# ------------------------------------------------------------------ the run

async def bench(plan: Plan, url: str, home: Path, ready_timeout: float) -> None:
    store = Store.from_url(url, PREFIX)
    empty = await used_memory(store)
    t0 = time.monotonic()
    await preload(store, plan.jobs)
    preload_s = time.monotonic() - t0
    queued = await used_memory(store)
    print(f"queued {plan.jobs:,} jobs in {preload_s:.1f} s; store {(queued - empty) / 2**20:.1f}"
          f" MiB for them ({(queued - empty) / plan.jobs:,.0f} B per job)", flush=True)

    seen = Seen()
    stop_agents = asyncio.Event()
    agents = [asyncio.create_task(agent(store, f"node-{n:04d}", stop_agents, seen))
              for n in range(plan.agents)]
    metrics_port = free_port()
    coordinator = start_coordinator(home, url, metrics_port)
    try:
        t0 = time.monotonic()
        socket_path = home / "labq.sock"
        await asyncio.to_thread(wait, lambda: socket_path.is_socket(), 120, "the API socket")
        ready = await asyncio.to_thread(cycles_done, metrics_port, ready_timeout)
        await asyncio.sleep(HEARTBEAT_S)  # every agent has reported
        if ready is None:
            print(f"the coordinator did not finish two cycles in {ready_timeout:.0f} s: "
                  "loading anyway", flush=True)
        else:
            print(f"coordinator up, leading and two cycles done in {time.monotonic() - t0:.1f}"
                  f" s; {len(agents)} agents heartbeating", flush=True)
        before_text = await asyncio.to_thread(scrape_or_none, metrics_port)
        cpu0, wall0 = cpu_seconds(coordinator.pid), time.monotonic()
        spent = await load(store, str(socket_path), coordinator, plan, seen)
        cpu1, wall1 = (cpu0 if coordinator.poll() is not None else
                       cpu_seconds(coordinator.pid)), time.monotonic()
        after_text = await asyncio.to_thread(scrape_or_none, metrics_port)
        peak_rss = 0 if coordinator.poll() is not None else status_bytes(coordinator.pid,
                                                                         "VmHWM")
        stop_agents.set()
        await asyncio.gather(*agents)
        stop(coordinator)  # the store is read quiet (the last script of the cycle runs out)
        end_memory = await used_memory(store)
        stored = int(await patiently(store.r.zcard, store.keys.waiting))
        lost = await missing(store, seen.acked)
    finally:
        stop(coordinator)
        await store.close()

    before, count0, sum0 = cycle_histogram(before_text or "")
    after, count1, sum1 = cycle_histogram(after_text or "")
    cycles = count1 - count0
    latencies = sorted(seen.latencies)
    wanted = int(plan.rate * plan.seconds)
    jobs_at_end = plan.jobs + len(seen.acked)
    print()
    print(f"machine: {machine()}; load average (1 min) at the start of the stream "
          f"{seen.load_before:.1f}, at its end {os.getloadavg()[0]:.1f}")
    print(f"load: {plan.jobs:,} queued jobs, {plan.agents:,} agents x {GPUS_PER_NODE} GPUs "
          f"heartbeating every {HEARTBEAT_S:.0f} s, {plan.rate:.0f} submissions/s for "
          f"{plan.seconds:.0f} s through the API ({CONNECTIONS} connections)"
          + ("; the stream was CUT OFF (too slow)" if seen.cut_off else ""))
    print(f"submissions: {len(seen.acked):,} acknowledged of {wanted:,} in {spent:.1f} s "
          f"({len(seen.acked) / spent:,.0f}/s); refused {len(seen.refused)}"
          + (f" (first: {seen.refused[0]})" if seen.refused else ""))
    if latencies:
        print(f"submit latency: p50 {1000 * latencies[len(latencies) // 2]:.1f} ms, p99 "
              f"{1000 * latencies[int(0.99 * (len(latencies) - 1))]:.1f} ms, max "
              f"{1000 * latencies[-1]:.0f} ms")
    print(f"coordinator CPU: {cpu1 - cpu0:.1f} s over {wall1 - wall0:.1f} s "
          f"({100 * (cpu1 - cpu0) / (wall1 - wall0):.0f} % of one core)")
    print(f"coordinator RSS: {max(seen.rss_bytes, default=0) / 1e6:.0f} MB at most during the "
          f"load (sampled every 0.5 s), peak (VmHWM) {peak_rss / 1e6:.0f} MB")
    if before_text is None or after_text is None:
        print("cycles during the load: unknown (/metrics did not answer)")
    else:
        print(f"cycles during the load: {cycles:.0f}, mean "
              f"{(sum1 - sum0) / max(cycles, 1):.3f} s; p50 {quantile(0.5, before, after):.3f}"
              f" s, p99 {quantile(0.99, before, after):.3f} s (interpolated in the histogram's "
              "buckets: ..., 0.5, 1, 2.5, 5, 10, 30, 60 s)")
    print(f"store: {end_memory / 2**20:.1f} MiB used at the end for {jobs_at_end:,} jobs "
          f"({(end_memory - empty) / jobs_at_end:,.0f} B per job); {stored:,} waiting")
    print(f"heartbeats: {seen.beats:,} stored, {seen.beat_errors} failed")
    if seen.died:
        print(seen.died)
    print(f"nothing lost: {'yes' if not lost else 'NO'}: {len(seen.acked) - len(lost):,} of "
          f"{len(seen.acked):,} acknowledged submissions exist"
          + (f"; missing {lost[:5]}" if lost else ""))
    kept = seen.epochs and None not in seen.epochs and len(seen.epochs) == 1 and \
        None not in seen.leaders and len(seen.leaders) == 1
    epochs = ", ".join(sorted(map(str, seen.epochs)))
    print(f"lease never lost: {'yes' if kept else 'NO'} (fencing epochs seen: {epochs}; "
          f"leaders seen: {len(seen.leaders)}, polled every 0.5 s; {seen.store_busy} polls "
          "unanswered)")
    if seen.lease_left_ms:
        left = sorted(seen.lease_left_ms)
        print(f"lease time left when polled: least {left[0] / 1000:.2f} s, median "
              f"{left[len(left) // 2] / 1000:.2f} s of 5 s (renewed every second; below 0: "
              "none held)")


def log_summary(log: Path) -> str:
    """The coordinator log's ERROR and WARNING lines, counted by message (and the first
    line of the exception each traceback ends with)."""
    if not log.exists():
        return "coordinator log: none"
    kinds: dict[str, int] = {}
    text = log.read_text().splitlines()
    for i, line in enumerate(text):
        found = re.match(r"\S+ \S+ (ERROR|WARNING) (\S+): (.{0,70})", line)
        if not found:
            continue
        after = []
        for x in text[i + 1:i + 200]:
            if re.match(r"^\d{4}-\d\d-\d\d ", x):
                break
            if re.match(r"^[\w.]+(Error|Exception)\b", x):
                after.append(x)
        cause = f" <- {after[-1][:90]}" if after else ""  # the exception the traceback ends with
        key = f"{found[1]} {found[2]}: {found[3]}{cause}"
        kinds[key] = kinds.get(key, 0) + 1
    if not kinds:
        return "coordinator log: no warnings or errors"
    ranked = sorted(kinds.items(), key=lambda kv: -kv[1])
    return "coordinator log:\n" + "\n".join(f"  {n:>5} x {k}" for k, n in ranked[:12])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 jobs, 100 agents, 20 s")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--agents", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    plan = Plan(args.jobs or base.jobs, args.agents or base.agents, args.rate or base.rate,
                args.seconds or base.seconds)
    ensure_users(SUBMITTERS)
    valkey, url = scratch_valkey()
    home = Path(tempfile.mkdtemp(prefix="labq-load-"))
    try:
        asyncio.run(bench(plan, url, home, 180.0 if args.quick else 300.0))
    finally:
        valkey.terminate()
        valkey.wait(30)
        print(log_summary(home / "coordinator.log"))
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
