"""Which environment variables a job may inherit from the shell that submitted it.

Like Slurm's `--export=ALL` (the default), `labq submit` sends the submitting process's
environment with the job, so an activated virtualenv, a module system's `PATH` or a
`WANDB_PROJECT` reach the job as they would a command run by hand. What never passes:

- what labq itself sets for every job: `LABQ_*`, `CUDA_VISIBLE_DEVICES`, `CUDA_DEVICE_ORDER`,
  `ROCR_VISIBLE_DEVICES`, `HIP_VISIBLE_DEVICES`, the job's Ray (`RAY_TMPDIR`, `RAY_AUTH_MODE`,
  `RAY_AUTH_TOKEN_PATH`, `RAY_OVERRIDE_RESOURCES`, `RAY_ADDRESS`), its user (`HOME`, `USER`,
  `LOGNAME`, `SHELL`) and its `TMPDIR`;
- what would change how every program of the job is loaded: `LD_PRELOAD`, `LD_AUDIT` and
  glibc's other unsafe loader variables (`LD_DEBUG`, `LD_DEBUG_OUTPUT`, `LD_PROFILE`,
  `LD_ORIGIN_PATH`, ...; `LD_LIBRARY_PATH` passes, as a module system needs it);
- another scheduler's job (`SLURM_*`), and what describes the submitting shell only: `PWD`,
  `OLDPWD`, `SHLVL`, `_`, exported shell functions (`BASH_FUNC_*`);
- any name a process environment cannot safely carry: only `^[A-Za-z_][A-Za-z0-9_]*$` passes.

The CLI filters silently what it exports (`exported`); the server refuses the same names given
with `--env` (`why_not` says why), so a typed `--env CUDA_VISIBLE_DEVICES=0` is an error, never
ignored. Standard library only: the CLI and the server both import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Set by labq for every job (the agent's job environment), or about the submitting shell only.
RESERVED: frozenset[str] = frozenset({
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
    "LD_PRELOAD", "LD_AUDIT", "TMPDIR", "HOME", "USER", "LOGNAME", "SHELL",
    "RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_OVERRIDE_RESOURCES",
    "RAY_ADDRESS", "PWD", "OLDPWD", "SHLVL", "_",
    # glibc's UNSECURE_ENVVARS of the loader, but LD_LIBRARY_PATH
    "LD_DEBUG", "LD_DEBUG_OUTPUT", "LD_DYNAMIC_WEAK", "LD_HWCAP_MASK", "LD_ORIGIN_PATH",
    "LD_PROFILE", "LD_SHOW_AUXV", "LD_USE_LOAD_BIAS", "GCONV_PATH",
})
RESERVED_PREFIXES: tuple[str, ...] = ("LABQ_", "SLURM_", "BASH_FUNC_")

_WHY_PREFIX = {
    "LABQ_": "labq sets LABQ_* for every job",
    "SLURM_": "SLURM_* describe a Slurm job, not a labq one",
    "BASH_FUNC_": "exported shell functions are not passed to jobs",
}
_WHY_NAME = {
    "LD_PRELOAD": "it would load a library into every program of the job",
    "LD_AUDIT": "it would load a library into every program of the job",
    **{name: "it changes how every program of the job is loaded" for name in (
        "LD_DEBUG", "LD_DEBUG_OUTPUT", "LD_DYNAMIC_WEAK", "LD_HWCAP_MASK", "LD_ORIGIN_PATH",
        "LD_PROFILE", "LD_SHOW_AUXV", "LD_USE_LOAD_BIAS")},
    "PWD": "the job runs in its --workdir", "OLDPWD": "it describes the submitting shell",
    "SHLVL": "it describes the submitting shell", "_": "it describes the submitting shell",
    "TMPDIR": "labq gives each job its own temporary directory",
}


def why_not(name: str) -> str | None:
    """Why `name` may not be in a job's environment (one phrase), or None when it may."""
    if not NAME.match(name):
        return "a variable name is letters, digits and '_', not starting with a digit"
    for prefix in RESERVED_PREFIXES:
        if name.startswith(prefix):
            return _WHY_PREFIX[prefix]
    if name in RESERVED:
        return _WHY_NAME.get(name, "labq sets it for every job")
    return None


def passes(name: str) -> bool:
    """Whether a variable of this name may reach a job."""
    return why_not(name) is None


class ExportError(ValueError):
    """An `--export` value that cannot be used; the message says what to write instead."""


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
        return False
    return "\0" not in text


def exported(environ: Mapping[str, str], mode: str = "ALL",
             skipped: list[str] | None = None) -> dict[str, str]:
    """The variables of `environ` a job gets under Slurm's `--export=mode`:

    - `ALL` (the default): every variable that `passes`;
    - `NONE` (or Slurm's `NIL`): none (the job has only what labq sets, and `--env`);
    - a comma list: `NAME` takes that variable from `environ` (skipped when unset, as Slurm
      does), `NAME=value` sets it, and an `ALL` item adds everything that passes. A value
      cannot hold a comma (use `--env NAME=value` for that).

    A name typed in the list that may not pass raises ExportError; under `ALL` such names are
    left out silently. A variable whose value is not text (bytes that are not UTF-8, which no
    JSON request can carry) is left out and its name appended to `skipped`.
    """
    text = mode.strip()
    if text.upper() in ("NONE", "NIL"):
        return {}
    result: dict[str, str] = {}
    items = [item.strip() for item in text.split(",")] if text else ["ALL"]
    for item in items:
        if not item:
            raise ExportError(f"--export {mode!r}: an empty item; write ALL, NONE, or "
                              "NAME[,NAME=value...]")
        if item.upper() == "ALL":
            for name, value in environ.items():
                if passes(name) and _encodable(name):
                    if _encodable(value):
                        result[name] = value
                    elif skipped is not None:
                        skipped.append(name)
            continue
        if item.upper() in ("NONE", "NIL"):
            raise ExportError(f"--export {mode!r}: NONE cannot be combined with other items")
        name, sep, value = item.partition("=")
        reason = why_not(name)
        if reason:
            shown = name if len(name) <= 64 else name[:64] + "..."
            raise ExportError(f"--export {shown!r}: {reason}")
        if sep:
            result[name] = value
        elif name in environ:
            if _encodable(environ[name]):
                result[name] = environ[name]
            elif skipped is not None:
                skipped.append(name)
    return result


def size(env: Mapping[str, str]) -> int:
    """Bytes of `env` as the server counts them against `max_env_bytes`."""
    return sum(len(v.encode("utf-8", "surrogatepass")) + 1 for kv in env.items() for v in kv)
