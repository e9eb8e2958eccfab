"""A small demo workload from several users, submitted by `labq up --demo`.

First, through the admin API (whoever runs `labq up` is an admin of it), a small account tree
with shares and a budget, so fair share shows: lab -> vision (3 shares: alice, bob) and nlp
(1 share: carol, dave), nlp with a monthly budget; what is there already is left as it is.
Jobs run as their users: run as root, the demo makes the Unix users alice, bob, carol and dave
if they are missing (system users without a login shell) and says so; run as anyone else,
every demo job is yours, charged to the account of the demo user it stands for. One job uses
Ray inside: its `ray.init()` gets a Ray of its own that sees exactly the job's GPUs.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scheduler.client import Client, ClientError
from scheduler.config import Settings, login_defs_uid_min

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
DEMO_TREE = [
    # (account, parent, shares among its siblings, demo users in it)
    ("lab", "root", 1.0, ()),
    ("vision", "lab", 3.0, ("alice", "bob")),
    ("nlp", "lab", 1.0, ("carol", "dave")),
]
DEMO_BUDGET = ("nlp", 10.0)  # (account, billed GPU-hours a month)

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
    floor = login_defs_uid_min()
    for user in DEMO_USERS:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            # People's uids (UID_MIN and up), no login: jobs never run as a system uid.
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            user], check=True, capture_output=True)
            made.append(user)
            continue
        if entry.pw_uid < floor:
            say(f"demo: user {user} has the system uid {entry.pw_uid} (below {floor}): labq "
                "runs no job as a system user, so that user's demo jobs will be refused")
    if made:
        say(f"demo: made Unix users {', '.join(made)} (no login) to run its jobs")
    return list(DEMO_USERS)


def setup_accounts(client: Client, users: dict[str, str],
                   say: Callable[[str], None]) -> dict[str, str]:
    """Add the demo's accounts, memberships and budget where missing, print the tree and
    the budget, and return the account each demo user's jobs charge (none if it failed)."""
    try:
        state = client.request("GET", "/v1/accounts")
        have = {a["name"] for a in state["accounts"]}
        member = {(acct, u["name"]) for u in state["users"] for acct in u["accounts"]}
        changes: list[dict[str, Any]] = []
        for account, parent, shares, demo_users in DEMO_TREE:
            if account not in have:
                changes.append({"target": "account", "op": "add", "name": account,
                                "parent": parent, "shares": shares})
            for user in dict.fromkeys(users[u] for u in demo_users):  # one Unix user if not root
                if (account, user) not in member:
                    changes.append({"target": "user", "op": "add", "name": user,
                                    "account": account})
        budget_account, hours = DEMO_BUDGET
        if not any(b["scope"] == "account" and b["name"] == budget_account
                   for b in state["budgets"]):
            changes.append({"target": "budget", "op": "set", "scope": "account",
                            "name": budget_account, "limit": hours})
        for body in changes:
            client.request("POST", "/v1/admin/accounts", body)
        state = client.request("GET", "/v1/accounts")
    except ClientError as exc:
        say(f"demo: no demo accounts ({exc}); jobs charge the default account")
        return {}
    for line in tree_lines(state):
        say(f"demo: {line}")
    say("demo: `labq admin account list` and `labq admin budget list` show them; "
        "`labq quota --all` fair share and budgets; `labq priority --all` the queue's order")
    return {u: account for account, _, _, demo_users in DEMO_TREE for u in demo_users}


def tree_lines(state: dict[str, Any]) -> list[str]:
    """The demo's part of the tree, with shares and members, and its budget, from
    `GET /v1/accounts`."""
    accounts = {a["name"]: a for a in state["accounts"]}
    members: dict[str, list[str]] = {}
    for user in state["users"]:
        for account in user["accounts"]:
            members.setdefault(account, []).append(user["name"])
    lines = ["account tree (shares: users)"]
    for account, _, _, _ in DEMO_TREE:
        if account not in accounts:
            continue
        depth = 1
        parent = accounts[account]["parent"]
        while parent in accounts and depth < 8:
            depth, parent = depth + 1, accounts[parent]["parent"]
        who = ", ".join(sorted(members.get(account, [])))
        lines.append(f"{'  ' * depth}{account} ({accounts[account]['shares']:g}"
                     f"{': ' + who if who else ''})")
    for row in state["budgets"]:
        if row["scope"] == "account" and row["name"] == DEMO_BUDGET[0]:
            lines.append(f"budget {row['name']}: {row['left_hours']:.1f} of "
                         f"{row['limit_hours']:.1f} billed GPU-hours left this {row['period']}")
    return lines


def demo_workdir() -> Path:
    """Where the demo's jobs run and write their output: a fresh folder that every user may
    write to and none may touch another's files in (like /tmp, whose older `labq-<id>.out` of
    other users an earlier demo would meet)."""
    path = Path(tempfile.mkdtemp(prefix="labq-demo-"))
    os.chmod(path, 0o1777 if os.geteuid() == 0 else 0o700)
    return path


def submit_demo(settings: Settings, say: Callable[[str], None]) -> list[str]:
    users = dict(zip(DEMO_USERS, ensure_demo_users(say), strict=True))
    client = Client(settings.socket)
    charge = setup_accounts(client, users, say)
    ids = []
    workdir = demo_workdir()
    jobs = [(u, g, demo_command(s), n) for u, g, s, n in DEMO_JOBS]
    jobs.append((RAY_JOB[0], RAY_JOB[1], ray_command(), RAY_JOB[2]))
    for demo_user, gpus, command, name in jobs:
        body = {"command": command, "gpus": gpus, "time": "5m", "name": name,
                "as_user": users[demo_user], "account": charge.get(demo_user),
                "token": uuid.uuid4().hex, "workdir": str(workdir)}
        try:
            ids += client.request("POST", "/v1/jobs", body)["ids"]
        except ClientError as exc:
            say(f"demo: job {name} not submitted: {exc}")
    say(f"demo: its jobs run in {workdir} (their output: labq-<id>.out there)")
    say(f"demo: submitted {len(ids)} jobs (one runs Ray tasks inside: {RAY_JOB[2]}); try "
        "`labq queue --all`, and `labq logs ID` as root")
    return ids
