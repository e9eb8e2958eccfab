"""gpu-check's checks a to d, one function each, on a started `Check` (check e, the shutdown, is
in shutdown.py). Each records PASS / FAIL / SKIP lines with their evidence in `c.results` and
what it saw in observed.txt; the jobs' programs are in programs/."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import threading
import time
from typing import Any

from .host import describe_pid, gib, host_nvml, nvml_compute_pids, result_of, run_text, same_uuid
from .programs import source
from .stack import JOB_PATH, REPO, Check, say


def preflight(c: Check) -> dict[str, Any]:
    say(f"labq from {REPO} with {sys.executable} (Python {sys.version.split()[0]}); jobs run "
        f"{c.python} as {c.user.pw_name} (uid {c.user.pw_uid}) with --env "
        f"{' '.join(c.job_env) or '(none)'}")
    env = {"PATH": JOB_PATH, "HOME": c.user.pw_dir, "USER": c.user.pw_name, "LANG": "C.UTF-8"}
    for pair in c.job_env:
        key, _, value = pair.partition("=")
        env[key] = value
    try:
        done = subprocess.run([c.python, "-c", source("preflight")], env=env, cwd=c.workdir,
                              capture_output=True, text=True, timeout=c.budget(90),
                              user=c.user.pw_uid, group=c.user.pw_gid, extra_groups=[])
        info: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
        info = {"error": f"{exc}"}
    say(f"the job's Python as {c.user.pw_name}: {json.dumps(info)}")
    c.observe("preflight: the job's Python as the user", json.dumps(info, indent=1))
    if not c.simulated:
        smi = run_text(["nvidia-smi", "-L"])
        say(f"nvidia-smi -L: {smi}")
        c.observe("nvidia-smi -L", smi)
        c.nvml, why = host_nvml()
        say(f"NVML here: {json.dumps(c.nvml) if c.nvml is not None else why}")
    return info


def check_nodes(c: Check) -> str:
    """a. Returns the node's name."""
    nodes = c.cli_json("nodes")
    c.observe("labq nodes --json (after ready)", json.dumps(nodes, indent=1))
    summary = "; ".join(
        f"{n['name']} {n['state']}{' simulated' if n.get('simulated') else ''}: "
        + ", ".join(f"{g['index']}={g['model']} {g['uuid']} {gib(g['memory_total_bytes'])}"
                    for g in n["gpus"]) for n in nodes)
    name = nodes[0]["name"] if nodes else ""
    if c.simulated:
        c.results.check(bool(nodes) and all(n.get("simulated") for n in nodes),
                        "a. labq nodes shows the GPUs", f"(simulated) {summary}")
        return name
    smi = run_text(["nvidia-smi", "-L"])
    smi_count = len([x for x in smi.splitlines() if x.startswith("GPU ")])
    gpus = nodes[0]["gpus"] if len(nodes) == 1 else []
    problems = []
    if len(nodes) != 1:
        problems.append(f"{len(nodes)} nodes, expected 1")
    if nodes and nodes[0].get("simulated"):
        problems.append("the node says simulated")
    if c.nvml is None:
        problems.append("NVML unreadable here")
    else:
        if len(gpus) != len(c.nvml):
            problems.append(f"{len(gpus)} GPUs, NVML has {len(c.nvml)}")
        for mine, real in zip(gpus, c.nvml, strict=False):
            if mine["model"] != real["name"] or not same_uuid(mine["uuid"], real["uuid"]):
                problems.append(f"GPU {mine['index']}: {mine['model']} {mine['uuid']} != NVML "
                                f"{real['name']} {real['uuid']}")
    if smi_count != len(gpus):
        problems.append(f"nvidia-smi -L lists {smi_count}")
    c.results.check(not problems, "a. labq nodes shows the node's real GPUs",
                    summary + (f" -- {'; '.join(problems)}" if problems else
                               f" == NVML and nvidia-smi -L ({smi_count} GPU)"))
    return name


