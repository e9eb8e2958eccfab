"""gpu-check's command line: check the arguments, start the throwaway stack, run checks a to e
in order (a check that raises is a FAIL, and the next one runs), keep the report, print the
summary. Exit status 0 when nothing FAILed."""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time

from .checks import check_foreign, check_gpu_job, check_nodes, check_ray_job, preflight, stop_holder
from .shutdown import check_shutdown, save_logs, tail_agent_log
from .stack import T0, Check, OutOfTime, say


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Run as root on a GPU node: start a throwaway labq up (NVML) and check the "
                    "real-GPU path (jobs as USER on their GPUs, Ray inside a job, GPUs busy "
                    "outside labq, clean shutdown).")
    parser.add_argument("--user", required=True, help="an existing unprivileged Unix user")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python the jobs run (default: this one)")
    parser.add_argument("--env", action="append", default=[], metavar="K=V",
                        help="passed to every job (labq submit --env), e.g. PYTHONPATH=...")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="where to save labq up's log, the jobs' output and what was seen")
    parser.add_argument("--simulate", default=None, metavar="SPEC",
                        help="rehearse on SIMULATED GPUs (labq up --simulate SPEC)")
    parser.add_argument("--budget", type=float, default=330.0,
                        help="seconds for the whole check (default 330)")
    parser.add_argument("--up-timeout", type=float, default=90.0, help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary LABQ_HOME and work directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run it as root: the node agent runs jobs as their users")
    try:
        user = pwd.getpwnam(args.user)
    except KeyError:
        parser.error(f"--user {args.user}: no such Unix user (useradd -m {args.user})")
    if user.pw_uid == 0:
        parser.error("--user: labq never runs jobs as root; name an unprivileged user")
    for pair in args.env:
        if "=" not in pair or pair.startswith("="):
            parser.error(f"--env {pair!r}: write K=V")

    c = Check(args)
    stopped = False

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        info = preflight(c)
        c.start_up()
        if not c.wait_ready():
            c.results.failed("a. labq up starts", "no 'ready;' line; see labq-up.log")
        else:
            node = check_nodes(c)
            for step in (lambda: check_gpu_job(c, node, info), lambda: check_ray_job(c),
                         lambda: check_foreign(c, node)):
                try:
                    step()
                except OutOfTime as exc:
                    c.results.failed("time", str(exc))
                    break
                except Exception as exc:  # noqa: BLE001 - report it, go on to the next check
                    c.results.failed("error", f"{type(exc).__name__}: {exc}")
        stop_holder(c)
        if c.proc is not None and c.proc.poll() is None:
            check_shutdown(c)
            stopped = True
        else:
            c.results.failed("e. shutdown", f"labq up had already exited "
                             f"({c.proc.returncode if c.proc else 'not started'})")
    except KeyboardInterrupt:
        say("interrupted")
        c.results.failed("interrupted", "stopped before the end")
    finally:
        stop_holder(c)
        if not stopped and c.proc is not None and c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
            try:
                c.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(c.proc.pid, signal.SIGKILL)
        save_logs(c)
        if c.results.any_failed:
            tail_agent_log(c)
        if not args.keep:
            shutil.rmtree(c.home, ignore_errors=True)
            shutil.rmtree(c.workdir, ignore_errors=True)
    rows = c.results.rows
    counts = {s: sum(1 for r in rows if r[0] == s) for s in ("PASS", "FAIL", "SKIP")}
    print(f"\ngpu-check: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} "
          f"skipped in {time.monotonic() - T0:.0f} s; report in {c.report}", flush=True)
    for status, name, _ in rows:
        print(f"  {status:<4} {name}", flush=True)
    return 1 if c.results.any_failed or not rows else 0

