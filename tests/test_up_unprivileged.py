"""`labq up` started by a user who is not root: it says in one line that every job runs as
that user, runs them so, and leaves nothing behind when stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from e2e_stack import E2E_USER, LABQ, ensure_user, wait_until

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")]


def test_labq_up_as_a_user_says_jobs_run_as_that_user_and_runs_them_so() -> None:
    user = ensure_user(E2E_USER)
    home = Path(tempfile.mkdtemp(prefix="labq-user-up-"))
    os.chown(home, user.pw_uid, user.pw_gid)
    env = {"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, "USER": user.pw_name,
           "LABQ_HOME": str(home)}
    who = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": str(home)}
    up = subprocess.Popen([*LABQ, "up", "--simulate", "1x1", "--metrics-port", "0"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True, **who)
    said: list[str] = []
    try:
        assert up.stdout is not None
        for line in up.stdout:
            said.append(line)
            if "ready;" in line or len(said) > 60:
                break
        text = "".join(said)
        assert "ready;" in text, text
        jobs_lines = [x for x in said if x.startswith("labq up: jobs")]
        assert jobs_lines == [f"labq up: jobs    run as {E2E_USER}, the user running labq up "
                              "(not root): jobs of other users cannot start here\n"], text

        def labq(*args: str) -> str:
            done = subprocess.run([*LABQ, *args], env=env, capture_output=True, text=True,
                                  timeout=60, **who)
            assert done.returncode == 0, done.stderr + done.stdout
            return done.stdout.strip()

        job_id = labq("submit", "--gpus", "1", "--time", "5m", "--", "sh", "-c", "id -u")
        state = wait_until(lambda: (s := labq("show", job_id, "--json")) and
                           ('"SUCCEEDED"' in s or '"FAILED"' in s) and s, 60, "the job to end")
        assert '"SUCCEEDED"' in state, state
        out = home / f"labq-{job_id}.out"
        assert out.read_text().strip() == str(user.pw_uid)  # it ran as the user, not root
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-u", str(user.pw_uid), "-f", str(home)],
                          capture_output=True, text=True).stdout.split()
    assert left == []  # nothing of that stack is left running
    assert up.returncode == 0