def check_gpu_job(c: Check, node: str, info: dict[str, Any]) -> None:
    """b. One 1-GPU job: identity, CUDA_VISIBLE_DEVICES, torch on its GPU, seen by labq."""
    release = c.workdir / "release-gpu"
    cmd = f"{c.python} -c {shlex.quote(source('gpu_job'))} {release} 60"
    job_id = c.submit("gpu-check-gpu", 1, cmd)
    job = c.wait_state(job_id, {"RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}, 60)
    if job.get("state") != "RUNNING" and job.get("state") != "SUCCEEDED":
        c.results.failed("b. GPU job runs", f"job {job_id} is {job.get('state')}: "
                         f"{job.get('reason')} {job.get('reasons')}")
        c.save_output(job_id, "job-gpu.out")
        return
    index = int(job["gpu_indices"][0])
    say(f"job {job_id} RUNNING on {job['node']} GPU {index}; waiting for its RESULT line")
    result = c.wait_for(lambda: result_of(c.output(job_id)), 150)
    # While it holds its GPU busy: does labq see its process there?
    seen: dict[str, Any] = {}
    last_nodes: list[dict[str, Any]] = []

    def job_process_seen() -> bool:
        last_nodes[:] = c.cli_json("nodes")
        gpu = c.gpu_of(last_nodes, job["node"], index)
        seen.clear()
        seen.update(gpu)
        return any(p.get("labq_job") == job_id for p in gpu.get("processes", []))

    if result is not None and not c.simulated:
        c.wait_for(job_process_seen, 20, interval=1.0)
    else:
        job_process_seen()
    metrics = c.metrics()
    wanted = re.compile(r'^labq_gpu_(utilization_ratio|memory_used_bytes|memory_total_bytes|'
                        r'foreign_processes)\{[^}]*gpu="' + str(index) + '"')
    metric_lines = [x for x in metrics.splitlines() if wanted.match(x)]
    top = c.cli("top", "--once", check=False).stdout
    compute = nvml_compute_pids() if not c.simulated else "simulated"
    c.observe(f"job {job_id} running: labq nodes --json", json.dumps(last_nodes, indent=1))
    c.observe(f"job {job_id} running: /metrics (GPU {index})", "\n".join(metric_lines))
    c.observe(f"job {job_id} running: labq top --once", top)
    c.observe(f"job {job_id} running: NVML compute processes here", repr(compute))
    if not c.simulated:
        c.observe("nvidia-smi while the job runs", run_text(["nvidia-smi"]))
    release.write_text("go\n")
    done = c.wait_state(job_id, {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}, 60)
    text = c.save_output(job_id, "job-gpu.out")
    result = result_of(text)
    state = f"job {job_id} {done.get('state')} (exit {done.get('exit_code')})"
    if result is None:
        c.results.failed("b. GPU job runs", f"{state}, no RESULT line; its output ends: "
                         f"{text[-800:]!r}")
        return
    c.results.check(done.get("state") == "SUCCEEDED" and result["uid"] == c.user.pw_uid,
                    "b. the job runs as the submitting user",
                    f"{state}; uid {result['uid']} ({result['user']}), {c.user.pw_name} is uid "
                    f"{c.user.pw_uid}; python {result['python']}")
    c.results.check(result["cvd"] == str(index) and result["order"] == "PCI_BUS_ID",
                    "b. CUDA_VISIBLE_DEVICES is the job's GPU",
                    f"CUDA_VISIBLE_DEVICES={result['cvd']} CUDA_DEVICE_ORDER={result['order']}, "
                    f"labq allocated {job['node']} GPU {job['gpu_indices']}")
    if c.simulated:
        c.results.check(result.get("ray_override") == '{"GPU": 1}',
                        "b. simulated GPUs: RAY_OVERRIDE_RESOURCES gives Ray the count",
                        f"RAY_OVERRIDE_RESOURCES={result.get('ray_override')}")
    else:
        c.results.check(result.get("ray_override") is None,
                        "b. real GPUs: no RAY_OVERRIDE_RESOURCES (Ray reads CUDA_VISIBLE_DEVICES)",
                        f"RAY_OVERRIDE_RESOURCES={result.get('ray_override')}")
    want_uuid = c.nvml_uuid(index)
    if "nvml_uuids" in result and not c.simulated:
        c.results.check(result["nvml_uuids"] == [want_uuid],
                        "b. NVML inside the job: CUDA_VISIBLE_DEVICES index is the allocated GPU",
                        f"job's NVML uuid of index {result['cvd']}: {result['nvml_uuids']}, "
                        f"host NVML GPU {index}: {want_uuid}")
    if "torch" not in result:
        why = result.get("torch_error") or info.get("torch_error") or "torch missing"
        c.results.skipped("b. torch sees exactly the job's GPU", f"torch does not import in the "
                          f"job: {why}")
    elif c.simulated:
        c.results.skipped("b. torch sees exactly the job's GPU",
                          f"simulated GPUs (torch {result['torch']}: "
                          f"{result.get('torch_error', 'imported')})")
    else:
        c.torch_ok = "torch_error" not in result
        err = result.get("matmul_rel_err")
        ok = (c.torch_ok and result.get("device_count") == 1
              and same_uuid(result.get("uuid"), want_uuid) and err is not None and err < 1e-2)
        c.results.check(ok, "b. torch sees exactly the job's GPU and computes on it",
                        f"torch {result['torch']} (CUDA {result.get('torch_cuda')}): "
                        f"device_count={result.get('device_count')}, device 0 = "
                        f"{result.get('name')} uuid {result.get('uuid')} (NVML GPU {index}: "
                        f"{want_uuid}); 4096^2 matmul {result.get('tflops')} TFLOP/s, "
                        f"max rel. error vs CPU {err}"
                        + (f"; error: {result['torch_error']}" if "torch_error" in result
                           else ""))
    procs = seen.get("processes", [])
    mem = (f"labq nodes: GPU {index} memory used {gib(seen.get('memory_used_bytes'))} of "
           f"{gib(seen.get('memory_total_bytes'))}, utilization {seen.get('utilization')}; "
           f"/metrics: {'; '.join(metric_lines) or 'none'}")
    if c.simulated:
        c.results.skipped("b. labq sees the job's process on its GPU",
                          f"simulated GPUs have no processes ({mem})")
        return
    ours = [p for p in procs if p.get("labq_job") == job_id]
    if ours:
        c.results.passed("b. labq sees the job's process on its GPU",
                         f"pid {ours[0]['pid']} ({ours[0]['name']}) labq_job={job_id} "
                         f"{gib(ours[0].get('used_memory_bytes'))}; {mem}")
    elif not procs:
        if isinstance(compute, list) and not compute:
            c.results.skipped("b. labq sees the job's process on its GPU",
                              f"NVML lists no compute processes on this machine while the job "
                              f"computes (a VM/container limitation: NVML's process list is "
                              f"empty); {mem}")
        else:
            c.results.failed("b. labq sees the job's process on its GPU",
                             f"labq nodes lists none, NVML here lists {compute}; {mem}")
    else:
        c.results.failed("b. labq sees the job's process on its GPU",
                         "NVML lists processes labq does not tie to the job: " + "; ".join(
                             f"{describe_pid(int(p['pid']))} labq_job={p.get('labq_job')}"
                             for p in procs) + f"; {mem}")


def check_ray_job(c: Check) -> None:
    """c. ray.init() inside a 1-GPU job: a private Ray with exactly that GPU."""
    cmd = f"{c.python} -c {shlex.quote(source('ray_job'))}"
    job_id = c.submit("gpu-check-ray", 1, cmd)
    done = c.wait_state(job_id, {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}, 210)
    text = c.save_output(job_id, "job-ray.out")
    result = result_of(text)
    state = f"job {job_id} {done.get('state')} (exit {done.get('exit_code')})"
    if result is None:
        c.results.failed("c. Ray inside a job", f"{state}; output ends: {text[-1500:]!r}")
        return
    index = str(done["gpu_indices"][0])
    runs = result["runs"]
    gcs_port = result["gcs"].rsplit(":", 1)[-1]
    c.results.check(done.get("state") == "SUCCEEDED" and result["gpus"] == 1
                    and result["uid"] == c.user.pw_uid and gcs_port != "6379"
                    and str(result["session"]).startswith(str(result["ray_tmpdir"])),
                    "c. ray.init() in a job: a private Ray with exactly its GPU",
                    f"{state}; Ray {result['ray']} up in {result['init_s']} s as uid "
                    f"{result['uid']}; cluster_resources GPU={result['gpus']}; GCS "
                    f"{result['gcs']} (not 6379); session {result['session']} under RAY_TMPDIR; "
                    f"RAY_OVERRIDE_RESOURCES={result['ray_override']}")
    if not runs:
        return
    spans = sorted((r["start"], r["end"]) for r in runs)
    serial = all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    ok = (len(runs) == 3 and all(r["cvd"] == index and r["gpu_ids"] == [index]
                                 and r["uid"] == c.user.pw_uid for r in runs) and serial)
    c.results.check(ok, "c. 3 num_gpus=1 tasks run on the job's GPU, one at a time",
                    "; ".join(f"task {r['i']}: gpu_ids={r['gpu_ids']} CUDA_VISIBLE_DEVICES="
                              f"{r['cvd']} uid {r['uid']}" for r in runs)
                    + f" (job's GPU {index}; serial: {serial})")
    if c.simulated or not c.torch_ok:
        c.results.skipped("c. torch in the Ray tasks", "simulated GPUs" if c.simulated else
                          "torch did not work in check b")
        return
    want = c.nvml_uuid(int(index))
    ok = len(runs) == 3 and all("torch_error" not in r and r.get("count") == 1
                                and same_uuid(r.get("uuid"), want) for r in runs)
    c.results.check(ok, "c. torch in the Ray tasks runs on the job's GPU",
                    "; ".join(f"task {r['i']}: " + (r["torch_error"] if "torch_error" in r else
                                                   f"{r.get('name')} uuid {r.get('uuid')} "
                                                   f"count {r.get('count')}") for r in runs)
                    + f" (NVML GPU {index}: {want})")


def check_foreign(c: Check, node: str) -> None:
    """d. A GPU busy with a process labq did not start gets no new job until it is free."""
    name = "d. a GPU busy outside labq blocks new jobs until it is free"
    if c.simulated:
        c.results.skipped(name, "simulated GPUs have no processes")
        return
    total = len(c.nvml or [])
    if not total:
        c.results.failed(name, "NVML lists no GPU")
        return
    env = {**c.env, "CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    say("starting a process outside labq that holds 1 GiB on GPU 0")
    holder = subprocess.Popen([sys.executable, "-c", source("holder"), str(1 << 30), "240"],
                              env=env, cwd="/", stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    c.holder = holder
    lines: list[str] = []

    def read() -> None:
        assert holder.stdout is not None
        for line in holder.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    if not c.wait_for(lambda: any(x.startswith("HOLDING") for x in lines)
                      or holder.poll() is not None, 60, interval=0.2) \
            or holder.poll() is not None:
        c.results.failed(name, f"the outside process could not hold GPU memory: "
                         f"{''.join(lines)[-800:]!r}")
        return
    say(f"pid {holder.pid} holds GPU 0 ({''.join(lines).strip()}); waiting for labq to see it")
    last: list[dict[str, Any]] = []

    def foreign_seen() -> bool:
        last[:] = c.cli_json("nodes")
        return any(p["gpu"] == 0 for n in last for p in n.get("foreign_processes", []))

    seen = c.wait_for(foreign_seen, 20, interval=1.0)
    c.observe("outside process on GPU 0: labq nodes --json", json.dumps(last, indent=1))
    if not seen:
        compute = nvml_compute_pids()
        c.observe("outside process on GPU 0: NVML compute processes here", repr(compute))
        if isinstance(compute, list) and not compute:
            c.results.skipped(name, f"NVML lists no compute processes on this machine, not even "
                              f"pid {holder.pid} holding 1 GiB on GPU 0 (a VM/container "
                              "limitation), so labq cannot see processes it did not start here")
        else:
            c.results.failed(name, f"labq nodes shows no process labq did not start on GPU 0 "
                             f"after 20 s; NVML here lists {compute}")
        stop_holder(c)
        return
    foreign = [p for n in last for p in n.get("foreign_processes", [])]
    nodes_text = c.cli("nodes").stdout
    c.observe("outside process on GPU 0: labq nodes", nodes_text)
    note = [x for x in nodes_text.splitlines() if x.startswith("note:")]
    same = any(p["pid"] == holder.pid for p in foreign)
    c.results.passed("d. labq nodes shows the process it did not start",
                     f"foreign_processes {foreign} (the outside process is pid {holder.pid}"
                     + ("" if same else ": NVML reports pids of another PID namespace") + "); "
                     + " | ".join(note))
    release = c.workdir / "release-foreign"
    cmd = f"{c.python} -c {shlex.quote(source('gpu_job'))} {release} 0"
    job_id = c.submit("gpu-check-foreign", total, cmd)
    job = c.wait_state(job_id, {"RUNNING", "SUCCEEDED", "FAILED"}, 8)  # it must not start
    c.observe(f"job {job_id} while the outside process holds GPU 0", json.dumps(job, indent=1))
    shown = c.cli("show", job_id, check=False).stdout
    waiting = [x.strip() for x in shown.splitlines() if x.strip().startswith("waiting:")]
    pending = job.get("state") == "PENDING" and bool(job.get("reasons"))
    named = any(str(holder.pid) in w or "did not start" in w or "foreign" in w.lower()
                for w in waiting)
    c.results.check(pending, "d. a job needing that GPU waits",
                    f"job {job_id} ({total} GPU) is {job.get('state')} after 8 s: "
                    f"{' | '.join(waiting) or job.get('reasons')}")
    c.results.check(named, "d. its reason says a process labq did not start holds the GPU",
                    " | ".join(waiting) or str(job.get("reasons")))
    stop_holder(c)
    killed_at = time.monotonic()
    done = c.wait_state(job_id, {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}, 90)
    text = c.save_output(job_id, "job-foreign.out")
    result = result_of(text) or {}
    c.results.check(done.get("state") == "SUCCEEDED",
                    "d. the job starts once the outside process is gone",
                    f"job {job_id} {done.get('state')} (exit {done.get('exit_code')}) "
                    f"{time.monotonic() - killed_at:.1f} s after the kill, on GPUs "
                    f"{done.get('gpu_indices')}; CUDA_VISIBLE_DEVICES={result.get('cvd')}"
                    + (f", torch {result.get('name')} x{result.get('device_count')}"
                       if "device_count" in result else ""))


def stop_holder(c: Check) -> None:
    if c.holder is not None and c.holder.poll() is None:
        c.holder.kill()
        c.holder.wait(10)
        say(f"killed the outside process {c.holder.pid}")


