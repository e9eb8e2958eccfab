"""gpu-check: prove labq's real-GPU path on this node, end to end, in a few minutes.

Run as root on a node with NVIDIA GPUs and nothing else running on them (drain it first if it
is in a cluster). It starts a throwaway `labq up` (NVML, its own temporary LABQ_HOME, an empty
config.toml so that /etc/labq is not read, metrics on a free port), then checks, printing one
PASS / FAIL / SKIP line per check with its evidence:

  a. `labq nodes` shows this node's real GPUs (count, models, UUIDs as NVML and nvidia-smi say);
  b. a 1-GPU job submitted by USER runs as USER with CUDA_VISIBLE_DEVICES = its GPU; torch (when
     it imports) sees exactly that GPU (same UUID as NVML) and multiplies matrices on it; while it
     runs, labq sees the job's process on its GPU (`labq nodes`, /metrics);
  c. a 1-GPU job that calls ray.init() gets a private Ray with exactly 1 GPU (detected from
     CUDA_VISIBLE_DEVICES), whose 3 num_gpus=1 tasks run on that GPU as USER;
  d. a process started outside labq that holds GPU memory blocks new jobs on its GPU (shown in
     `labq nodes`); the waiting job starts once that process is gone;
  e. SIGTERM to `labq up` leaves no daemon, runner, job process or job cgroup behind.

It exits 0 when nothing FAILed. Everything it saw goes to --report DIR: labq-up.log (labq up's
output and its daemons' logs), job-gpu.out, job-ray.out, job-foreign.out, observed.txt.

    sudo scripts/gpu-check --user alice [--python /usr/bin/python3] [--env K=V ...]

--simulate SPEC runs the same flow on SIMULATED GPUs (`labq up --simulate SPEC`), skipping what
needs real GPUs: a rehearsal on a machine without any.

The package: stack.py (the throwaway stack, `Check`, and the PASS/FAIL/SKIP `Results`),
checks.py (checks a to d), shutdown.py (check e, the logs), host.py (NVML, nvidia-smi, /proc),
run.py (the command line) and programs/ (what the jobs run: standalone, stdlib-only scripts).
`scripts/gpu-check` runs `run.main`; so does `python -m tests.gpucheck` from the repository root.
"""
