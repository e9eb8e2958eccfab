"""The only module that talks to Ray: submit a job pinned to its node and GPUs, watch, stop.

Pinning: each Ray node carries the label `labq-node=<name>` and one custom resource
`labq_gpu_<i>` per GPU index. A job asks for exactly the `labq_gpu_<i>` it was given, with a
label selector for its node, and gets `CUDA_VISIBLE_DEVICES` set to those indices. labq only
submits jobs whose GPUs it has just allocated, so Ray never holds them pending.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.model import Job

NODE_LABEL = "labq-node"
log = logging.getLogger(__name__)


def gpu_resource(index: int) -> str:
    return f"labq_gpu_{index}"


def node_resources(gpu_count: int) -> dict[str, float]:
    """The custom resources a labq GPU node registers with Ray (`ray start --resources`)."""
    return {gpu_resource(i): 1.0 for i in range(gpu_count)}


def submission_id(job: Job) -> str:
    """Ray's id for the job's current attempt: the labq job id; `<id>.<n>` once requeued n times
    (Ray keeps ids forever, and a requeued job must start a new Ray job)."""
    return job.id if job.restarts == 0 else f"{job.id}.{job.restarts}"


def entrypoint_for(job: Job, indices: Sequence[int]) -> str:
    """The shell line Ray runs. One argument is taken as a shell command, several are quoted."""
    command = job.command[0] if len(job.command) == 1 else shlex.join(job.command)
    visible = ",".join(str(i) for i in indices)
    return f"export CUDA_VISIBLE_DEVICES={visible}; cd {shlex.quote(job.workdir)} && {command}"


@dataclass(frozen=True)
class RayStatus:
    state: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    exit_code: int | None
    message: str
    start_time: float | None = None  # Unix seconds, when Ray accepted the job
    end_time: float | None = None  # Unix seconds, when it ended

    @property
    def terminal(self) -> bool:
        return self.state in ("STOPPED", "SUCCEEDED", "FAILED")


class LaunchError(RuntimeError):
    """Ray did not accept a job."""


class RayLauncher:
    """Blocking calls to Ray's Job Submission API; the coordinator runs them in threads."""

    def __init__(self, address: str, stop_grace_s: int = 10) -> None:
        self.address = address
        self.stop_grace_s = stop_grace_s
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address)
        return self._client

    def launch(self, job: Job, node: str, indices: Sequence[int]) -> None:
        """Submit `job` with `submission_id` = its id. A retry of an accepted launch is a no-op."""
        env = {
            **job.env,
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in indices),
            "LABQ_JOB_ID": job.id,
            "LABQ_NODE": node,
            "LABQ_USER": job.user,
            # Ray's job supervisor: SIGTERM on stop (cancel, time limit, preemption), then
            # SIGKILL after this grace period.
            "RAY_JOB_STOP_WAIT_TIME_S": str(self.stop_grace_s),
        }
        try:
            self.client.submit_job(
                entrypoint=entrypoint_for(job, indices),
                submission_id=submission_id(job),
                runtime_env={"env_vars": env},
                entrypoint_resources={gpu_resource(i): 1.0 for i in indices},
                entrypoint_label_selector={NODE_LABEL: node},
                metadata={"labq_user": job.user, "labq_account": job.account,
                          "labq_name": job.name[:100]},
            )
        except Exception as exc:
            if self.status(job) is not None:
                return  # an earlier try got through: same submission_id, nothing to do
            raise LaunchError(f"Ray refused job {job.id}: {exc}") from exc

    def status(self, job: Job) -> RayStatus | None:
        """Ray's view of a job, or None if Ray does not know it (never launched, or forgotten)."""
        try:
            info = self.client.get_job_info(submission_id(job))
        except Exception as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return None
            raise
        exit_code = getattr(info, "driver_exit_code", None)
        start = info.start_time / 1000 if info.start_time else None
        end = info.end_time / 1000 if info.end_time else None
        return RayStatus(str(info.status.value), exit_code, info.message or "", start, end)

    def stop(self, job: Job) -> bool:
        try:
            return bool(self.client.stop_job(submission_id(job)))
        except Exception as exc:
            log.warning("stopping Ray job %s failed: %s", submission_id(job), exc)
            return False

    def logs(self, job: Job) -> str | None:
        try:
            return str(self.client.get_job_logs(submission_id(job)))
        except Exception as exc:
            log.info("no logs from Ray for job %s: %s", submission_id(job), exc)
            return None
