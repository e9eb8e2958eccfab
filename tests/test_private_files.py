"""The files of a real `labq up` started by root are private (issue 10, part 2): $LABQ_HOME is
traversable but not listable, everything in it is root's alone except the API socket, every
daemon runs with umask 077; an unprivileged user still reaches the API, from a shell and from
inside a job, with the same LABQ_HOME."""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from tests.e2e_stack import Stack, python_as
from tests.security_server import can_switch_users, ensure_user

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not can_switch_users(),
                                 reason="needs root, useradd and /usr/bin/python3")]

EVE = "labq-sec-eve"
# The labq of the venv running the tests (built from /usr/bin/python3: other users may run it),
# wherever the checkout is.
LABQ = str(Path(sys.executable).parent / "labq")

TRY_ALL = r'''
import json, os, sys
out = {}
for path in json.loads(sys.argv[1]):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").read(1)
        out[path] = "read"
    except OSError as exc:
        out[path] = type(exc).__name__
print(json.dumps(out))
'''


def private_paths(stack: Stack) -> list[str]:
    """$LABQ_HOME and everything under it but the API socket (where root can see it)."""
    found = [str(stack.home)]
    for root, dirs, files in os.walk(stack.home):
        found += [os.path.join(root, name) for name in dirs + files
                  if os.path.join(root, name) != str(stack.home / "labq.sock")]
    return found


def test_a_user_can_read_nothing_under_labq_home(locked_stack: Stack) -> None:
    ensure_user(EVE)
    paths = private_paths(locked_stack)
    wanted = ["run.json", "logs/coordinator.log", "valkey/users.acl", "valkey/valkey.conf",
              "secrets/coordinator.pass", "valkey/appendonlydir"]
    for name in wanted:
        assert str(locked_stack.home / name) in paths, name
    aof = [p for p in paths if p.endswith(".aof")]
    assert aof, "no AOF file found"
    code = TRY_ALL.replace("sys.argv[1]", repr(json.dumps(paths)))
    result = python_as(EVE, code)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert set(outcome.values()) == {"PermissionError"}, outcome


def test_modes_are_0711_for_the_home_0700_or_0600_inside_and_0666_for_the_socket(
        locked_stack: Stack) -> None:
    home = locked_stack.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o711
    assert stat.S_IMODE((home / "labq.sock").stat().st_mode) == 0o666
    loose = {}
    for path in private_paths(locked_stack)[1:]:
        st = os.lstat(path)
        if st.st_mode & 0o077 and not stat.S_ISLNK(st.st_mode):
            loose[path] = oct(stat.S_IMODE(st.st_mode))
    assert loose == {}
    assert stat.S_IMODE((home / "run.json").stat().st_mode) == 0o600


def test_every_daemon_runs_with_umask_077(locked_stack: Stack) -> None:
    pids = [locked_stack.proc.pid] if locked_stack.proc else []
    pids += locked_stack.pids("scheduler.cli")
    assert len(pids) >= 4  # labq up, the coordinator, two agents
    for pid in pids:
        fields = dict(line.split(":\t", 1) for line in
                      Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
        assert fields["Umask"].strip() == "0077", (pid, fields["Umask"])


def test_a_user_reaches_the_api_with_the_same_labq_home(locked_stack: Stack) -> None:
    ensure_user(EVE)
    code = ("import subprocess, sys; r = subprocess.run([sys.argv[1], 'whoami'], "
            "capture_output=True, text=True); print(r.returncode, r.stdout.strip(), r.stderr)")
    result = python_as(EVE, code.replace("sys.argv[1]", repr(LABQ)),
                       LABQ_HOME=str(locked_stack.home))
    assert result.stdout.startswith(f"0 {EVE} (uid"), result.stdout + result.stderr


def test_a_job_running_as_its_user_reaches_the_api(locked_stack: Stack) -> None:
    ensure_user(EVE)
    workdir = Path(tempfile.mkdtemp(prefix="labq-eve-"))
    os.chmod(workdir, 0o777)
    code = ("import subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, "
            "text=True); print(r.stdout.strip() or r.stderr)")
    argv = [LABQ, "submit", "--gpus", "1", "--time", "2m", "--workdir", str(workdir), "--",
            f"{LABQ} whoami"]
    result = python_as(EVE, code.replace("sys.argv[1:]", repr(argv)),
                       LABQ_HOME=str(locked_stack.home))
    job_id = result.stdout.strip()
    assert job_id.isdigit(), result.stdout + result.stderr
    job = locked_stack.wait_state(job_id, {"SUCCEEDED", "FAILED"}, timeout=60)
    output = workdir / f"labq-{job_id}.out"
    assert job["state"] == "SUCCEEDED", (job, output.read_text() if output.exists() else "")
    assert output.read_text().startswith(f"{EVE} (uid")
    assert output.stat().st_uid == ensure_user(EVE)
