"""End to end with a real Prometheus: a `labq up --simulate` stack runs a small workload while
Debian's `prometheus` scrapes its /metrics every second with deploy/'s alert rules loaded; then
every expr of every panel of every dashboard in grafana/dashboards is evaluated through
Prometheus' HTTP API and must parse and return data (some number, not only NaN), every
template variable must have values, and every alert rule must be loaded, healthy, parse, and
stay quiet on this healthy cluster (the promtool unit tests in tests/test_deploy_rules.py prove
that each one fires when it should)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.server.up import free_port, port_free
from tests.e2e_stack import Stack, python_as, wait_until
from tests.metrics_contract import coordinator_metrics

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules" / "labq.rules.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
# What Grafana puts in place of its variables; the dashboards' node/account variables are
# multi-selects whose "All" is the regex `.*`. Longest names first ($__range_s before $__range).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m", "$__interval_ms": "15000", "$__interval": "15s",
    "$__range_s": "3600", "$__range": "1h", "${node}": ".*", "$node": ".*",
    "${account}": ".*", "$account": ".*", "${user}": ".*", "$user": ".*",
}


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # a bad query is a 400 with a JSON body
            return json.loads(error.read())

    def query(self, expr: str) -> Any:
        return self.get("/api/v1/query", query=expr)

    def value(self, expr: str) -> float:
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0


def free_port_pair() -> int:
    """A port p with p and p + 1 free (one exporter per agent of a 2-node stack)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and port_free(port + 1):
            return port
    raise AssertionError("no two consecutive free ports")


def start_prometheus(target: str, home: Path, gpu_targets: list[str],
                     token_file: Path) -> Prometheus:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("Debian's prometheus is missing: apt-get install prometheus "
                    "(./scripts/test installs it when run as root)")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        # As deploy/prometheus does it: the metrics token, for the per-user series.
        "scrape_configs": [{"job_name": "labq-coordinator",
                            "authorization": {"credentials_file": str(token_file)},
                            "static_configs": [{"targets": [target]}]},
                           {"job_name": "labq-gpus",
                            "static_configs": [{"targets": gpu_targets}]}],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = home / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={home / 'prometheus.yml'}",
             f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_until(ready, 60, "prometheus to be ready")
    return prom


def run_workload(stack: Stack) -> None:
    """Jobs in every interesting state: finished, timed out (an eviction), preempted and
    requeued, running, waiting; two accounts with budgets, several users."""
    stack.labq("admin", "account", "add", "vision")
    stack.labq("admin", "user", "add", "alice", "--account", "vision")
    stack.labq("admin", "budget", "set", "--account", "vision", "--limit", "100")
    stack.labq("admin", "budget", "set", "--user", "alice", "--limit", "20")
    done = stack.submit("--as", "alice", "--", "true")
    timed_out = stack.submit("--time", "3s", "--", "sleep", "120")
    assert stack.wait_state(done, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    assert stack.wait_state(timed_out, {"TIMEOUT", "FAILED"}, timeout=60)["state"] == "TIMEOUT"
    scavengers = [stack.submit("--qos", "scavenger", "--as", "sc", "--gpus", "2", "--",
                               "sleep", "600") for _ in range(2)]
    for job_id in scavengers:
        stack.wait_state(job_id, {"RUNNING"})
    # A normal 2-GPU job takes the GPUs of one scavenger job, which is requeued.
    normal = stack.submit("--as", "alice", "--gpus", "2", "--time", "1h", "--", "sleep", "600")
    stack.wait_state(normal, {"RUNNING"}, timeout=90)
    stack.wait(lambda: any(stack.job(j)["restarts"] >= 1 for j in scavengers), timeout=30,
               what="a preempted scavenger job")
    waiting = stack.submit("--as", "bob", "--gpus", "2", "--time", "1h", "--", "sleep", "600")
    stack.wait_state(waiting, {"RUNNING"}, timeout=90)  # preempts the other scavenger job
    queued = stack.submit("--as", "carol", "--", "true")
    assert stack.job(queued)["state"] in ("PENDING", "HELD")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Stack, Prometheus]]:
    exporter_base = free_port_pair()
    stack = Stack("2x2:A100-80GB", up_args=("--exporter-port", str(exporter_base)),
                  LABQ_HEARTBEAT_INTERVAL="1").start()
    home = Path(tempfile.mkdtemp(prefix="labq-prom-"))
    prom: Prometheus | None = None
    try:
        target = urllib.parse.urlparse(stack.metrics_url).netloc
        gpu_targets = [f"127.0.0.1:{exporter_base + i}" for i in range(2)]
        prom = start_prometheus(target, home, gpu_targets,
                                stack.home / "secrets" / "metrics-token")
        wait_until(lambda: prom and prom.value('up{job="labq-coordinator"}') == 1, 30,
                 "the first successful scrape of the coordinator")
        run_workload(stack)
        # A few more scrapes after the workload, and rates over at least two samples.
        wait_until(lambda: prom and prom.value(
            'count_over_time(up{job="labq-coordinator"}[1m])') >= 20, 60, "20 scrapes")
        yield stack, prom
    finally:
        if prom is not None:
            prom.proc.terminate()
            prom.proc.wait(30)
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


