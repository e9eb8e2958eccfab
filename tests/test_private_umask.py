"""A daemon that makes its files private (umask 077) leaves no bytecode cache only its user can
read: else every other user's labq command would compile those modules at each call."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


def _import_fresh_module(tmp_path: Path, setup: str) -> Path:
    """Run `setup` in a new Python that writes bytecode caches as it normally would, then import
    a module never imported before; the folder its cache would go in."""
    package = tmp_path / "freshpkg"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 1\n")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(LABQ_HOME=str(home), PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}")
    program = textwrap.dedent(f"""
        import os
        os.umask(0o022)
        {setup}
        import freshpkg
        assert freshpkg.VALUE == 1
    """)
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return package / "__pycache__"


def test_a_plain_umask_077_leaves_a_cache_only_its_user_reads(tmp_path: Path) -> None:
    # What the daemons did before: shows the check below can fail.
    cache = _import_fresh_module(tmp_path, "os.umask(0o077)")
    assert cache.is_dir()
    assert cache.stat().st_mode & 0o777 == 0o700


def test_private_umask_writes_no_cache(tmp_path: Path) -> None:
    cache = _import_fresh_module(
        tmp_path, "from scheduler.server.homecheck import private_umask; private_umask()\n"
        "        assert os.umask(0o077) == 0o077")
    assert not cache.exists()


def test_the_daemons_settings_make_files_private_and_write_no_cache(tmp_path: Path) -> None:
    # `labq up`, `labq coordinator` and `labq agent` all begin with trusted_settings.
    cache = _import_fresh_module(
        tmp_path, "from scheduler.cli.daemons import trusted_settings; trusted_settings()\n"
        "        assert os.umask(0o077) == 0o077")
    assert not cache.exists()
    assert (tmp_path / "home").is_dir()
