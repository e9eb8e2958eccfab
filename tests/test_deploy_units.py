"""deploy/systemd: the units a lab installs, checked by systemd-analyze and for what labq needs."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "deploy" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_the_agent_unit_delegates_cgroups_and_leaves_jobs_running_on_restart() -> None:
    service = unit("labq-agent.service")["Service"]
    assert service["User"] == "root"  # it starts jobs as their users
    assert service["Delegate"] == "yes"  # its cgroup subtree: a cgroup per job
    assert service["KillMode"] == "process"  # a restart stops the agent, never the jobs
    assert service["UMask"] == "0077"
    assert service["ExecStart"].endswith("labq agent")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("name", ["labq-agent.service", "labq-coordinator.service"])
def test_units_pass_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    labq = Path(sys.executable).parent / "labq"
    text = (UNITS / name).read_text().replace("/opt/labq/venv/bin/labq", str(labq))
    (tmp_path / name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr and "ignoring" not in result.stderr.lower()


@pytest.mark.parametrize("name", ["labq-agent.service", "labq-coordinator.service"])
def test_units_start_the_installed_entry_point_from_root(name: str) -> None:
    """Never a module search from a directory others may write: the console script of the
    install, in /."""
    service = unit(name)["Service"]
    assert service["WorkingDirectory"] == "/"
    command = service["ExecStart"].split()
    assert Path(command[0]).is_absolute() and command[0].endswith("/bin/labq")
    assert "-m" not in command and "PYTHONPATH" not in (UNITS / name).read_text()
