"""grafana/: the committed dashboards are what grafana/generate.py builds with
grafana-foundation-sdk, round-trip through the SDK's models unchanged, query only the
`${datasource}` variable (never `__inputs`), use only metrics of the contract in docs/metrics.md,
and the provisioning files point Grafana at them. That every expr parses and returns data from a
real Prometheus is tests/test_prometheus_e2e.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as m
from grafana_foundation_sdk.models import prometheus

from grafana import generate
from grafana.panels import PROVISIONED_UID
from tests.metrics_contract import coordinator_metrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
FILES = sorted(DASHBOARDS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    out = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out



def metrics_in(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", name)
            for name in re.findall(r"\blabq_[a-z_]+", expr)}


def test_the_four_dashboards_are_committed_exactly_as_generated() -> None:
    assert [p.name for p in FILES] == sorted(generate.rendered())
    assert len(FILES) == 4
    for path in FILES:
        assert path.read_text() == generate.rendered()[path.name], (
            f"{path} is out of date: run .venv/bin/python -m grafana.generate")
    assert generate.main(["--check"]) == 0


def test_check_mode_notices_a_stale_file(tmp_path: Path) -> None:
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    stale = tmp_path / FILES[0].name
    stale.write_text(stale.read_text().replace("labq_", "labx_", 1))
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_dashboard_round_trips_through_the_sdk_models(path: Path) -> None:
    plugins.register_default_plugins()
    data = load(path)
    model = m.Dashboard.from_json(data)
    assert json.loads(json.dumps(model, cls=JSONEncoder)) == data
    assert model.panels
    for panel in model.panels:
        if isinstance(panel, m.Panel):
            assert panel.targets, panel.title
            # The SDK decoded each query as a Prometheus query, not an unknown bag of keys.
            assert all(isinstance(t, prometheus.Dataquery) for t in panel.targets), panel.title


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_dashboard_uses_the_datasource_variable_and_never_inputs(path: Path) -> None:
    text = path.read_text()
    board = load(path)
    assert "__inputs" not in text and "${DS_" not in text
    variables = {v["name"]: v for v in board["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    assert datasource["current"]["value"] == PROVISIONED_UID
    ref = {"type": "prometheus", "uid": "${datasource}"}
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == ref
    assert board["uid"].startswith("labq-") and "labq" in board["tags"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        assert panel["datasource"] == ref, panel["title"]
        assert panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and all(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == ref
            assert target["expr"].strip(), panel["title"]
            named = {n for n in re.findall(r"\$\{?(\w+)", target["expr"])
                     if not n.startswith("__")}  # Grafana's own: $__rate_interval, $__range
            assert named <= set(variables) - {"datasource"}, (panel["title"], named)


def test_dashboards_use_only_the_contract_and_cover_all_of_it() -> None:
    contract = coordinator_metrics()
    assert len(contract) > 25
    used: set[str] = set()
    for path in FILES:
        board = load(path)
        for panel in panels(board):
            for target in panel["targets"]:
                found = metrics_in(target["expr"])
                assert found, f"{path.name}: {panel['title']} queries no labq metric"
                assert found <= contract, f"{path.name}: {panel['title']}: {found - contract}"
                used |= found
    assert used == contract, f"contract metrics no dashboard shows: {contract - used}"


def test_titles_and_uids_are_unique() -> None:
    boards = [load(p) for p in FILES]
    assert len({b["uid"] for b in boards}) == len(boards)
    assert {b["title"] for b in boards} == {
        "labq / Cluster overview", "labq / Users and budgets", "labq / Nodes and GPUs",
        "labq / Scheduler health"}


def test_provisioning_points_grafana_at_the_datasource_and_the_dashboards() -> None:
    [source] = yaml.safe_load((PROVISIONING / "datasources" / "labq.yaml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus" and source["uid"] == PROVISIONED_UID
    assert source["url"].startswith("http")
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "labq.yaml").read_text())[
        "providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
