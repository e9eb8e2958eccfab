"""gpu-check's check e (SIGTERM to `labq up` leaves nothing behind) and what it keeps at the
end: labq up's output and its daemons' logs (labq-up.log), the agent log's tail on a failure."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from .stack import Check


def layout_root(c: Check) -> Path | None:
    """The cgroup directory the agent used (from its log), or None (no cgroups)."""
    for log in (c.home / "logs").glob("agent-*.log"):
        match = re.search(r"cgroup \S+ at (\S+) \(", log.read_text(errors="replace"))
        if match:
            return Path(match.group(1))
    return None


def boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def leftovers(c: Check, root: Path | None) -> list[str]:
    """Processes of this check's stack still alive: the daemons (their environment names this
    LABQ_HOME), runners (their command line does), anything in the jobs' cgroups, and processes
    of the job user started since the check began."""
    marker = f"LABQ_HOME={c.home}".encode()
    tick = os.sysconf("SC_CLK_TCK")
    since = c.started_wall - boot_time()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] == "Z":
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().split(b"\0")
            cgroup = (entry / "cgroup").read_text()
            uid = int((entry / "status").read_text().split("Uid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
        started = int(stat[19]) / tick
        in_job = root is not None and f"/{root.name}/job_" in cgroup
        mine = marker in environ or str(c.home) in cmd or in_job
        theirs = uid == c.user.pw_uid and started >= since - 1
        if mine or theirs:
            found.append(f"{entry.name} uid {uid}: {cmd[:150]}")
    return found


def check_shutdown(c: Check) -> None:
    """e. SIGTERM to labq up: everything it started ends, the jobs' cgroups are gone."""
    root = layout_root(c)
    assert c.proc is not None
    t = time.monotonic()
    c.proc.send_signal(signal.SIGTERM)
    try:
        code = c.proc.wait(max(10.0, min(60.0, c.deadline - time.monotonic() - 5)))
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - t
    time.sleep(1.0)
    left = leftovers(c, root)
    groups = []
    if root is not None and root.is_dir():
        groups = [p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("job_")]
    ok = code == 0 and not left and not groups
    c.results.check(ok, "e. SIGTERM stops labq up and everything it started",
                    f"labq up exited {code} in {took:.1f} s; processes left: {left or 'none'}; "
                    f"job cgroups left under {root or '(no cgroup layout: subreaper runners)'}: "
                    f"{groups or 'none'}")
    if code is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(c.proc.pid, signal.SIGKILL)
    if c.own_cgroup is not None and root == c.own_cgroup and not groups:
        for path in (root / "runners", root):  # the rehearsal's own, now empty
            with contextlib.suppress(OSError):
                path.rmdir()


def save_logs(c: Check) -> None:
    parts = ["===== labq up (stdout)\n", *c.up_lines]
    for log in sorted((c.home / "logs").glob("*.log")):
        with contextlib.suppress(OSError):
            parts.append(f"\n===== {log.name}\n{log.read_text(errors='replace')}")
    (c.report / "labq-up.log").write_text("".join(parts))


def tail_agent_log(c: Check, lines: int = 25) -> None:
    for log in sorted((c.home / "logs").glob("agent-*.log")):
        with contextlib.suppress(OSError):
            print(f"--- last lines of {log.name}:", flush=True)
            print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]), flush=True)


