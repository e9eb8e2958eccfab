"""Run a real `labq up --simulate ...` stack for end-to-end tests, and drive the CLI as a user."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LABQ = [sys.executable, "-m", "scheduler.cli"]


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.3) -> Any:
    """`check()`'s first truthy value within `timeout` seconds, else an AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Stack:
    def __init__(self, simulate: str, home: Path | None = None, up_args: tuple[str, ...] = (),
                 **env: str) -> None:
        self.simulate = simulate
        self.up_args = up_args
        self.home = home or Path(tempfile.mkdtemp(prefix="labq-e2e-"))
        os.chmod(self.home, 0o755)  # other local users reach the socket, as on a real machine
        self.env = {**os.environ, "LABQ_HOME": str(self.home), **env}
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 240) -> Stack:
        self.proc = subprocess.Popen(
            [*LABQ, "up", "--simulate", self.simulate, "--metrics-port", "0", *self.up_args],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            self.output.append(line)
            if "ready;" in line:
                break
            if time.monotonic() > deadline:
                break
        if not any("ready;" in line for line in self.output):
            self.stop()
            raise RuntimeError("labq up did not become ready:\n" + "".join(self.output))
        return self

    @property
    def metrics_url(self) -> str:
        for line in self.output:
            if "metrics http" in line:
                return line.split("metrics ", 1)[1].strip()
        raise RuntimeError("no metrics line")

    def stop(self, timeout: float = 90) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        self.output.append(rest or "")
        return int(self.proc.returncode)

    def labq(
        self, *args: str, check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*LABQ, *args], env=self.env, capture_output=True, text=True,
                                timeout=60, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"labq {' '.join(args)} failed ({result.returncode}): "
                                 f"{result.stderr}{result.stdout}")
        return result

    def labq_json(self, *args: str) -> Any:
        return json.loads(self.labq(*args, "--json").stdout)

    def submit(self, *args: str) -> str:
        return self.labq("submit", *args).stdout.strip()

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.labq_json("show", job_id))

    def wait_state(self, job_id: str, states: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while job["state"] not in states:
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} stayed {job['state']}, wanted {states}: {job}")
            time.sleep(0.3)
            job = self.job(job_id)
        return job

    def wait(self, check: Any, timeout: float = 60, what: str = "condition") -> Any:
        return wait_until(check, timeout, what)

    def leftovers(self) -> list[str]:
        """Command lines of this stack's processes that are still alive."""
        found = []
        for pid in self.pids():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if state != "Z":
                found.append(f"{pid}: {cmd}")
        return found

    def pids(self, cmdline_part: str = "") -> list[int]:
        """Processes of this stack (their environment names this LABQ_HOME)."""
        marker = f"LABQ_HOME={self.home}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in environ and cmdline_part in cmdline:
                found.append(int(entry.name))
        return found
