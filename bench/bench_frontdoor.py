"""The API's front door under a flood (issue 18): how fast another user is served while one
user (a) holds as many idle connections as its open-file limit allows, (b) reconnects in a
tight loop from two processes; how many connections the coordinator refuses per second.

Starts its own `labq up --simulate 1x2` (as root: the attacker and the victim are real Unix
users, `labq-flood` and `alice`). Prints figures only.

Usage: python bench/bench_frontdoor.py [--churn-s 10]
"""

from __future__ import annotations

import argparse
import json
import pwd
import subprocess
import time
from typing import Any

from common import machine, summary
from stack import Stack, ensure_user

SYSTEM_PYTHON = "/usr/bin/python3"
ATTACKER, VICTIM = "labq-flood", "alice"

HOLD = r'''
import json, resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks, start = [], time.monotonic()
for _ in range(min(20000, hard - 32)):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    socks.append(s)
print(json.dumps({"opened": len(socks), "seconds": time.monotonic() - start}), flush=True)
sys.stdin.readline()
'''

CHURN = r'''
import socket, sys, time
end, n, held = time.monotonic() + float(sys.argv[2]), 0, []
while time.monotonic() < end:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sys.argv[1])
    except OSError:
        break
    n += 1
    held.append(s)
    if len(held) > 500:
        for x in held:
            x.close()
        held = []
print(n)
'''

# GET /v1/whoami N times, connecting like labq's client does today (a timeout socket: a full
# queue is EAGAIN at once) or with a blocking connect bounded by SO_SNDTIMEO (waits its turn).
WHOAMI = r'''
import json, socket, struct, sys, time
path, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = []
for _ in range(n):
    start = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if mode == "blocking":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 10, 0))
            s.connect(path)
        else:
            s.settimeout(10)
            s.connect(path)
        s.settimeout(10)
        s.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: labq\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        out.append([data.split(b" ")[1].decode(), time.monotonic() - start])
    except OSError as exc:
        out.append([type(exc).__name__, time.monotonic() - start])
    finally:
        s.close()
    time.sleep(0.1)
print(json.dumps(out))
'''


def as_user(user: str, code: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
    entry = pwd.getpwnam(user)
    return subprocess.Popen([SYSTEM_PYTHON, "-c", code, *args], user=entry.pw_uid,
                            group=entry.pw_gid, extra_groups=[], cwd="/", text=True,
                            env={"PATH": "/usr/bin:/bin"}, **kw)


def submit_times(stack: Stack, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        stack.labq("submit", "--time", "1m", "--", "true", user=VICTIM)
        times.append(time.perf_counter() - start)
    return times


def whoami(sock: str, mode: str, n: int) -> str:
    proc = as_user(VICTIM, WHOAMI, sock, mode, str(n), stdout=subprocess.PIPE)
    results = json.loads(proc.communicate(timeout=300)[0])
    ok = [t for status, t in results if status == "200"]
    failed = sorted({status for status, _ in results if status != "200"})
    return (f"{len(ok)}/{n} answered, {summary(ok) if ok else '-'}"
            + (f"; failed: {', '.join(failed)}" if failed else ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--churn-s", type=float, default=10.0)
    args = parser.parse_args()
    ensure_user(ATTACKER)
    print(machine())
    stack = Stack("1x2").start()
    try:
        sock = str(stack.home / "labq.sock")
        print(f"labq submit as {VICTIM}, no flood: {summary(submit_times(stack, 5))}")

        hold = as_user(ATTACKER, HOLD, sock, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert hold.stdout is not None and hold.stdin is not None
        opened = json.loads(hold.stdout.readline())
        print(f"{ATTACKER} opened {opened['opened']:,} idle connections in "
              f"{opened['seconds']:.2f} s (all but the per-uid cap closed at accept)")
        print(f"  labq submit as {VICTIM} meanwhile: {summary(submit_times(stack, 5))}")
        print(f"  GET /v1/whoami meanwhile: {whoami(sock, 'timeout', 20)}")
        hold.stdin.write("done\n")
        hold.stdin.flush()
        hold.wait(60)

        churn = [as_user(ATTACKER, CHURN, sock, str(args.churn_s), stdout=subprocess.PIPE)
                 for _ in range(2)]
        time.sleep(0.5)
        began = time.monotonic()
        timeout_mode = whoami(sock, "timeout", 20)
        blocking_mode = whoami(sock, "blocking", 20)
        during = time.monotonic() - began
        counts = [int(p.communicate(timeout=args.churn_s + 60)[0] or 0) for p in churn]
        print(f"{ATTACKER} reconnecting in a loop from 2 processes for {args.churn_s:g} s: "
              f"{sum(counts):,} connections accepted and refused "
              f"({sum(counts) / args.churn_s:,.0f}/s)")
        print(f"  GET /v1/whoami, timeout-socket connect (labq's client today): {timeout_mode}")
        print(f"  GET /v1/whoami, blocking connect with SO_SNDTIMEO: {blocking_mode}")
        if during > args.churn_s:
            print(f"  (the requests took {during:.1f} s: part of them ran after the churn)")
        log = (stack.home / "logs" / "coordinator.log").read_text().splitlines()
        print(f"coordinator log: {len(log)} lines in all")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
