"""A job across nodes, Ray's part: run as the job's user by its runner on each node.

    python -m agents.rayjob head ADDRESS PORT GPUS NODES -- COMMAND...   (rank 0)
    python -m agents.rayjob worker HEAD:PORT ADDRESS GPUS                (the other ranks)

ADDRESS is the node's own address as its agent reports it (what the other nodes reach it at:
LABQ_NODES), given to Ray as `--node-ip-address`, so Ray never guesses an interface. The head
node starts the job's Ray head (`ray start --head`) on PORT (refused with one line if that
port is taken on the node: the job fails rather than join someone else's Ray), waits until all NODES
nodes have joined (so the program sees every GPU of the job from its first task), and execs
the command with RAY_ADDRESS set to it: `ray.init()` in the driver joins the job's
Ray. Each other node joins it as a worker (`ray start --address --block`), retrying until the
head answers, and holds its GPUs so until it is stopped. Every node has the job's token
(RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH: the same per-job token on each node, written by
the runner), so no one else's Ray client or node can join. Ray's processes run in the job's
process tree and cgroup: the runner kills them when the job ends. Each node's Ray counts the
job's CPUs, memory and an object store within it, not the node's: the runner gives the job
RAY_OVERRIDE_RESOURCES (agents.jobres.job_resource_env), which `ray start` reads. No dashboard
starts unless the job asks for one (LABQ_RAY_DASHBOARD=1).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping

START_WAIT_S = 120.0
DASHBOARD_ENV = "LABQ_RAY_DASHBOARD"


def _ray(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def _ip(address: str) -> str:
    """An IP address for Ray (an agent too old to report its address gave its host name)."""
    try:
        return str(socket.getaddrinfo(address, None)[0][4][0])
    except OSError:
        return address


def _common(address: str, gpus: str) -> list[str]:
    tmp = os.environ.get("RAY_TMPDIR", "")
    return ["--num-gpus", gpus, "--disable-usage-stats", "--node-ip-address", _ip(address),
            *(["--temp-dir", tmp] if tmp else [])]


def dashboard(env: Mapping[str, str]) -> str:
    """Whether the job's Ray head starts Ray's dashboard: only when the job asks for it
    (`LABQ_RAY_DASHBOARD=1` in its environment); it listens on the node for anyone there."""
    return "true" if env.get(DASHBOARD_ENV, "") in ("1", "true", "yes") else "false"


def port_taken(address: str, port: int) -> bool:
    """Whether something on this node already listens on `port` (another job's Ray)."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return True
    return False


def head(address: str, port: str, gpus: str, nodes: int, command: list[str]) -> int:
    ip = _ip(address)
    if port_taken(ip, int(port)):
        print(f"labq: port {port} on {ip} is taken: the job's Ray head cannot start there "
              "(submit the job again)", file=sys.stderr, flush=True)
        return 1
    started = subprocess.run(
        _ray("start", "--head", "--port", port, "--include-dashboard", dashboard(os.environ),
             *_common(address, gpus)), stdin=subprocess.DEVNULL, check=False)
    if started.returncode != 0:
        print(f"labq: the job's Ray head did not start (exit {started.returncode})",
              file=sys.stderr, flush=True)
        return started.returncode
    os.environ["RAY_ADDRESS"] = ray_address = f"{ip}:{port}"
    joined = _wait_for_nodes(ray_address, nodes)
    if joined < nodes:
        print(f"labq: only {joined} of the job's {nodes} nodes joined its Ray in "
              f"{START_WAIT_S:.0f} s; running the command anyway", file=sys.stderr, flush=True)
    os.execvp(command[0], command)


def _wait_for_nodes(address: str, nodes: int) -> int:
    """How many nodes are in the job's Ray once all `nodes` are, or START_WAIT_S passed."""
    import ray

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        deadline = time.monotonic() + START_WAIT_S
        while True:
            alive = sum(1 for node in ray.nodes() if node.get("Alive"))
            if alive >= nodes or time.monotonic() > deadline:
                return alive
            time.sleep(0.5)
    finally:
        ray.shutdown()


def worker(head_address: str, address: str, gpus: str) -> int:
    deadline = time.monotonic() + START_WAIT_S
    while True:
        joined = subprocess.run(
            _ray("start", "--address", head_address, "--block", *_common(address, gpus)),
            stdin=subprocess.DEVNULL, check=False)
        if time.monotonic() > deadline:
            return joined.returncode
        time.sleep(2)  # the head was not up yet (or went): try again


def main(argv: list[str]) -> int:
    if len(argv) >= 6 and argv[0] == "head" and argv[5] == "--":
        return head(argv[1], argv[2], argv[3], int(argv[4]), argv[6:])
    if len(argv) == 4 and argv[0] == "worker":
        return worker(argv[1], argv[2], argv[3])
    print("usage: rayjob head ADDRESS PORT GPUS NODES -- COMMAND... | "
          "rayjob worker HEAD:PORT ADDRESS GPUS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
