"""A small demo workload from several users, submitted by `labq up --demo`.

Jobs run as their users: run as root, the demo makes the Unix users alice, bob, carol and dave
if they are missing (system users without a login shell) and says so; run as anyone else,
every demo job is yours. One job uses Ray inside: its `ray.init()` gets a Ray of its own that
sees exactly the job's GPUs.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable

from scheduler.client import Client, ClientError
from scheduler.config import Settings

DEMO_USERS = ("alice", "bob", "carol", "dave")
DEMO_JOBS = [
    # (user, gpus, seconds, name)
    ("alice", 2, 40, "alice-resnet"),
    ("alice", 1, 25, "alice-sweep-1"),
    ("alice", 1, 25, "alice-sweep-2"),
    ("bob", 4, 30, "bob-llm-finetune"),
    ("carol", 1, 15, "carol-notebook"),
    ("carol", 2, 20, "carol-diffusion"),
    ("dave", 4, 20, "dave-whole-node"),
]
RAY_JOB = ("bob", 2, "bob-ray-tasks")
DEMO_WORKDIR = "/tmp"

RAY_PROGRAM = """
import os, ray
ray.init()
print("Ray sees", ray.cluster_resources().get("GPU"), "GPUs; job GPUs:",
      os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
@ray.remote(num_gpus=1)
def task(i):
    import os, time
    time.sleep(2)
    return i, os.environ.get("CUDA_VISIBLE_DEVICES")
for i, gpu in ray.get([task.remote(i) for i in range(4)]):
    print(f"task {i} ran on GPU {gpu}", flush=True)
"""


def demo_command(seconds: int) -> list[str]:
    return [f'echo "training on GPUs $CUDA_VISIBLE_DEVICES of $LABQ_NODE as $USER"; '
            f'for i in $(seq {seconds}); do sleep 1; done; echo done']


def ray_command(python: str = sys.executable) -> list[str]:
    return [f"{shlex.quote(python)} -c {shlex.quote(RAY_PROGRAM)}"]


def ensure_demo_users(say: Callable[[str], None]) -> list[str]:
    """As root, make the demo's missing Unix users; returns who the jobs run as."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        say(f"demo: not root, so every demo job runs as you ({me})")
        return [me] * len(DEMO_USERS)
    made = []
    for user in DEMO_USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", user], check=True, capture_output=True)
            made.append(user)
    if made:
        say(f"demo: made Unix users {', '.join(made)} (system users, no login) to run its jobs")
    return list(DEMO_USERS)


def submit_demo(settings: Settings, say: Callable[[str], None]) -> list[str]:
    users = dict(zip(DEMO_USERS, ensure_demo_users(say), strict=True))
    client = Client(settings.socket)
    ids = []
    jobs = [(users[u], g, demo_command(s), n) for u, g, s, n in DEMO_JOBS]
    jobs.append((users[RAY_JOB[0]], RAY_JOB[1], ray_command(), RAY_JOB[2]))
    for user, gpus, command, name in jobs:
        body = {"command": command, "gpus": gpus, "time": "5m", "name": name,
                "as_user": user, "token": uuid.uuid4().hex, "workdir": DEMO_WORKDIR}
        try:
            ids += client.request("POST", "/v1/jobs", body)["ids"]
        except ClientError as exc:
            say(f"demo: job {name} not submitted: {exc}")
    say(f"demo: submitted {len(ids)} jobs (one runs Ray tasks inside: {RAY_JOB[2]}); try "
        "`labq queue --all`, and `labq logs ID` as root")
    return ids
