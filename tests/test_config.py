"""Settings: config.toml as the README shows it, and the errors for a bad one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scheduler.config import ConfigError, Settings

README_EXAMPLE = Path(__file__).resolve().parent.parent / "README.md"


def readme_toml() -> str:
    text = README_EXAMPLE.read_text()
    return text.split("```toml\n", 1)[1].split("```", 1)[0]


def test_the_readme_config_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LABQ_ADMINS", "LABQ_FAIRSHARE", "LABQ_HALF_LIFE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "config.toml").write_text(readme_toml())
    settings = Settings.load(tmp_path)
    assert settings.admins == ["prof-x"]
    assert settings.fairshare_algorithm == "fair_tree"
    assert settings.priority_weights["fairshare"] == 10000
    assert settings.qos_names == ("normal", "scavenger")
    assert settings.billing_weight("NVIDIA H100 80GB HBM3") == 4.0
    assert settings.semesters[0] == ["2026-09-01", "2027-01-31"]


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.toml").write_text('metrics_port = 1000\nnode_timeout_s = 5\n')
    monkeypatch.setenv("LABQ_METRICS_PORT", "2000")
    assert Settings.load(tmp_path).metrics_port == 2000
    assert Settings.load(tmp_path, metrics_port=3000).metrics_port == 3000
    assert Settings.load(tmp_path).node_timeout_s == 5


@pytest.mark.parametrize(("text", "message"), [
    ("metrics_port = ", "config.toml"),
    ("colour = 'blue'", "unknown setting(s) colour"),
])
def test_a_bad_config_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.load(tmp_path)
