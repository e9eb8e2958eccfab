"""deploy/prometheus: the scrape config and the alert rules, checked and unit-tested by promtool.

The rule unit tests (deploy/prometheus/tests/labq.rules.test.yml) prove each alert fires when it
should and stays quiet when it should not; the mutation tests here prove those unit tests would
notice an alert that never fires or always fires.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules" / "labq.rules.yml"
RULE_TESTS = PROM / "tests" / "labq.rules.test.yml"
ALERTS = {"LabqNodeDown", "LabqGpuAllocatedIdle", "LabqBudgetAlmostSpent",
          "LabqNoCoordinatorLeader", "LabqQueueWaitHigh", "LabqJobWaitingLong",
          "LabqStoreNearlyFull", "LabqGpuUnhealthy", "LabqSeveralCoordinatorLeaders",
          "LabqStoreDown", "LabqTargetDown", "LabqJobsFailing"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is missing: install Debian's `prometheus` package "
                    "(apt-get install prometheus; ./scripts/test does it when run as root)")
    return path


def run_promtool(*args: str | Path, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_config_is_valid_and_loads_the_rules(tmp_path: Path) -> None:
    # As installed: the folder, with the metrics token it names beside it.
    shutil.copytree(PROM, tmp_path / "prometheus")
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    token = next(job["authorization"]["credentials_file"] for job in config["scrape_configs"]
                 if job["job_name"] == "labq-coordinator")
    assert not token.startswith("/")  # beside prometheus.yml, wherever the folder goes
    (tmp_path / "prometheus" / token).write_text("a-token\n")
    result = run_promtool("check", "config", "prometheus.yml", cwd=tmp_path / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert all(t.endswith(":9464") for c in jobs["labq-coordinator"] for t in c["targets"])
    # Each GPU exporter carries its labq node name, so a drained node's raises no alert.
    for entry in jobs["labq-gpu-exporter"]:
        [target] = entry["targets"]
        assert target.endswith(":9400") and entry["labels"]["node"] == target.split(":")[0]


def test_rules_are_valid() -> None:
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_alert_says_what_happened_and_what_to_do() -> None:
    found = rules()
    assert {r["alert"] for r in found} == ALERTS
    for rule in found:
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert set(annotations) == {"summary", "description"}, rule["alert"]
        assert len(annotations["description"]) > 150, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]  # type: ignore[index]


def test_no_node_alert_fires_for_a_drained_node() -> None:
    """An admin's drain takes a node down or idle on purpose: every alert about a node or its
    GPUs or exporter leaves drained nodes out (a removed node has no series at all)."""
    for rule in rules():
        expr = str(rule["expr"])
        if rule["alert"] in ("LabqNodeDown", "LabqGpuUnhealthy", "LabqTargetDown"):
            assert "unless on (node) max by (node) (labq_node_drained) == 1" in expr, rule


def test_rule_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = RULE_TESTS.read_text()
    for alert in ALERTS:
        assert f"alertname: {alert}" in tested


@pytest.mark.parametrize("alert", sorted(ALERTS))
@pytest.mark.parametrize("broken", ["vector(0) > 1", "vector(1)"], ids=["never", "always"])
def test_rule_unit_tests_catch_an_alert_that_never_or_always_fires(
    alert: str, broken: str, tmp_path: Path
) -> None:
    doc = yaml.safe_load(RULES.read_text())
    [rule] = [r for g in doc["groups"] for r in g["rules"] if r["alert"] == alert]
    rule["expr"] = broken
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(yaml.safe_dump(doc))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    result = run_promtool("test", "rules", Path("tests") / RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0, f"{alert} with expr {broken!r} still passed its unit tests"
    assert f"alertname: {alert}" in result.stdout + result.stderr
