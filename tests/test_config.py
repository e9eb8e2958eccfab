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
    assert settings.fairshare_algorithm == "fair_now"
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


def test_sections_name_the_same_settings(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        "[nodes]\ntimeout_s = 20\ncgroup_root = 'none'\n[idle]\nthreshold = 0.1\n"
        "[store]\nprefix = 'lab:'\n[priority.weights]\nage = 5\n")
    settings = Settings.load(tmp_path)
    assert (settings.node_timeout_s, settings.cgroup_root) == (20, "none")
    assert settings.idle_gpu_threshold == 0.1 and settings.redis_prefix == "lab:"
    assert settings.priority_weights == {"age": 5}


@pytest.mark.parametrize(("text", "message"), [
    # A wrong type stops the daemon at load, with the key as the file writes it.
    ("[nodes]\ntimeout_s = '20'", "[nodes] timeout_s = '20' in "),
    ("node_timeout_s = '20'", "[nodes] timeout_s = '20' in "),
    ("[limits]\nprivate_data = 'no'", "expected true or false"),
    ("[limits]\nmax_array_size = 10.5", "expected a whole number"),
    ("[api]\nadmins = 'alice'", "expected a list of strings"),
    ("[fairshare]\nsemesters = [['2026-09-01']]", "date pairs"),
    ("[priority.weights]\nfairshare = 'high'", "expected a table of numbers"),
    ("[priority.weights]\nluck = 3", "unknown weight(s) luck"),
    ("[idle]\ncolour = 1", "unknown key 'colour' in [idle]"),
    ("idle = 3", "[idle] must be a section"),
])
def test_a_wrong_key_or_type_is_one_line_at_load(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(text + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        Settings.load(tmp_path)
    assert "\n" not in str(caught.value)


def test_the_system_config_is_read_when_labq_home_has_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import scheduler.config as config

    system = tmp_path / "etc-labq.toml"
    system.write_text("[nodes]\ntimeout_s = 120\n")
    monkeypatch.setattr(config, "SYSTEM_CONFIG", system)
    home = tmp_path / "home"
    home.mkdir()
    assert Settings.load(home).node_timeout_s == 120
    (home / "config.toml").write_text("[nodes]\ntimeout_s = 60\n")  # LABQ_HOME's own wins
    assert Settings.load(home).node_timeout_s == 60


def test_fair_now_is_the_default_fair_share() -> None:
    """Issue 12: fair now (GPUs held now + Fair Tree on the past) is what a lab gets."""
    assert Settings(Path("/nonexistent")).fairshare_algorithm == "fair_now"
