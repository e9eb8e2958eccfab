"""gpu-check without a GPU: its programs stay standalone stdlib scripts that run by path or as
`python -c SOURCE`, the shim at scripts/gpu-check starts the package, and the parsing it relies
on. (The checks themselves need root and a stack: `scripts/gpu-check --simulate 1x2` rehearses
them.)"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .host import result_of, same_uuid
from .programs import HERE, source

PROGRAMS = ("gpu_job", "ray_job", "holder", "preflight")
PROBED = {"torch", "ray", "pynvml"}  # what the programs try, and report when it does not import
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", PROGRAMS)
def test_a_program_imports_only_the_stdlib_and_what_it_probes(name: str) -> None:
    tree = ast.parse(source(name))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: a relative import cannot run as python -c"
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) - PROBED == set()


def test_the_programs_run_by_path_and_as_source_without_labq() -> None:
    for argv in (["-I", str(HERE / "preflight.py")], ["-I", "-c", source("preflight")]):
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                              timeout=60, cwd="/")
        assert done.returncode == 0, done.stderr
        assert {"python", "executable", "uid"} <= set(json.loads(done.stdout))
    done = subprocess.run([sys.executable, "-I", "-c", source("gpu_job"), "/nonexistent", "0"],
                          capture_output=True, text=True, timeout=60, cwd="/",
                          env={"CUDA_VISIBLE_DEVICES": "0", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    result = result_of(done.stdout)
    assert result is not None and result["cvd"] == "0", done.stdout
    assert done.stdout.rstrip().endswith("DONE")


def test_the_shim_starts_the_package() -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu-check"), "--help"],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: gpu-check ") and "--simulate SPEC" in done.stdout


def test_result_lines_and_uuids() -> None:
    assert result_of("noise\nRESULT {\"uid\": 5}\nDONE\n") == {"uid": 5}
    assert result_of("RESULT {not json\n") is None and result_of("") is None
    assert same_uuid("GPU-ABC", "abc") and same_uuid(" MIG-x ", "gpu-X")
    assert not same_uuid(None, "abc") and not same_uuid("", "")
