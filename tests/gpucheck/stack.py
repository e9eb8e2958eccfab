"""gpu-check's throwaway labq stack (`Check`: its LABQ_HOME, `labq up`, the CLI as root and as
the job's user, the time budget) and its output (`say`, `Results`)."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from agents.cgroups import cgroup2_mount

REPO = Path(__file__).resolve().parents[2]  # this checkout: its labq is the one checked
JOB_PATH = "/usr/local/bin:/usr/bin:/bin"
SHUTDOWN_RESERVE_S = 45.0  # always kept for check e

# --- output --------------------------------------------------------------------------------

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


class Results:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, status: str, name: str, evidence: str) -> None:
        self.rows.append((status, name, evidence))
        print(f"{status:<4} {name}: {evidence}", flush=True)

    def passed(self, name: str, evidence: str) -> None:
        self.add("PASS", name, evidence)

    def failed(self, name: str, evidence: str) -> None:
        self.add("FAIL", name, evidence)

    def skipped(self, name: str, evidence: str) -> None:
        self.add("SKIP", name, evidence)

    def check(self, ok: bool, name: str, evidence: str) -> bool:
        self.add("PASS" if ok else "FAIL", name, evidence)
        return ok

    @property
    def any_failed(self) -> bool:
        return any(status == "FAIL" for status, _, _ in self.rows)


class OutOfTime(Exception):
    pass


# --- the stack -----------------------------------------------------------------------------


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results = Results()
        self.deadline = T0 + args.budget
        self.user = pwd.getpwnam(args.user)
        self.python = args.python
        self.simulated = bool(args.simulate)
        self.home = Path(tempfile.mkdtemp(prefix="labq-gc-"))
        os.chmod(self.home, 0o711)
        (self.home / "config.toml").write_text("# gpu-check: defaults only\n")
        os.chmod(self.home / "config.toml", 0o644)
        self.workdir = Path(tempfile.mkdtemp(prefix="labq-gc-work-"))
        os.chmod(self.workdir, 0o1777)
        self.report = Path(args.report) if args.report else Path(
            tempfile.mkdtemp(prefix="labq-gpu-check-"))
        self.report.mkdir(parents=True, exist_ok=True)
        self.observed = self.report / "observed.txt"
        self.observed.write_text("")
        path = [str(REPO)] if (REPO / "scheduler").is_dir() else []
        path += [p for p in os.environ.get("PYTHONPATH", "").split(":") if p and p not in path]
        self.pythonpath = ":".join(path)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LABQ_")}
        self.env.update(LABQ_HOME=str(self.home), PYTHONUNBUFFERED="1",
                        LABQ_HEARTBEAT_INTERVAL="1")
        if self.pythonpath:
            self.env["PYTHONPATH"] = self.pythonpath
        # A rehearsal's node is named sim-0 like every simulated stack's: give its jobs a
        # cgroup folder of their own, not <mount>/labq/sim-0 (real nodes keep "auto").
        self.own_cgroup: Path | None = None
        mount = cgroup2_mount()
        if self.simulated and mount is not None:
            self.own_cgroup = mount / "labq" / f"gpu-check-{os.getpid()}"
            self.env["LABQ_CGROUP_ROOT"] = str(self.own_cgroup)
        self.job_env = list(args.env)
        self.proc: subprocess.Popen[str] | None = None
        self.up_lines: list[str] = []
        self.ready = threading.Event()
        self.metrics_url = ""
        self.jobs: list[str] = []
        self.started_wall = time.time()
        self.nvml: list[dict[str, Any]] | None = None
        self.torch_ok = False
        self.holder: subprocess.Popen[str] | None = None

    # -- time --------------------------------------------------------------------------------

    def left(self, reserve: float = SHUTDOWN_RESERVE_S) -> float:
        return self.deadline - reserve - time.monotonic()

    def budget(self, want: float) -> float:
        left = self.left()
        if left <= 1:
            raise OutOfTime(f"the time budget (--budget {self.args.budget:.0f} s) is spent")
        return min(want, left)

    def wait_for(self, check: Any, want: float, interval: float = 0.5) -> Any:
        deadline = time.monotonic() + self.budget(want)
        while True:
            value = check()
            if value or time.monotonic() >= deadline:
                return value
            time.sleep(interval)

    # -- labq ------------------------------------------------------------------------------

    def labq_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "scheduler.cli", *args]

    def cli(self, *args: str, as_user: bool = False, timeout: float = 30,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        if as_user:
            u = self.user
            env = {"PATH": JOB_PATH, "HOME": u.pw_dir, "USER": u.pw_name, "LOGNAME": u.pw_name,
                   "LANG": "C.UTF-8", "LABQ_HOME": str(self.home)}
            if self.pythonpath:
                env["PYTHONPATH"] = self.pythonpath
            who: dict[str, Any] = {"user": u.pw_uid, "group": u.pw_gid, "extra_groups": []}
        else:
            env, who = self.env, {}
        result = subprocess.run(self.labq_argv(*args), env=env, cwd=self.workdir, text=True,
                                capture_output=True, timeout=timeout, **who)
        if check and result.returncode != 0:
            raise RuntimeError(f"labq {' '.join(args)} (as "
                               f"{self.user.pw_name if as_user else 'root'}) failed "
                               f"({result.returncode}): {(result.stderr + result.stdout)[-1500:]}")
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def start_up(self) -> None:
        argv = self.labq_argv("up", "--metrics-port", "0")
        if self.args.simulate:
            argv += ["--simulate", self.args.simulate]
        say(f"starting {' '.join(argv[1:])} (LABQ_HOME={self.home})")
        self.proc = subprocess.Popen(argv, env=self.env, cwd="/", stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        threading.Thread(target=self._read_up, daemon=True).start()

    def _read_up(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.up_lines.append(line)
            print(f"    | {line.rstrip()}", flush=True)
            if "metrics http" in line:
                self.metrics_url = line.split("metrics ", 1)[1].strip()
            if "ready;" in line:
                self.ready.set()

    def wait_ready(self) -> bool:
        deadline = time.monotonic() + self.budget(self.args.up_timeout)
        while time.monotonic() < deadline:
            if self.ready.wait(0.5):
                return True
            if self.proc is not None and self.proc.poll() is not None:
                time.sleep(0.5)  # let the reader take the last lines
                return False
        return False

    def submit(self, name: str, gpus: int, command: str) -> str:
        args = ["submit", "--gpus", str(gpus), "--time", "5m", "--name", name]
        for pair in self.job_env:
            args += ["--env", pair]
        job_id = self.cli(*args, "--", command, as_user=True).stdout.strip()
        self.jobs.append(job_id)
        say(f"submitted job {job_id} ({name}, {gpus} GPU) as {self.user.pw_name}")
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.cli_json("show", job_id))

    def wait_state(self, job_id: str, states: set[str], want: float) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> bool:
            last.clear()
            last.update(self.job(job_id))
            return last.get("state") in states

        self.wait_for(reached, want)
        return last

    def output(self, job_id: str) -> str:
        path = self.workdir / f"labq-{job_id}.out"
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def save_output(self, job_id: str, filename: str) -> str:
        """The job's output through `labq logs` as its user (the file if that fails), kept."""
        result = self.cli("logs", job_id, "--bytes", "0", as_user=True, check=False)
        text = result.stdout if result.returncode == 0 else (
            f"(labq logs failed: {result.stderr.strip()})\n" + self.output(job_id))
        (self.report / filename).write_text(text)
        return text

    def observe(self, title: str, text: str) -> None:
        with self.observed.open("a") as handle:
            handle.write(f"===== {title} (t={time.monotonic() - T0:.1f}s)\n{text.rstrip()}\n\n")

    def metrics(self) -> str:
        if not self.metrics_url:
            return ""
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as response:  # noqa: S310
                return str(response.read().decode())
        except OSError as exc:
            return f"(metrics unreadable: {exc})"

    # -- helpers -------------------------------------------------------------------------------

    def gpu_of(self, nodes: list[dict[str, Any]], node: str, index: int) -> dict[str, Any]:
        for n in nodes:
            if n["name"] == node:
                for gpu in n["gpus"]:
                    if gpu["index"] == index:
                        return dict(gpu)
        return {}

    def nvml_uuid(self, index: int) -> str | None:
        for gpu in self.nvml or []:
            if gpu["index"] == index:
                return str(gpu["uuid"])
        return None


