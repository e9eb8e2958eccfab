"""The embedded Valkey's memory ceiling (issue 18, item 2): store_max_memory_bytes, or a quarter
of the memory this machine gives labq up; always with noeviction. The running store refusing
writes at its ceiling is tests/test_up_daemons.py."""

from __future__ import annotations

import os
from pathlib import Path

from scheduler.config import Settings
from scheduler.server.upvalkey import store_max_memory, valkey_config


def test_the_ceiling_is_the_setting_or_a_quarter_of_the_machine(tmp_path: Path) -> None:
    assert store_max_memory(Settings(home=tmp_path, store_max_memory_bytes=1 << 30)) == 1 << 30
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    default = store_max_memory(Settings(home=tmp_path))
    assert 64 << 20 <= default <= max(machine // 4, 64 << 20)


def test_the_config_has_the_ceiling_and_never_evicts(tmp_path: Path) -> None:
    lines = valkey_config(tmp_path, tmp_path / "v.sock", 123456789).splitlines()
    assert "maxmemory 123456789" in lines
    assert "maxmemory-policy noeviction" in lines
    assert "port 0" in lines  # a Unix socket only
