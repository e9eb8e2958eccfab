"""Issue 20, item 6: config.toml's sections as dataclasses, each key's type, default, variable
and rule declared once; the flat names read and written through; loading, `labq config check`
and the daemons' refusal derived from the declarations."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from scheduler.config import SECTIONS, SPECS, ConfigError, NodesConfig, Settings
from scheduler.config.check import relations
from scheduler.config.rules import ENV_PARSERS, PORT, fraction, wrong_type
from scheduler.config.settings import SECTION_TYPES
from scheduler.configcheck import file_problems

README = Path(__file__).resolve().parent.parent / "README.md"


def test_each_section_key_has_one_flat_name() -> None:
    keys = [(spec.section, spec.key) for spec in SPECS.values()]
    assert len(keys) == len(set(keys)) == 74
    assert set(keys) == {(section, f.name) for section, kind in SECTION_TYPES.items()
                         for f in dataclasses.fields(kind)}
    assert list(SECTIONS) == ["store", "api", "scheduler", "nodes", "fairshare", "priority",
                              "billing", "idle", "notify", "limits", "retention", "resources"]
    assert SECTIONS["nodes"]["timeout_s"] == "node_timeout_s"
    assert SECTIONS["retention"]["keep_s"] == "retention_s"


def test_each_relation_names_keys_of_its_section() -> None:
    assert len(list(relations())) == 4
    for section, relation in relations():
        keys = {f.name for f in dataclasses.fields(SECTION_TYPES[section])}
        assert set(relation[:2]) <= keys, relation


def test_every_default_has_its_type_and_meets_its_rule() -> None:
    settings = Settings(Path("/nonexistent"))
    for name, spec in SPECS.items():
        value = getattr(settings, name)
        assert value == spec.default(), name
        assert wrong_type(spec.kind, value) is None, name
        assert spec.rule is None or spec.rule(value) is None, name


def test_flat_names_read_and_write_the_sections() -> None:
    settings = Settings(Path("/h"), node_timeout_s=20, retention_jobs=3)
    assert settings.nodes.timeout_s == 20 and settings.retention.keep_jobs == 3
    settings.idle_gpu_policy = "stop"
    assert settings.idle.policy == "stop"
    settings.api.metrics_port = 1234
    assert settings.metrics_port == 1234
    assert Settings(Path("/h"), nodes=NodesConfig(timeout_s=7)).node_timeout_s == 7
    with pytest.raises(TypeError, match="colour"):
        Settings(Path("/h"), colour="blue")


def test_a_copy_has_its_own_sections() -> None:
    settings = Settings(Path("/a"))
    copy = dataclasses.replace(settings, home=Path("/b"))
    copy.node_timeout_s = 1
    assert (copy.home, copy.node_timeout_s, settings.node_timeout_s) == (Path("/b"), 1, 300.0)
    assert Settings(Path("/a")) == settings and copy != settings


def test_every_variable_is_declared_once_and_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = [spec.env for spec in SPECS.values() if spec.env]
    assert len(named) == len(set(named)) and all(n.startswith("LABQ_") for n in named)
    for name in named:
        monkeypatch.delenv(name, raising=False)
    texts = {"str": "/x/y", "str | None": "redis://h:1/0", "Path | None": "/x/labq.sock",
             "int": "7", "float": "9.5", "bool": "no", "list[str]": "a, b"}
    for spec in SPECS.values():
        if spec.env and spec.name not in ("redis_prefix", "fairshare_algorithm",
                                          "idle_gpu_policy", "cgroup_root",
                                          "gpu_misuse_policy", "foreign_gpu_policy"):
            assert spec.kind in ENV_PARSERS, spec.name
            monkeypatch.setenv(spec.env, texts[spec.kind])
    monkeypatch.setenv("LABQ_IDLE_GPU_THRESHOLD", "0.5")
    monkeypatch.setenv("LABQ_IDLE_GPU_STOP_AFTER", "10")
    monkeypatch.setenv("LABQ_RETENTION", "9")
    monkeypatch.setenv("LABQ_NODE_TIMEOUT", "30")
    monkeypatch.setenv("LABQ_REDIS_SENTINELS", "s1:26379, s2:26379")
    settings = Settings.load(tmp_path)
    assert settings.redis_sentinels == ["s1:26379", "s2:26379"]
    assert settings.socket == Path("/x/labq.sock") and settings.redis_url == "redis://h:1/0"
    assert (settings.metrics_port, settings.retention_s, settings.private_data) == (7, 9, False)
    assert settings.admins == ["a", "b"] and settings.node_timeout_s == 30


@pytest.mark.parametrize(("rule", "bad"), [(PORT, 65536), (PORT, -1), (fraction, 1.5)])
def test_each_port_and_fraction_is_range_checked(
        tmp_path: Path, rule: object, bad: float) -> None:
    """Every key declared with a port's or a fraction's rule refuses a value out of range, in
    `labq config check` and at load alike."""
    specs = [spec for spec in SPECS.values() if spec.rule is rule]
    assert specs
    for spec in specs:
        path = tmp_path / "config.toml"
        path.write_text(f"[{spec.section}]\n{spec.key} = {bad}\n")
        assert [line.split(":")[0] for line in file_problems(path)] == \
            [f"[{spec.section}] {spec.key} = {bad}"]
        with pytest.raises(ConfigError) as refused:
            Settings.load(tmp_path)
        # (the idle keys keep their earlier words at load: tests/test_idle.py)
        assert f"{spec.where} = {bad}" in str(refused.value) or \
            f"{spec.name} = {bad}" in str(refused.value)


def test_a_flag_is_named_as_it_was_given(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^metrics_port = 70000: give a port"):
        Settings.load(tmp_path, metrics_port=70000)


def test_a_legacy_top_level_name_reads_as_its_section_key(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("retention_jobs = 5\nagent_state_dir = '/srv/a'\n")
    settings = Settings.load(tmp_path)
    assert settings.retention.keep_jobs == 5 and settings.nodes.state_dir == "/srv/a"
    assert settings.agent_dir("n1") == Path("/srv/a")
    assert file_problems(tmp_path / "config.toml") == []


def test_the_readme_names_every_key_of_every_section() -> None:
    text = README.read_text()
    start = text.index("The sections and their keys:")
    listing = " ".join(text[start:text.index("(A file written", start)].split())
    found = {section: {k.strip(" .") for k in keys.split(",")}
             for section, keys in re.findall(r"`\[(\w+)\]` ([^;`]+)", listing)}
    assert found == {section: set(keys) for section, keys in SECTIONS.items()}
