"""The Ray job (check c): run as the job's user, with the job's Python, by `python -c SOURCE`;
stdlib only (ray, and torch if it imports).

ray.init() inside the job must give a private Ray with exactly the job's GPU; three num_gpus=1
tasks then run on it. Prints `RESULT {...}`; on a failure, the tails of the job's Ray logs too
(its Ray folder goes with the job).
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
import traceback
from typing import Any


def dump_logs() -> None:  # the job's Ray folder goes with the job: keep what went wrong
    logs = os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "session_latest", "logs")
    for pattern in ("gcs_server.*", "raylet.*", "runtime_env_agent*", "dashboard_agent*",
                    "python-core-driver-*", "worker-*.err"):
        for path in sorted(glob.glob(os.path.join(logs, pattern)))[:2]:
            try:
                with open(path, errors="replace") as handle:
                    lines = handle.read().splitlines()[-20:]
            except OSError:
                continue
            print("----- " + path, *lines, sep="\n", flush=True)


def main() -> None:
    t0 = time.time()
    import ray

    ray.init()
    init_s = round(time.time() - t0, 1)
    resources = ray.cluster_resources()
    try:
        node: Any = ray._private.worker._global_node  # typed None until ray.init()
        session = node.get_session_dir_path()
    except Exception as exc:
        session = "unknown: " + repr(exc)
    info: dict[str, Any] = {
        "uid": os.getuid(), "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "init_s": init_s, "gpus": resources.get("GPU"),
        "gcs": ray.get_runtime_context().gcs_address, "session": session,
        "ray_tmpdir": os.environ.get("RAY_TMPDIR"), "ray": ray.__version__,
        "ray_override": os.environ.get("RAY_OVERRIDE_RESOURCES"),
        "resources": resources, "runs": []}
    if not resources.get("GPU"):  # num_gpus=1 tasks would wait forever: say so now
        print("RESULT " + json.dumps(info), flush=True)
        dump_logs()
        sys.exit(1)

    @ray.remote(num_gpus=1)
    def task(i: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "i": i, "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "uid": os.getuid(),
            "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(),
            "start": time.time()}
        try:
            import torch

            x = torch.randn(2048, 2048, device="cuda")
            out["trace"] = (x @ x.T).trace().item()
            torch.cuda.synchronize()
            props = torch.cuda.get_device_properties(0)
            out.update(count=torch.cuda.device_count(), uuid=str(getattr(props, "uuid", "")),
                       name=props.name)
        except Exception as exc:
            out["torch_error"] = repr(exc)[:300]
        out["end"] = time.time()
        return out

    info["runs"] = ray.get([task.remote(i) for i in range(3)], timeout=120)
    print("RESULT " + json.dumps(info), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        dump_logs()
        sys.exit(1)