def grafana_to_promql(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def dashboard_queries() -> list[tuple[str, str, str]]:
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for inner in [panel, *panel.get("panels", [])]:
                for target in inner.get("targets", []):
                    found.append((path.stem, inner["title"], target["expr"]))
    return found



def missing_metrics(prom: Prometheus) -> list[str]:
    """Contract metrics Prometheus has no series of (a histogram shows as its `_bucket`)."""
    result = prom.query('group by (__name__) ({__name__=~"labq_.+"})')["data"]["result"]
    present = {r["metric"]["__name__"] for r in result}
    return sorted(name for name in coordinator_metrics()
                  if name not in present and f"{name}_bucket" not in present)


def test_every_dashboard_expr_parses_and_returns_data(cluster: tuple[Stack, Prometheus]) -> None:
    _, prom = cluster
    queries = dashboard_queries()
    assert len(queries) > 60 and len(DASHBOARDS) == 4
    problems = []
    for board, title, expr in queries:
        answer = prom.query(grafana_to_promql(expr))
        if answer.get("status") != "success":
            problems.append(f"{board} / {title}: does not parse: {answer.get('error')}: {expr}")
        elif not answer["data"]["result"]:
            problems.append(f"{board} / {title}: no data: {expr}")
        elif all(r["value"][1] == "NaN" for r in answer["data"]["result"]):
            problems.append(f"{board} / {title}: only NaN: {expr}")
    missing = missing_metrics(prom)
    assert not problems and not missing, (
        f"{len(problems)} of {len(queries)} panel queries failed; metrics of docs/metrics.md "
        f"the coordinator does not export: {missing or 'none'}\n" + "\n".join(problems))


def test_every_template_variable_has_values(cluster: tuple[Stack, Prometheus]) -> None:
    _, prom = cluster
    checked = 0
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
            assert match, f"{path.stem}: ${variable['name']}: {variable['query']}"
            selector, label = match.groups()
            answer = prom.get(f"/api/v1/label/{label}/values", **{"match[]": selector})
            assert answer["status"] == "success" and answer["data"], (path.stem, variable)
            checked += 1
    assert checked >= 2


def test_alert_rules_are_loaded_healthy_and_quiet(cluster: tuple[Stack, Prometheus]) -> None:
    _, prom = cluster
    expected = {r["alert"]: r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"]
                for r in g["rules"]}

    def evaluated() -> list[dict[str, Any]]:
        groups = prom.get("/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else []

    rules = wait_until(evaluated, 30, "every rule to be evaluated once")
    assert {r["name"] for r in rules} == set(expected)
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
        assert rule["type"] == "alerting"
        # On this healthy cluster (one leader, nodes up, GPUs busy, budgets barely used,
        # short waits) no alert is pending or firing.
        assert rule["state"] == "inactive" and not rule["alerts"], rule
    for name, expr in expected.items():
        answer = prom.query(expr)
        assert answer["status"] == "success", (name, answer)
        assert answer["data"]["result"] == [], (name, answer["data"]["result"])


def test_agents_gpu_exporters_are_scraped(cluster: tuple[Stack, Prometheus]) -> None:
    """`labq up --exporter-port P` gives each agent its own port; Prometheus sees every GPU
    under NVIDIA's dcgm-exporter names, labelled by node (Hostname) and GPU."""
    stack, prom = cluster
    wait_until(lambda: prom.value('count(up{job="labq-gpus"} == 1)') == 2, 30,
             "both agents' exporters scraped")
    result = prom.query("DCGM_FI_DEV_FB_USED")["data"]["result"]
    seen = {(r["metric"]["Hostname"], r["metric"]["gpu"]) for r in result}
    assert seen == {(f"sim-{n}", str(g)) for n in range(2) for g in range(2)}
    assert all(r["metric"]["UUID"].startswith("SIM-") for r in result)
    assert "dcgm-exporter names" in "".join(stack.output)


def test_others_scrape_no_per_user_series(cluster: tuple[Stack, Prometheus]) -> None:
    """Issue 18: /metrics showed every user's usage, fair share and budget to anyone. Under
    private_data a scrape without the metrics token (here: as an unprivileged user) gets the
    cluster and per-account series only; Prometheus, holding the token, gets every series."""
    stack, prom = cluster
    code = (f"import urllib.request; print(urllib.request.urlopen({stack.metrics_url!r}, "
            "timeout=30).read().decode())")
    seen = python_as("bob", code)
    assert seen.returncode == 0, seen.stderr
    assert "labq_jobs{" in seen.stdout and 'account="vision"' in seen.stdout
    assert 'user="' not in seen.stdout.replace('user=""', "")
    assert prom.value('count(labq_pending_jobs{user="bob"})') >= 1
