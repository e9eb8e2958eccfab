"""A real munged (Debian's munge) for tests: its own key, socket and files in a temp folder
other users may reach, started as root with --force (the folder is not munged's own)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def have_munge() -> bool:
    return all(shutil.which(tool) for tool in ("munged", "munge", "unmunge"))


class Munged:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="labq-munge-"))
        os.chmod(self.dir, 0o755)
        self.socket = str(self.dir / "munge.socket")
        self.key = self.dir / "munge.key"
        self.key.write_bytes(os.urandom(1024))
        os.chmod(self.key, 0o600)
        self.pid_file = self.dir / "munged.pid"

    def start(self) -> Munged:
        subprocess.run(["munged", f"--socket={self.socket}", f"--key-file={self.key}",
                        f"--pid-file={self.pid_file}", f"--log-file={self.dir / 'munged.log'}",
                        f"--seed-file={self.dir / 'munged.seed'}", "--force"],
                       check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while not Path(self.socket).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start: {(self.dir / 'munged.log').read_text()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def credential(self, payload: bytes, user: str | None = None, ttl: int | None = None) -> str:
        """A credential made by `munge` running as `user` (default: this process's)."""
        argv = ["munge", "-S", self.socket]
        if ttl is not None:
            argv += ["-t", str(ttl)]
        kwargs = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        done = subprocess.run(argv, input=payload, capture_output=True, check=True, timeout=30,
                              cwd="/", **kwargs)  # type: ignore[call-overload]
        return done.stdout.decode().strip()
