"""A small demo workload from several users, submitted by `labq up --demo`."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from scheduler.client import Client, ClientError
from scheduler.config import Settings

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


def demo_command(seconds: int) -> list[str]:
    return [f'echo "training on GPUs $CUDA_VISIBLE_DEVICES of $LABQ_NODE"; '
            f'for i in $(seq {seconds}); do sleep 1; done; echo done']


def submit_demo(settings: Settings, say: Callable[[str], None]) -> list[str]:
    client = Client(settings.socket)
    ids = []
    for user, gpus, seconds, name in DEMO_JOBS:
        body = {"command": demo_command(seconds), "gpus": gpus, "time": "5m", "name": name,
                "as_user": user, "token": uuid.uuid4().hex}
        try:
            ids += client.request("POST", "/v1/jobs", body)["ids"]
        except ClientError as exc:
            say(f"demo job {name} not submitted: {exc}")
    say(f"demo: submitted {len(ids)} jobs from alice, bob, carol and dave; try `labq queue --all`")
    return ids
