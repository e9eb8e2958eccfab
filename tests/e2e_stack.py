"""Run a real `labq up --simulate ...` stack for end-to-end tests, and drive the CLI as a user.

The stack helper is bench/stack.py, shared with the benchmarks; its names are importable from
here as before. `python_as` (Debian's Python as a user) is the tests' own.
"""

from __future__ import annotations

import subprocess

from bench.stack import E2E_USER, JOB_USERS, LABQ, Stack, ensure_user, wait_until

__all__ = ["E2E_USER", "JOB_USERS", "LABQ", "Stack", "ensure_user", "python_as", "wait_until"]


def python_as(user: str, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` under Debian's /usr/bin/python3 as the Unix user `user` (no extra groups,
    from /), with only `env` in its environment."""
    import pwd

    entry = pwd.getpwnam(user)
    return subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                          user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], cwd="/",
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=60)
