"""`labq config check FILE`: every wrong key, type or range, one line each; and the daemons
refuse the same settings when they load them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli.config_cmd import config
from scheduler.config import SPECS, ConfigError, Settings
from scheduler.configcheck import RULES, file_problems

README = Path(__file__).resolve().parent.parent / "README.md"

BAD = """
[api]
metrics_port = 99999
port = -5
bogus = 1
[billing.weights]
H100 = -1
A100 = "x"
[idle]
threshold = 1.5
after_s = 100
stop_after_s = 50
[nodes]
timeout_s = nan
state_dir = "rel/dir"
[fairshare]
semesters = [["2026-09-01", "2026-01-01"]]
[scheduler]
default_time_limit_s = 7200
max_time_limit_s = 3600
[wat]
x = 1
"""


def _check(path: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(config, ["check", str(path)])
    return result.exit_code, result.output.splitlines()


def test_every_problem_is_named_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(BAD)
    before = path.read_bytes()
    code, lines = _check(path)
    assert code == 1
    assert all(line.startswith(f"{path}: ") for line in lines)
    text = "\n".join(lines)
    for words in ("unknown key 'bogus' in [api]", "unknown section [wat]",
                  "[api] metrics_port = 99999: give a port from 0 to 65535",
                  "[api] port = -5: give a port",
                  "[billing] weights: H100 = -1: billing weights must be numbers above 0",
                  "[billing] weights: A100 = 'x': expected a number",
                  "[idle] threshold = 1.5: give a number from 0 to 1",
                  "[nodes] timeout_s = nan: give seconds above 0",
                  "[nodes] state_dir = 'rel/dir': give an absolute path",
                  "the end comes before the start",
                  "[idle] stop_after_s = 50 must be at least [idle] after_s = 100",
                  "[scheduler] max_time_limit_s = 3600 must be at least"):
        assert words in text, words
    assert len(lines) == 12
    assert path.read_bytes() == before  # nothing written


def test_a_good_file_is_ok(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[api]\nadmins = ['prof-x']\nport = 6818\n[billing.weights]\nH100 = 4.5\n")
    assert _check(path) == (0, [f"ok: {path}"])


def test_the_readme_example_is_ok(tmp_path: Path) -> None:
    text = README.read_text()
    start = text.index("```toml\n[api]\nadmins")
    body = text[start + len("```toml\n"):text.index("```", start + 7)]
    path = tmp_path / "config.toml"
    path.write_text(body)
    assert _check(path) == (0, [f"ok: {path}"])


@pytest.mark.parametrize(("text", "words"), [
    ("[api\n", "not TOML"),
    ("api = 3\n", "[api] must be a section"),
    ("nodez = 3\n", "unknown key 'nodez' (not a setting)"),
    ("[api]\nmetrics_port = '9464'\n", "[api] metrics_port = '9464'"),
    ("metrics_port = 1\n[api]\nmetrics_port = 2\n", "set twice"),
    ("[store]\nurl = 'http://x'\n", "use redis://"),
    ("[store]\nprefix = 'a b'\n", "[store] prefix = 'a b': only letters"),
    ("[api]\ntls_cert_file = '/etc/c.pem'\n", "set both (TLS) or neither"),
    ("[priority.qos_factors]\nnormal = 2\n", "normal = 2: give factors from 0 to 1"),
    ("[priority.weights]\nage = -1\n", "age = -1: give numbers of zero or more"),
    ("[nodes]\ntimeout_s = 2\nheartbeat_interval_s = 2\n", "must be above"),
    ("[nodes]\ncgroup_root = 'sys/fs'\n", "cgroup_root"),
    ("[scheduler]\ndefault_account = 'root'\n", "not root"),
    ("[limits]\nmax_connections = 3\n", "at least 16"),
    ("[fairshare]\nreset = 'weekly'\n", "use none or month or semester"),
    ("[resources]\ndef_cpus_per_gpu = -1\n", "[resources] def_cpus_per_gpu = -1"),
    ("[resources]\ndef_mem_per_gpu = '16G'\n", "[resources] def_mem_per_gpu = '16G'"),
    ("[billing]\ncpu = -0.5\n", "[billing] cpu = -0.5: give a number of at least 0"),
])
def test_each_bad_value_is_refused(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    code, lines = _check(path)
    assert code == 1 and len(lines) == 1 and words in lines[0], lines


def test_cpus_memory_and_their_billing_load(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[resources]\ndef_cpus_per_gpu = 8\ndef_mem_per_gpu = 65536\n"
                    "[billing]\ncpu = 0.1\nmem = 0.05\n")
    assert _check(path) == (0, [f"ok: {path}"])
    settings = Settings.load(tmp_path)
    assert (settings.def_cpus_per_gpu, settings.def_mem_per_gpu) == (8, 65536)
    assert (settings.billing_cpu_weight, settings.billing_mem_weight) == (0.1, 0.05)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(config, ["check", str(tmp_path / "none.toml")])
    assert result.exit_code == 1
    assert "no config file" in result.output and len(result.output.splitlines()) == 1


def test_every_setting_has_a_rule() -> None:
    assert set(RULES) | {"redis_username", "agent_redis_username", "notify_command"} \
        == set(SPECS)


@pytest.mark.parametrize(("text", "words"), [
    ("[api]\nmetrics_port = 99999\n", "[api] metrics_port = 99999: give a port"),
    ("[billing.weights]\nT4 = -0.5\n", "T4 = -0.5: billing weights must be numbers above 0"),
    ("[priority.qos_factors]\nnormal = 1.5\n", "normal = 1.5"),
    ("[api]\nport = 70000\n", "[api] port = 70000"),
])
def test_settings_load_refuses_what_config_check_names(
        tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        Settings.load(tmp_path)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert file_problems(tmp_path / "config.toml")


def test_settings_load_refuses_a_bad_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABQ_METRICS_PORT", "65536")
    with pytest.raises(ConfigError, match=r"\[api\] metrics_port = 65536"):
        Settings.load(tmp_path)


def test_a_daemon_refuses_a_bad_config_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[api]\nmetrics_port = 99999\n")
    env = {**os.environ, "LABQ_HOME": str(tmp_path), "LABQ_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "coordinator"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "[api] metrics_port = 99999" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]  # nothing written
