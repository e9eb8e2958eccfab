"""A real `labq up --simulate ...` stack in a temporary LABQ_HOME, and the labq CLI driven as a
Unix user: the one stack helper of the end-to-end tests and the benchmarks.

It lives here because the benchmarks run as plain scripts (`python bench/bench_x.py`), which
can import only their own folder, while pytest puts the repository root on the path: so tests
import it as `bench.stack` (through tests/e2e_stack.py, which keeps its names) and benchmarks
as `stack`, and no benchmark imports the tests. Standard library only.
"""

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
# The Unix user the tests type labq commands as (an admin of the test stacks), and users that
# jobs run as in multi-user tests. Jobs never run as root, so tests need real users: made here
# (tests run as root in CI), idempotently.
E2E_USER = "labq-e2e"
JOB_USERS = ("alice", "bob", "carol", "sc", "bud", "newcomer", "charge-test")


def ensure_user(name: str) -> Any:
    """The passwd entry of `name`, made (with a home) if missing."""
    import pwd

    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True,
                       capture_output=True)
        return pwd.getpwnam(name)


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
        self.user = ensure_user(E2E_USER)
        for name in JOB_USERS:
            ensure_user(name)
        # Where jobs run and write their output: like /tmp, every user may write, none may
        # touch another's files.
        self.workdir = Path(tempfile.mkdtemp(prefix="labq-e2e-work-"))
        os.chmod(self.workdir, 0o1777)
        admins = ",".join(filter(None, [os.environ.get("LABQ_ADMINS", ""), E2E_USER]))
        # The test user is an admin and an operator: it submits for the job users (--as).
        operators = ",".join(filter(None, [os.environ.get("LABQ_OPERATORS", ""), E2E_USER]))
        self.env = {**os.environ, "LABQ_HOME": str(self.home), "LABQ_ADMINS": admins,
                    "LABQ_OPERATORS": operators, **env}
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

    def scrape(self) -> str:
        """/metrics as Prometheus reads it: with the coordinator's metrics token (per-user
        series included under private_data)."""
        import urllib.request

        token = (self.home / "secrets" / "metrics-token").read_text().strip()
        request = urllib.request.Request(self.metrics_url,
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(response.read().decode())

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
        self, *args: str, check: bool = True, as_root: bool = False, user: str | None = None,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Run `labq ARGS` as the test user (an admin of this stack: jobs it submits run as
        that user), as another Unix `user`, or as root with `as_root`."""
        entry = ensure_user(user) if user else self.user
        who: dict[str, Any] = {} if as_root else {
            "user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
            "cwd": self.workdir}
        env = self.env if as_root else {**self.env, "HOME": entry.pw_dir,
                                        "USER": entry.pw_name}
        result = subprocess.run([*LABQ, *args], env=env, capture_output=True, text=True,
                                timeout=60, **who, **kwargs)
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

