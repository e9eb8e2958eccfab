"""The programs gpu-check runs as jobs (and the one it runs outside labq): each a standalone
script, stdlib only plus what it probes (torch, ray, pynvml), because it runs with the job's
Python (which may lack labq's packages) as the job's user (who may not be able to read this
checkout). So gpu-check passes a program's text, not its path: `python -c SOURCE ARGS...`; each
one is also runnable by path (`python tests/gpucheck/programs/gpu_job.py RELEASE HOLD_S`).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def source(name: str) -> str:
    """The text of program `name` (gpu_job, ray_job, holder, preflight), for `python -c`."""
    return (HERE / f"{name}.py").read_text()
