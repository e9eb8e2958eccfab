"""The heaviest single user against a real `labq up`: how much of the store and of the
coordinator's memory one unprivileged user can take (issue 18, item 2).

Starts `labq up --simulate 1x1`; as the Unix user `alice` (no admin there: the caps apply),
submits jobs of the largest command (max_command_bytes) and environment (max_env_bytes) until
the API refuses (the per-user byte budget, max_stored_bytes_per_user, or the job caps), then
runs 6 concurrent full listings (`GET /v1/jobs?done=1`, page after page, as `labq queue
--done` does), then cancels everything (ended jobs keep their command only) and lists again.
Prints the store's used memory and the coordinator's resident and peak memory at each step.
Usage: python bench/bench_user_memory.py [--stored-mib N]
"""

from __future__ import annotations

import argparse
import os
import pwd
import subprocess
import sys
import urllib.request
from pathlib import Path

from common import machine
from stack import Stack

USER = "alice"

CLIENT = r"""
import json, sys, threading, uuid
from scheduler.client import Client, ClientError, list_jobs
socket, phase = sys.argv[1], sys.argv[2]
client = Client(socket, timeout=120)
if phase == "fill":
    body = {"command": ["echo", "c" * (60 << 10)], "workdir": "/tmp", "time": "1h",
            "env": {"E": "e" * (60 << 10)}}
    made = 0
    while True:
        try:
            client.request("POST", "/v1/jobs", {**body, "token": uuid.uuid4().hex})
            made += 1
        except ClientError as exc:
            print(json.dumps({"made": made, "refused": str(exc)}))
            break
elif phase == "list":
    sizes = []
    def one():
        lines = list_jobs(Client(socket, timeout=300), "done=1&done_limit=1000")
        sizes.append(len(json.dumps(lines)))
    threads = [threading.Thread(target=one) for _ in range(6)]
    [t.start() for t in threads]; [t.join() for t in threads]
    print(json.dumps({"bytes": sizes}))
elif phase == "cancel":
    ids = [j["id"] for j in list_jobs(client) if j["state"] in ("PENDING", "HELD")]
    for job_id in ids:
        client.request("POST", f"/v1/jobs/{job_id}/cancel", {})
    print(json.dumps({"cancelled": len(ids)}))
"""


def as_user(stack: Stack, *args: str) -> str:
    entry = pwd.getpwnam(USER)
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", CLIENT, str(stack.home / "labq.sock"), *args],
                            user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], cwd="/",
                            env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=1800)
    if result.returncode:
        raise RuntimeError(result.stderr)
    return result.stdout.strip()


def memory(stack: Stack) -> str:
    pid = stack.pids("scheduler.cli coordinator")[0]
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    with urllib.request.urlopen(stack.metrics_url, timeout=60) as answer:
        text = answer.read().decode()
    used = next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("labq_store_memory_used_bytes "))
    return (f"store {used / 2**20:7.1f} MiB; coordinator RSS {status['VmRSS'].strip():>10}, "
            f"peak {status['VmHWM'].strip():>10}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stored-mib", type=int, default=256)
    args = parser.parse_args()
    stack = Stack("1x1:A100-80GB",
                  LABQ_MAX_STORED_BYTES_PER_USER=str(args.stored_mib << 20)).start()
    try:
        print(f"machine: {machine()}; one user, max_stored_bytes_per_user {args.stored_mib} MiB")
        print(f"{'idle':<34}: {memory(stack)}")
        print(f"{'fill until refused':<34}: {as_user(stack, 'fill')}")
        print(f"{'  then':<34}: {memory(stack)}")
        print(f"{'6 concurrent full listings':<34}: {as_user(stack, 'list')[:80]}")
        print(f"{'  then':<34}: {memory(stack)}")
        print(f"{'cancel every waiting job':<34}: {as_user(stack, 'cancel')}")
        print(f"{'  then':<34}: {memory(stack)}")
        print(f"{'fill again until refused':<34}: {as_user(stack, 'fill')}")
        print(f"{'  then':<34}: {memory(stack)}")
    finally:
        stack.stop()


if __name__ == "__main__":
    os.umask(0o022)
    main()
