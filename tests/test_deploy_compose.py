"""deploy/compose: the trial cluster on one host. Brought up, and its /metrics read, where a
container engine runs; everywhere, its files are checked against what each service needs (the
repository's paths, the labq config as labq loads it, the ports, Prometheus' targets with
promtool, Grafana's provisioning)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.config import Settings
from scheduler.server.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
LABQ_SERVICES = ("coordinator", "gpu1", "gpu2")
PORT = re.compile(r"^127\.0\.0\.1:\$\{(\w+):-(\d+)\}:(\d+)$")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def published(service: str) -> dict[int, tuple[str, int]]:
    """container port -> (the variable that moves it, its default host port)."""
    out = {}
    for spec in services()[service].get("ports", []):
        match = PORT.match(spec)
        assert match, f"{service}: publish on 127.0.0.1 with a movable port, not {spec!r}"
        out[int(match.group(3))] = (match.group(1), int(match.group(2)))
    return out


def trial_settings(tmp_path: Path) -> Settings:
    shutil.copy(COMPOSE_DIR / "config.toml", tmp_path / "config.toml")
    return Settings.load(home=tmp_path)


def test_the_trial_has_its_six_services_each_with_an_image_or_a_build() -> None:
    found = services()
    assert set(found) == {"valkey", "coordinator", "gpu1", "gpu2", "prometheus", "grafana"}
    for name, service in found.items():
        assert "image" in service or "build" in service, name
        build = service.get("build")
        if build:
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert (context / "pyproject.toml").is_file(), name  # the repository's root
            assert (context / build["dockerfile"]).is_file(), name
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    assert re.search(r"(?m)^FROM python:3\.11-slim$", dockerfile)
    assert "pip install" in dockerfile and "useradd --system" in dockerfile
    assert f" {services()['coordinator']['user']}" in dockerfile  # the user it runs as exists


def test_every_mounted_path_is_in_the_repository_and_every_volume_is_declared() -> None:
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        for spec in service.get("volumes", []):
            source, target = spec.split(":")[:2]
            assert target.startswith("/"), (name, spec)
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), (name, spec)
            else:
                assert source in declared, (name, spec)


def test_the_ports_are_local_and_match_what_the_services_listen_on(tmp_path: Path) -> None:
    settings = trial_settings(tmp_path)
    assert set(published("coordinator")) == {settings.metrics_port}
    assert set(published("prometheus")) == {9090, 3000}  # 3000: Grafana, in its network
    assert services()["grafana"]["network_mode"] == "service:prometheus"
    assert not published("valkey") and not any(published(n) for n in ("gpu1", "gpu2"))
    variables = [v for s in services() for v, _ in published(s).values()]
    assert len(variables) == len(set(variables))


def test_the_labq_config_loads_and_the_daemons_find_each_other(tmp_path: Path) -> None:
    settings = trial_settings(tmp_path)
    assert settings.redis_url == "redis://valkey:6379/0" and "valkey" in services()
    assert settings.api_host == "0.0.0.0"  # Prometheus, another container, scrapes it
    assert settings.cgroup_root == "none"  # no cgroup tree of their own in containers
    coordinator = services()["coordinator"]
    assert coordinator["command"] == ["labq", "coordinator"]
    assert coordinator["environment"]["LABQ_SOCKET"] == str(settings.socket)
    assert coordinator["environment"]["LABQ_HOME"] == "/var/lib/labq"
    assert coordinator["user"] == "labq"
    nodes = []
    for name in ("gpu1", "gpu2"):
        agent = services()[name]
        command = agent["command"]
        assert command[:2] == ["labq", "agent"] and "user" not in agent  # root, as on a node
        spec = command[command.index("--simulate") + 1]
        count, _, model = spec.partition(":")
        assert 1 <= int(count) <= 16 and model  # as `labq agent --simulate` takes it
        nodes.append(command[command.index("--node") + 1])
        assert agent["environment"]["LABQ_HOME"] != coordinator["environment"]["LABQ_HOME"]
    assert nodes == ["gpu1", "gpu2"]
    for name in LABQ_SERVICES:
        mounts = {spec.split(":")[1]: spec.split(":")[0] for spec in services()[name]["volumes"]}
        assert mounts["/etc/labq/config.toml"] == "./config.toml"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool here")
def test_prometheus_config_checks_with_its_rules_and_targets_the_services(
        tmp_path: Path) -> None:
    """promtool on the files as the Prometheus container sees them."""
    mounts = {spec.split(":")[1]: COMPOSE_DIR / spec.split(":")[0]
              for spec in services()["prometheus"]["volumes"]}
    etc = tmp_path / "etc/prometheus"
    etc.mkdir(parents=True)
    shutil.copy(mounts["/etc/prometheus/prometheus.yml"], etc / "prometheus.yml")
    shutil.copytree(mounts["/etc/prometheus/rules"], etc / "rules")
    result = subprocess.run(["promtool", "check", "config", str(etc / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "labq.rules.yml" in result.stdout  # its rules were found and checked
    config = yaml.safe_load((etc / "prometheus.yml").read_text())
    targets = {job["job_name"]: {t for c in job["static_configs"] for t in c["targets"]}
               for job in config["scrape_configs"]}
    metrics_port = trial_settings(tmp_path).metrics_port
    assert targets["labq-coordinator"] == {f"coordinator:{metrics_port}"}
    exporters = set()
    for name in ("gpu1", "gpu2"):
        command = services()[name]["command"]
        exporters.add(f"{name}:{command[command.index('--exporter-port') + 1]}")
    assert targets["labq-gpu-exporter"] == exporters


def test_grafana_gets_the_repositorys_provisioning_and_reaches_prometheus() -> None:
    mounts = {spec.split(":")[1]: (COMPOSE_DIR / spec.split(":")[0]).resolve()
              for spec in services()["grafana"]["volumes"]}
    provisioning = ROOT / "grafana" / "provisioning"
    assert mounts["/etc/grafana/provisioning/datasources"] == provisioning / "datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == provisioning / "dashboards"
    provider = yaml.safe_load((provisioning / "dashboards" / "labq.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts[path] == ROOT / "grafana" / "dashboards"
    assert list(mounts[path].glob("*.json"))
    source = yaml.safe_load((provisioning / "datasources" / "labq.yaml").read_text())
    url = source["datasources"][0]["url"]
    # localhost in Grafana's network namespace, which is Prometheus'
    assert url == "http://localhost:9090" and 9090 in published("prometheus")


def engine() -> list[str] | None:
    """`docker compose` or `podman compose`, when it exists; None otherwise."""
    for tool in ("docker", "podman"):
        if shutil.which(tool) and subprocess.run([tool, "compose", "version"],
                                                 capture_output=True).returncode == 0:
            return [tool, "compose"]
    return None


def engine_runs(command: list[str]) -> bool:
    return subprocess.run([command[0], "info"], capture_output=True, timeout=60).returncode == 0


@pytest.mark.skipif(engine() is None, reason="no docker compose or podman compose here")
def test_the_compose_tool_accepts_the_file() -> None:
    command = engine()
    assert command is not None
    result = subprocess.run([*command, "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def scrape(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def gauge_sum(body: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


@pytest.mark.e2e
@pytest.mark.timeout(1800)
@pytest.mark.skipif(engine() is None, reason="no docker compose or podman compose here")
def test_the_trial_cluster_comes_up_and_serves_its_gpus() -> None:
    command = engine()
    assert command is not None
    if not engine_runs(command):
        pytest.skip(f"{command[0]} is installed but its engine does not run here")
    ports = {"LABQ_TRIAL_METRICS_PORT": free_port(), "LABQ_TRIAL_PROMETHEUS_PORT": free_port(),
             "LABQ_TRIAL_GRAFANA_PORT": free_port()}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}}
    project = [*command, "-p", f"labq-test-{uuid.uuid4().hex[:8]}", "-f", str(COMPOSE)]
    try:
        up = subprocess.run([*project, "up", "-d", "--build"], env=env, capture_output=True,
                            text=True, timeout=1500)
        assert up.returncode == 0, up.stderr[-4000:]
        metrics = f"http://127.0.0.1:{ports['LABQ_TRIAL_METRICS_PORT']}/metrics"
        deadline, body = time.monotonic() + 180, ""
        while time.monotonic() < deadline:
            try:
                body = scrape(metrics)
                if gauge_sum(body, "labq_node_up") == 2 and \
                        gauge_sum(body, "labq_gpus_capacity") == 4:
                    break
            except OSError:
                pass
            time.sleep(2)
        assert gauge_sum(body, "labq_node_up") == 2, body[-2000:]
        assert gauge_sum(body, "labq_gpus_capacity") == 4
        submit = subprocess.run([*project, "exec", "-T", "-u", "alice", "-w", "/work",
                                 "coordinator", "labq", "submit", "--gpus", "1", "--", "true"],
                                env=env, capture_output=True, text=True, timeout=120)
        assert submit.returncode == 0, submit.stderr
        targets_url = (f"http://127.0.0.1:{ports['LABQ_TRIAL_PROMETHEUS_PORT']}"
                       "/api/v1/targets")
        deadline = time.monotonic() + 120
        health: set[str] = set()
        while time.monotonic() < deadline and health != {"up"}:
            try:
                active = json.loads(scrape(targets_url))["data"]["activeTargets"]
                health = {t["health"] for t in active} if len(active) == 3 else set()
            except OSError:
                pass
            time.sleep(3)
        assert health == {"up"}
        search = f"http://127.0.0.1:{ports['LABQ_TRIAL_GRAFANA_PORT']}/api/search?query=labq"
        deadline = time.monotonic() + 120
        boards: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(boards) < 4:
            try:
                boards = [d for d in json.loads(scrape(search)) if d.get("type") == "dash-db"]
            except OSError:
                pass
            time.sleep(3)
        assert len(boards) == 4
    finally:
        subprocess.run([*project, "down", "-v", "--timeout", "5"], env=env,
                       capture_output=True, timeout=300)
