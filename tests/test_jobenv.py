"""What of the submitting environment reaches a job (scheduler.jobenv)."""

from __future__ import annotations

import pytest

from scheduler import jobenv

ENVIRON = {
    "PATH": "/home/a/venv/bin:/usr/bin", "VIRTUAL_ENV": "/home/a/venv", "WANDB_PROJECT": "x",
    "HOME": "/home/a", "USER": "a", "LOGNAME": "a", "SHELL": "/bin/bash", "TMPDIR": "/tmp/a",
    "PWD": "/home/a", "OLDPWD": "/", "SHLVL": "2", "_": "/usr/bin/labq",
    "CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "FASTEST_FIRST",
    "ROCR_VISIBLE_DEVICES": "0", "HIP_VISIBLE_DEVICES": "0", "LD_PRELOAD": "/x.so",
    "LD_AUDIT": "/y.so", "LABQ_HOME": "/var/lib/labq", "LABQ_JOB_ID": "3",
    "SLURM_JOB_ID": "9", "RAY_ADDRESS": "auto", "RAY_TMPDIR": "/r", "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN_PATH": "/r/t", "RAY_OVERRIDE_RESOURCES": "{}",
    "BASH_FUNC_module%%": "() { eval ...; }", "not-a-name": "1", "1ABC": "2",
    "LD_LIBRARY_PATH": "/opt/cuda/lib64", "LD_DEBUG": "all", "LD_PROFILE": "libc.so.6",
    "LD_DEBUG_OUTPUT": "/tmp/x", "LD_ORIGIN_PATH": "/x",
}
PASSING = {"PATH", "VIRTUAL_ENV", "WANDB_PROJECT", "LD_LIBRARY_PATH"}


def test_all_passes_what_a_command_needs_and_nothing_labq_sets() -> None:
    assert set(jobenv.exported(ENVIRON)) == PASSING
    assert jobenv.exported(ENVIRON, "ALL") == {k: ENVIRON[k] for k in PASSING}


@pytest.mark.parametrize("mode", ["NONE", "none", "NIL"])
def test_none_passes_nothing(mode: str) -> None:
    assert jobenv.exported(ENVIRON, mode) == {}


def test_names_and_values() -> None:
    assert jobenv.exported(ENVIRON, "PATH,UNSET,SEED=3") == {"PATH": ENVIRON["PATH"],
                                                              "SEED": "3"}
    assert jobenv.exported(ENVIRON, "ALL,SEED=3,PATH=/bin") == {
        **{k: ENVIRON[k] for k in PASSING}, "SEED": "3", "PATH": "/bin"}


@pytest.mark.parametrize(("mode", "part"), [
    ("HOME", "labq sets it"), ("CUDA_VISIBLE_DEVICES=1", "labq sets it"),
    ("LABQ_X", "LABQ_*"), ("SLURM_JOB_ID", "Slurm"), ("LD_PRELOAD", "library"),
    ("bad-name", "letters, digits"), ("PATH,,X", "empty item"), ("ALL,NONE", "NONE cannot"),
])
def test_a_typed_name_that_may_not_pass_is_an_error(mode: str, part: str) -> None:
    with pytest.raises(jobenv.ExportError, match=part.replace("*", r"\*")):
        jobenv.exported(ENVIRON, mode)


def test_reserved_names_and_why() -> None:
    for name in ENVIRON:
        assert jobenv.passes(name) == (name in PASSING), name
        assert (jobenv.why_not(name) is None) == (name in PASSING), name
    assert jobenv.passes("LABQ") and not jobenv.passes("LABQ_")
    assert {"CUDA_VISIBLE_DEVICES", "HOME", "USER", "LOGNAME", "RAY_TMPDIR"} <= jobenv.RESERVED


def test_values_that_are_not_text_are_left_out_and_named() -> None:
    skipped: list[str] = []
    env = jobenv.exported({"A": "ok", "B": "caf\udce9"}, "ALL", skipped)
    assert env == {"A": "ok"} and skipped == ["B"]


def test_size_counts_as_the_server_does() -> None:
    assert jobenv.size({"AB": "cd", "E": "é"}) == 3 + 3 + 2 + 3
