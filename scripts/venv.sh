# Sourced by scripts/demo and scripts/test: make .venv from a Python every user can run.
#
# Jobs run as their users and often run the same Python (a job that uses Ray, a job that calls
# labq). A venv made from a Python inside root's home (pyenv) cannot be used by them, so prefer
# the system's /usr/bin/python3 (>= 3.11), and make sure the checkout can be traversed.
pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if /usr/bin/python3 -c 'import sys, venv; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo /usr/bin/python3
  else
    echo python3
  fi
}

make_venv() {
  local py
  py=$(pick_python)
  if [ -x .venv/bin/python ] && [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1 &&
     ! runuser -u nobody -- .venv/bin/python -c pass 2>/dev/null; then
    echo "scripts: .venv is not usable by other users (made from a Python they cannot run); making it again from $py"
    rm -rf .venv
  fi
  if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv || { echo "need Python >= 3.11 with venv (Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
  fi
  # Jobs run as other users: they must be able to reach this checkout's .venv (traverse only).
  if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1 && ! runuser -u nobody -- test -x .venv/bin/python; then
    local dir
    dir=$(pwd)
    while [ "$dir" != "/" ]; do
      if ! runuser -u nobody -- test -x "$dir"; then
        echo "scripts: letting every user traverse $dir (o+x, no listing) so jobs can run .venv/bin/python"
        chmod o+x "$dir"
      fi
      dir=$(dirname "$dir")
    done
  fi
}

# Compile labq's modules once, readable by every user: a user's labq command then loads them
# instead of compiling them at each call (it cannot write caches in this checkout), and a cache
# folder left unreadable by an earlier version is opened up. The daemons write no caches.
compile_labq() {
  find scheduler agents -type d -name __pycache__ -exec chmod -R go+rX {} + 2>/dev/null || true
  (umask 022 && .venv/bin/python -m compileall -q scheduler agents >/dev/null)
}
