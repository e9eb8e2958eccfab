"""The agent's optional exporter with NVIDIA dcgm-exporter names: exposition, HTTP, the CLI, and
NVIDIA dashboard 12239's queries evaluated by a real Prometheus scraping it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.agent import Agent
from agents.backends.simulated import SimulatedBackend
from agents.dcgm_exporter import (
    LABELS,
    METRIC_NAMES,
    Exporter,
    ExporterError,
    registry_for,
    serving_agent,
)
from scheduler.model import GpuInfo, NodeReport
from scheduler.server.up import free_port
from scheduler.store import Store

MIB = 2**20
GIB = 2**30


def fake_proc(root: Path, pid: int, env: dict[str, str]) -> None:
    folder = root / str(pid)
    folder.mkdir(parents=True)
    (folder / "environ").write_bytes(b"".join(f"{k}={v}\0".encode() for k, v in env.items()))
    (folder / "comm").write_text("python\n")


class CountingBackend(SimulatedBackend):
    """The simulated backend, counting its reads (to prove a scrape never reads the GPUs)."""

    reads = 0

    def read(self) -> list[GpuInfo]:
        self.reads += 1
        return super().read()


def parse(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def series(families: dict[str, Any], name: str) -> dict[str, tuple[dict[str, str], float]]:
    """gpu index -> (labels, value) of one family."""
    return {s.labels["gpu"]: (s.labels, s.value) for s in families[name].samples}


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers.get("Content-Type", ""), response.read().decode()


async def test_exposition_from_the_agents_last_snapshot(store: Store, tmp_path: Path) -> None:
    fake_proc(tmp_path, 4242, {"LABQ_NODE": "gpu-a", "CUDA_VISIBLE_DEVICES": "1"})
    clock = [1_000.0]
    backend = CountingBackend("gpu-a", 2, "A100-80GB", proc_root=str(tmp_path),
                              clock=lambda: clock[0])
    agent = Agent(store, backend, "gpu-a")
    assert agent.last_snapshot is None
    assert generate_latest(registry_for(lambda: agent.last_snapshot)) == b""  # nothing read yet

    await agent.beat_once(time.time())
    assert backend.reads == 1
    stored = {g.index: g for g in (await store.nodes())[0].gpus}  # what the scheduler got
    registry = registry_for(lambda: agent.last_snapshot)
    text = generate_latest(registry).decode()
    clock[0] += 500  # the simulated GPUs would now read differently: the scrape must not read
    assert generate_latest(registry).decode().split("labq_agent")[0] == text.split("labq_agent")[0]
    assert backend.reads == 1

    families = parse(text)
    assert set(METRIC_NAMES) <= set(families)
    for name in METRIC_NAMES:
        assert families[name].type == "gauge"
        for labels, _ in series(families, name).values():
            assert set(labels) == set(LABELS)
    util = series(families, "DCGM_FI_DEV_GPU_UTIL")
    labels, value = util["1"]
    assert labels == {"gpu": "1", "UUID": "SIM-gpu-a-1", "device": "nvidia1",
                      "modelName": "A100-80GB", "Hostname": "gpu-a"}
    assert stored[1].utilization is not None
    assert value == round(stored[1].utilization * 100) and 0 <= value <= 100  # percent
    assert util["0"][1] == 0.0  # no process uses GPU 0: 0 is a read value, so it is served
    for index in ("0", "1"):
        gpu = stored[int(index)]
        used = series(families, "DCGM_FI_DEV_FB_USED")[index][1]
        free = series(families, "DCGM_FI_DEV_FB_FREE")[index][1]
        total = series(families, "DCGM_FI_DEV_FB_TOTAL")[index][1]
        assert gpu.memory_used_bytes is not None
        assert used == gpu.memory_used_bytes // MIB and total == 80 * 1024  # MiB
        assert used + free == total
        assert series(families, "DCGM_FI_DEV_POWER_USAGE")[index][1] == gpu.power_watts  # W
        assert series(families, "DCGM_FI_DEV_GPU_TEMP")[index][1] == gpu.temperature_c  # C
    assert families["DCGM_FI_DEV_GPU_UTIL"].documentation == "GPU utilization (in %)."
    assert families["DCGM_FI_DEV_FB_FREE"].documentation == "Framebuffer memory free (in MiB)."
    age = families["labq_agent_snapshot_age_seconds"].samples[0].value
    assert 0 <= age < 30


def test_fields_the_backend_could_not_read_are_left_out() -> None:
    lost = GpuInfo(index=1, uuid="UNKNOWN-1", model="unknown", memory_total_bytes=None,
                   memory_used_bytes=None, utilization=None, health="LOST")
    partial = GpuInfo(index=0, uuid="GPU-0a", model="NVIDIA A40", memory_total_bytes=48 * GIB,
                      memory_used_bytes=None, utilization=0.25, power_watts=None,
                      temperature_c=51.0)
    report = NodeReport(name="n1", gpus=[partial, lost])
    families = parse(generate_latest(registry_for(lambda: (100.0, report),
                                                  clock=lambda: 103.0)).decode())
    assert set(series(families, "DCGM_FI_DEV_GPU_UTIL")) == {"0"}
    assert series(families, "DCGM_FI_DEV_GPU_UTIL")["0"][1] == 25.0
    assert set(series(families, "DCGM_FI_DEV_GPU_TEMP")) == {"0"}
    assert set(series(families, "DCGM_FI_DEV_FB_TOTAL")) == {"0"}
    for name in ("DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"):
        assert name not in families  # no GPU could read it: no series at all, never a 0
    assert families["labq_agent_snapshot_age_seconds"].samples[0].value == 3.0


def test_a_stale_snapshot_serves_only_its_age() -> None:
    gpu = GpuInfo(index=0, uuid="GPU-1", model="T4", memory_total_bytes=16 * GIB,
                  memory_used_bytes=GIB, utilization=0.5)
    families = parse(generate_latest(registry_for(
        lambda: (100.0, NodeReport(name="n1", gpus=[gpu])), max_age_s=60,
        clock=lambda: 200.0)).decode())
    assert set(families) == {"labq_agent_snapshot_age_seconds"}
    assert families["labq_agent_snapshot_age_seconds"].samples[0].value == 100.0


def test_http_scrape_of_a_running_exporter() -> None:
    gpu = GpuInfo(index=3, uuid="GPU-3f", model="NVIDIA H100 80GB HBM3",
                  memory_total_bytes=80 * GIB, memory_used_bytes=10 * GIB, utilization=0.875,
                  power_watts=312.5, temperature_c=64.0)
    snapshot = (time.time(), NodeReport(name="node-7", gpus=[gpu]))
    exporter = Exporter(lambda: snapshot, "127.0.0.1", 0)
    try:
        assert exporter.port > 0
        content_type, text = scrape(exporter.url)
        assert content_type.startswith("text/plain")
        families = parse(text)
        assert series(families, "DCGM_FI_DEV_GPU_UTIL")["3"] == (
            {"gpu": "3", "UUID": "GPU-3f", "device": "nvidia3",
             "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "node-7"}, 88.0)
        assert series(families, "DCGM_FI_DEV_FB_FREE")["3"][1] == 70 * 1024
        assert series(families, "DCGM_FI_DEV_POWER_USAGE")["3"][1] == 312.5
        with pytest.raises(ExporterError, match=f"127.0.0.1:{exporter.port}.*--exporter-port"):
            Exporter(lambda: snapshot, "127.0.0.1", exporter.port)  # taken: a clear error
    finally:
        exporter.close()


async def test_serving_agent_is_off_without_an_address(store: Store, tmp_path: Path) -> None:
    agent = Agent(store, SimulatedBackend("n1", 1, proc_root=str(tmp_path)), "n1")
    with serving_agent(agent, None) as exporter:
        assert exporter is None
    with serving_agent(agent, ("127.0.0.1", 0)) as exporter:
        assert exporter is not None
        agent.report()
        assert "DCGM_FI_DEV_GPU_UTIL{" in scrape(exporter.url)[1]


@pytest.fixture
def agent_with_exporter(valkey_url: str) -> Iterator[tuple[str, str]]:
    """`labq agent --simulate 2:A100-80GB` with LABQ_EXPORTER_PORT set: (metrics url, prefix)."""
    port, prefix = free_port(), f"t{uuid.uuid4().hex[:8]}:"
    home = tempfile.mkdtemp(prefix="labq-exp-")
    env = {**os.environ, "LABQ_HOME": home, "LABQ_REDIS_URL": valkey_url,
           "LABQ_REDIS_PREFIX": prefix, "LABQ_HEARTBEAT_INTERVAL": "0.5",
           "LABQ_EXPORTER_PORT": str(port), "LABQ_EXPORTER_HOST": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "agent", "--node", "lab-n1",
                             "--simulate", "2:A100-80GB"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{port}/metrics", prefix
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        shutil.rmtree(home, ignore_errors=True)
    assert "Traceback" not in err, err


def wait_for_gpus(url: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            families = parse(scrape(url)[1])
            if "DCGM_FI_DEV_FB_FREE" in families:
                return families
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no DCGM series at {url} within {timeout}s")
        time.sleep(0.2)


async def test_labq_agent_serves_the_exporter(agent_with_exporter: tuple[str, str],
                                              valkey_url: str) -> None:
    url, prefix = agent_with_exporter
    families = wait_for_gpus(url)
    free = series(families, "DCGM_FI_DEV_FB_FREE")
    assert {labels["UUID"] for labels, _ in free.values()} == {"SIM-lab-n1-0", "SIM-lab-n1-1"}
    assert {labels["Hostname"] for labels, _ in free.values()} == {"lab-n1"}
    assert all(value == 80 * 1024 for _, value in free.values())
    store = Store.from_url(valkey_url, prefix)
    try:
        nodes = await store.nodes()  # the same agent heartbeats to the store as usual
        assert [n.name for n in nodes] == ["lab-n1"]
        assert [g.uuid for g in nodes[0].gpus] == ["SIM-lab-n1-0", "SIM-lab-n1-1"]
    finally:
        await store.close()


def test_labq_agent_refuses_a_bad_exporter_port() -> None:
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "agent", "--simulate", "1",
                             "--exporter-port", "70000"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "--exporter-port" in result.stderr and "70000" in result.stderr


def promql(base: str, expr: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{base}/api/v1/query?{query}", timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


# Queries of NVIDIA's dashboard 12239 (grafana/dcgm-exporter-dashboard.json in NVIDIA/dcgm-exporter)
# for the fields served, with its $Hostname and $gpu variables set to "All" (.*).
DASHBOARD_12239 = {
    "GPU Temperature": 'max(DCGM_FI_DEV_GPU_TEMP{Hostname=~".*", gpu=~".*"}) '
                       'by (Hostname, gpu, uuid)',
    "GPU Avg. Temp": 'avg(DCGM_FI_DEV_GPU_TEMP{Hostname=~".*", gpu=~".*"})',
    "GPU Power Usage": 'max(DCGM_FI_DEV_POWER_USAGE{Hostname=~".*", gpu=~".*"}) '
                       'by (Hostname, gpu, uuid)',
    "GPU Power Total": 'sum(max(DCGM_FI_DEV_POWER_USAGE{Hostname=~".*", gpu=~".*"}) by (gpu))',
    "GPU Framebuffer Mem Used": 'max(DCGM_FI_DEV_FB_USED{Hostname=~".*", gpu=~".*"}) '
                                'by (Hostname, gpu, GPU_I_ID, GPU_I_PROFILE)',
    "GPU Utilization (earlier revisions)": 'DCGM_FI_DEV_GPU_UTIL{Hostname=~".*", gpu=~".*"}',
    "variable Hostname": "group by (Hostname) (DCGM_FI_DEV_FB_FREE)",
    "variable gpu": 'group by (gpu) (DCGM_FI_DEV_FB_FREE{Hostname=~"lab-n1"})',
}


def test_dashboard_12239_queries_return_data_from_a_real_prometheus(
        agent_with_exporter: tuple[str, str], tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("Debian's prometheus is not installed: apt-get install prometheus")
    url, _ = agent_with_exporter
    wait_for_gpus(url)
    target = urllib.parse.urlparse(url).netloc
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: dcgm\n    static_configs: [{{targets: ['{target}']}}]\n")
    port = free_port()
    proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if len(promql(base, "DCGM_FI_DEV_GPU_UTIL")) == 2:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus never scraped the exporter"
            time.sleep(0.5)
        for panel, expr in DASHBOARD_12239.items():
            assert promql(base, expr), f"{panel}: {expr} returned no data"
        gpus = {r["metric"]["gpu"] for r in promql(base, DASHBOARD_12239["variable gpu"])}
        assert gpus == {"0", "1"}
        # Simulated idle GPUs draw some power: the sum is the sum of both GPUs' draws.
        total = float(promql(base, DASHBOARD_12239["GPU Power Total"])[0]["value"][1])
        assert total > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
