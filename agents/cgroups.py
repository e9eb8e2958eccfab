"""Where a node's jobs live in the cgroup v2 tree, and the few operations labq needs on them.

Three layouts, chosen once per agent (`detect`):

- **v2** — a pure cgroup v2 node (a lab's systemd nodes). Under systemd the agent's unit has
  `Delegate=yes` and `KillMode=process` (deploy/systemd/labq-agent.service), so the agent owns
  its own cgroup: it moves itself into `<own>/agent`, runners live in `<own>/runners`, and each
  job gets `<own>/<install>/job_<id>.<attempt>` with the cpu, memory and pids controllers
  (accounting, `memory.peak`) and `cgroup.kill` at the end. Started by hand as root, the agent
  uses `<cgroup2 mount>/labq/<node>` instead.
- **v2-hybrid** — a hybrid hierarchy (v1 controllers, a v2 tree under
  `/sys/fs/cgroup/unified`): each job still gets its own v2 group, so membership and
  `cgroup.kill` work, but no controller is available there (no accounting).
- **none** — no writable cgroup v2 tree (an unprivileged `labq up`, a container): the runner
  is a child subreaper and kills every descendant itself.

Every agent works under a directory of its own install (`Layout.for_install`, a random id kept
in its state directory): runners in `<root>/<install>/runners`, each job attempt in a new
`<root>/<install>/job_<id>.<attempt>` (never an existing one). A process belongs to a job only
when its cgroup is exactly one of those: two installs on one host (the same node names, even
the same job ids) never take each other's processes for their own.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("cpu", "memory", "pids")
JOB_PREFIX = "job_"


_INSTALL_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class Layout:
    kind: str  # "v2", "v2-hybrid" or "none"
    root: Path | None  # labq's directory: runners/ and job_<key>/ live here
    controllers: tuple[str, ...] = ()
    mount: Path | None = None  # the cgroup v2 mount `root` is in (None: found when needed)

    def describe(self) -> str:
        if self.root is None:
            return "no cgroup v2 tree usable: jobs contained by a subreaper runner"
        what = ", ".join(self.controllers) if self.controllers else "no controllers"
        return f"cgroup {self.kind} at {self.root} ({what}; cgroup.kill)"

    def job_group(self, key: str) -> JobGroup | None:
        return None if self.root is None else JobGroup(self.root / f"{JOB_PREFIX}{key}")

    @property
    def runners(self) -> Path | None:
        return None if self.root is None else self.root / "runners"

    def for_install(self, install: str) -> Layout:
        """This layout narrowed to one install's own directory, `<root>/<install>` (made, with
        its `runners/`, and the same controllers passed on). Raises OSError if it cannot be."""
        if not _INSTALL_ID.match(install):
            raise ValueError(f"install id {install!r}: expected 16 hex digits")
        if self.root is None:
            return self
        mount = self.mount or cgroup2_mount() or self.root
        root = self.root / install
        root.mkdir(exist_ok=True)
        root.chmod(0o755)  # (so a job can reach its own group: see JobGroup.create)
        (root / "runners").mkdir(exist_ok=True)
        controllers = _enable_controllers(mount, root) if self.controllers else ()
        return Layout(self.kind, root, controllers, mount)

    def cgroup_path(self) -> str | None:
        """`root` as /proc/<pid>/cgroup names it (`/labq/n1/<install>`), or None."""
        if self.root is None:
            return None
        mount = self.mount or cgroup2_mount()
        if mount is None or not self.root.is_relative_to(mount):
            return None
        relative = self.root.relative_to(mount)
        return "/" if relative == Path(".") else f"/{relative}"

    def job_of_cgroup(self, path: str | None) -> str | None:
        """The run key (`<id>.<attempt>`) of a process whose v2 cgroup is `path`, if and only
        if that is one of this layout's job groups: exactly `<root>/job_<id>.<attempt>`."""
        own = self.cgroup_path()
        if path is None or own is None:
            return None
        return job_of_cgroup(path, own)


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> Path | None:
    """Where the cgroup v2 tree is mounted (`/sys/fs/cgroup`, or `.../unified` on hybrid)."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        head, _, tail = line.partition(" - ")
        if tail.split(" ", 1)[0] == "cgroup2":
            return Path(head.split()[4])
    return None


def cgroup_of(pid: int | str = "self") -> str | None:
    """The v2 path (`/system.slice/labq-agent.service`) of a process, or None."""
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].strip() or "/"
    except OSError:
        pass
    return None


def detect(node: str, configured: str = "auto") -> Layout:
    """The layout this agent will use. `configured`: "auto", "none", or a directory inside the
    cgroup v2 tree that labq may own (made if missing)."""
    if configured == "none" or os.geteuid() != 0:
        return Layout("none", None)
    mount = cgroup2_mount()
    if mount is None:
        return Layout("none", None)
    own = cgroup_of()
    here = mount / own.lstrip("/") if own is not None else None  # the agent's own group
    if configured != "auto":
        root = Path(configured)
    elif os.environ.get("INVOCATION_ID") and own not in (None, "/") and here is not None:
        root = here  # systemd delegated this service's cgroup to us
    else:
        root = mount / "labq" / node
    try:
        root.mkdir(parents=True, exist_ok=True)
        if here == root:
            # cgroup v2: no processes in a group whose children get controllers.
            (root / "agent").mkdir(exist_ok=True)
            (root / "agent" / "cgroup.procs").write_text(str(os.getpid()))
        (root / "runners").mkdir(exist_ok=True)
    except OSError:
        return Layout("none", None)
    controllers = _enable_controllers(mount, root)
    kind = "v2" if mount == Path("/sys/fs/cgroup") else "v2-hybrid"
    return Layout(kind, root, controllers, mount)


def _enable_controllers(mount: Path, root: Path) -> tuple[str, ...]:
    """Enable cpu, memory and pids for the children of `root`, and on the way down to it from
    the mount (a group can only pass on what its parent gave it). Returns what `root` passes."""
    chain = [root, *[p for p in root.parents if p.is_relative_to(mount)]][::-1]
    for directory in chain:
        try:
            available = (directory / "cgroup.controllers").read_text().split()
        except OSError:
            return ()
        for name in CONTROLLERS:
            if name in available:
                with contextlib.suppress(OSError):
                    (directory / "cgroup.subtree_control").write_text(f"+{name}")
    try:
        return tuple(c for c in CONTROLLERS
                     if c in (root / "cgroup.subtree_control").read_text().split())
    except OSError:
        return ()


@dataclass(frozen=True)
class JobGroup:
    """One job's cgroup."""

    path: Path

    def create(self) -> None:
        """Make the group: a new one, never one that exists already (whoever made it)."""
        try:
            self.path.mkdir()
        except FileExistsError:
            raise OSError(f"its cgroup {self.path} exists already (never reused)") from None
        self.path.chmod(0o755)  # the job reads its own limits and usage (root owns the files)

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def signal_all(self, sig: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self, wait_s: float = 5.0) -> bool:
        """Kill every process in the group (`cgroup.kill`, else SIGKILL one by one until it is
        empty). Returns whether it is empty."""
        deadline = time.monotonic() + wait_s
        while self.pids():
            try:
                (self.path / "cgroup.kill").write_text("1")
            except OSError:
                self.signal_all(signal.SIGKILL)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stats(self) -> dict[str, int]:
        """What the controllers measured: cpu_usec, memory_peak_bytes, pids_peak (if any)."""
        out: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    out["cpu_usec"] = int(value)
        for name, key in (("memory.peak", "memory_peak_bytes"), ("pids.peak", "pids_peak")):
            with contextlib.suppress(OSError, ValueError):
                out[key] = int((self.path / name).read_text())
        return out

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def job_of_cgroup(path: str, root: str) -> str | None:
    """The run key (`<id>.<attempt>`) of the v2 cgroup `path` when it is a job group directly
    under `root` (both as /proc/<pid>/cgroup names them), else None: a `job_*` group anywhere
    else (another install's, a sub-group) is not this agent's."""
    parent, _, last = path.rstrip("/").rpartition("/")
    if (parent or "/") != (root.rstrip("/") or "/") or not last.startswith(JOB_PREFIX):
        return None
    key = last[len(JOB_PREFIX):]
    job_id, dot, attempt = key.rpartition(".")
    if not dot or not job_id or not attempt.isdigit():
        return None
    return key
