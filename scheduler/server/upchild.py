"""`labq up`'s supervised children (the store, the coordinator, the agents): one process
group each, started in `/` with its log, stopped with a grace, and started again when it dies
with a growing delay (`restart_delay`), as systemd's Restart=always."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from scheduler.server import homecheck, proctree

# A child that dies is started again after FIRST_BACKOFF_S, doubled for each death in a row that
# came within STABLE_S of its start, up to MAX_BACKOFF_S; a child that stayed up STABLE_S is
# started again after FIRST_BACKOFF_S, its record forgotten (systemd's Restart=always with
# RestartSteps and RestartMaxDelaySec).
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 10.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # time.monotonic() of the latest start
    quick_deaths: int = 0  # deaths in a row, each within STABLE_S of its start
    due: float | None = None  # when to start it again, once it died
    error: str = ""  # why the latest start failed, if it did

    def start(self) -> None:
        self.started, self.error = time.monotonic(), ""
        log = homecheck.open_log(self.log_path)
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd="/",
                                         preexec_fn=proctree.die_with(os.getpid()))
        finally:
            os.close(log)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            signal_group(self.proc.pid, signal.SIGTERM)

    def stop(self, grace: float) -> None:
        """SIGTERM, wait up to `grace`, then SIGKILL whatever is left in the child's group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        signal_group(self.proc.pid, signal.SIGKILL)  # anything the child left in its group
        if self.proc.poll() is None:
            self.proc.wait(5)


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def restart_delay(quick_deaths: int) -> float:
    """Seconds before a child that died is started again, after `quick_deaths` deaths in a row
    (1: the first, or the first since it stayed up STABLE_S): FIRST_BACKOFF_S, doubled for
    each more, at most MAX_BACKOFF_S."""
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2.0 ** (max(quick_deaths, 1) - 1))


def exit_status(proc: subprocess.Popen[bytes] | None) -> str:
    """`status 1`, `killed by SIGKILL`, or `not started`."""
    if proc is None or proc.returncode is None:
        return "not started"
    if proc.returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-proc.returncode).name}"
        return f"killed by signal {-proc.returncode}"
    return f"status {proc.returncode}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
