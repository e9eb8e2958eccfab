"""Batch-script directives: the `#LABQ` and `#SBATCH` lines at the top of a script, as `labq
submit` options. Pure: text in, option words and warnings out (`parse_directives`).

Where they are read (Slurm's rule): from the top of the script down to the first line that is
neither blank nor a comment; a directive after that line is not read (a warning says so).
Each directive line is split as the shell would (`shlex`), an unquoted `#` starting a comment.
`#LABQ` lines hold `labq submit`'s own options, written as on the command line; an option
`labq submit` does not have is an error there too. `#SBATCH` lines hold Slurm's `sbatch`
options, translated as follows. Several lines may set one option: the last one counts, and
options given on the command line count over every directive.

Read (translated to labq's option):
  -J/--job-name (--name), -t/--time, -A/--account, -q/--qos, -D/--chdir (--workdir),
  -o/--output, -e/--error, -a/--array, -d/--dependency, --export, --requeue, --no-requeue,
  -H/--hold, -W/--wait, --parsable;
  -G/--gpus (the job's GPUs in all: N/K on each of -N K nodes) and --gpus-per-node (`N` or
  `TYPE:N`: --gpus N, --gpu-type TYPE), --gpus-per-task
  (times the tasks, as Slurm counts it), --gres (`gpu`, `gpu:N`, `gpu:TYPE:N`; other kinds of
  gres are warned about);
  -N/--nodes (--nodes; a range or list: its fewest, `1-4` is 1), -n/--ntasks and
  --ntasks-per-node when 1; --mem (per node), --mem-per-gpu, -c/--cpus-per-task (--cpus: labq
  runs one task per node), --cpus-per-gpu; --mail-type (as labq's --notify: TIME_LIMIT is
  `timeout`; TIME_LIMIT_50/80/90, ARRAY_TASKS, INVALID_DEPEND noted and ignored) and
  --mail-user (noted and ignored: the cluster's notify command is told the job's user).

Warned about and ignored (labq has no such thing; the warning names the line and says why):
  --mem-per-cpu, --mincpus, -p/--partition, --exclusive, --nice, --priority, -C/--constraint,
  --prefer, --signal, --comment, -w/--nodelist, -x/--exclude, --tmp, --open-mode, -b/--begin,
  --deadline, --time-min, -n/--ntasks and --ntasks-per-node above 1 (labq runs the script once
  and has no srun: start the processes from the script), the options that place tasks, CPUs,
  memory or GPUs within a node (--ntasks-per-core/-gpu/-socket, --gpus-per-socket,
  --sockets-per-node, --cores-per-socket, --threads-per-core, -m/--distribution, --hint,
  --mem-bind, --cpu-bind, --gpu-bind, --tres-bind, --tres-per-task, --gres-flags,
  -B/--extra-node-info, --cpu-freq, --gpu-freq, -S/--core-spec, --thread-spec), and the rest
  of sbatch's options that labq does not have (-L/--licenses, --reservation, -M/--clusters,
  --wckey, -k/--no-kill, --kill-on-invalid-dep, --get-user-env, --propagate, -i/--input,
  --network, --switches, -O/--overcommit, -s/--oversubscribe, --contiguous, --spread-job,
  --use-min-nodes, --reboot, --acctg-freq, --profile, --power, --mcs-label, --bb, --bbf,
  --container, --container-id, --delay-boot, --cluster-constraint, --extra, --wait-all-nodes,
  --export-file, -F/--nodefile, --batch, -Q/--quiet, -v/--verbose, -I/--immediate, --ignore-pbs,
  -h/--help, --usage, -V/--version), and any option sbatch does not have either.

Refused (labq cannot do what they ask; nothing is submitted):
  -G/--gpus (and --gpus-per-node, --gpus-per-task) naming
  several GPU types, --gres with several GPU types, --uid/--gid (an admin submits for another
  user with --as USER), --wrap (a script is already the command), --test-only (labq would
  really submit).
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.cli.sbatch import LONG_NAMES, SBATCH_TABLE, Sbatch
from scheduler.cli.sbatch import SBATCH_OPTIONS as SBATCH_OPTIONS  # (the tests read it here)

LABQ = "#LABQ"
SBATCH = "#SBATCH"
MAX_SCRIPT_BYTES = 256 << 10


class DirectiveError(ValueError):
    """A directive (or script) labq cannot follow: one line naming the file and line."""


@dataclass
class _State:
    """What spans lines: the GPUs per task and the tasks, multiplied as Slurm does."""

    per_task: int | None = None
    tasks: int = 1
    total: int | None = None  # -G/--gpus: the job's GPUs in all, shared out over its nodes
    total_where: str = ""  # its line, for the message when it cannot be shared out
    nodes: int = 1


# ---------------------------------------------------------------------------- the script


def script_problem(text: str) -> str | None:
    """Why `text` cannot be run as a batch script (one phrase), or None."""
    if not text.startswith("#!"):
        return ("the first line must start with #! followed by the path to an interpreter "
                "(e.g. #!/bin/bash)")
    if "\r\n" in text:
        return "it has DOS line breaks (\\r\\n): convert it with dos2unix first"
    if "\0" in text:
        return "it is not a text file (it has NUL bytes)"
    return None


def has_directives(text: str) -> bool:
    """Whether any line starts with #LABQ or #SBATCH (a script meant for sbatch or labq)."""
    return any(_directive(line) for line in text.splitlines())


def _directive(line: str) -> str | None:
    for word in (LABQ, SBATCH):
        if line.startswith(word) and (len(line) == len(word) or line[len(word)].isspace()):
            return word
    return None


_LOOKALIKE = re.compile(r"^#\s*(sbatch|labq)\b", re.IGNORECASE)


def parse_directives(text: str, path: str, labq_options: Mapping[str, bool] | None = None
                     ) -> tuple[list[str], list[str]]:
    """The `labq submit` option words the directives of script `text` (named `path` in
    messages) stand for, in the order written, and warnings (one line each) about what was
    ignored. `labq_options` maps each option string of `labq submit` (`--gpus`, `-G`, ...) to
    whether it takes a value (default: the real command's). Raises DirectiveError for an
    unknown `#LABQ` option or an `#SBATCH` one labq cannot honour."""
    if labq_options is None:
        from scheduler.cli.submit import submit_options

        labq_options = submit_options()
    words: list[str] = []
    warnings: list[str] = []
    state = _State()
    reading = True
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path} line {number}"
        kind = _directive(line)
        if not reading:
            if kind:
                warnings.append(f"{where}: {kind} after the first command is not read "
                                "(directives go before any command); ignored")
            continue
        if kind is None:
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                reading = False  # the first command: no directive after it is read
            elif _LOOKALIKE.match(stripped) and not stripped.startswith("##"):
                warnings.append(f"{where}: {_shown(stripped)} is not read: a directive is "
                                "#SBATCH or #LABQ, in capitals, at the start of the line")
            continue
        try:
            parts = shlex.split(line[len(kind):], comments=True)
        except ValueError as exc:
            raise DirectiveError(f"{where}: {kind}: cannot split the line ({exc})") from None
        if kind == LABQ:
            words += _labq_line(parts, where, labq_options)
        else:
            words += _sbatch_line(parts, where, state, warnings)
    return words + _share_out(state), warnings


def _share_out(state: _State) -> list[str]:
    """Slurm's `-G N` is the job's GPUs in all; labq's `--gpus` is per node: with `-N K`, N/K
    on each (labq gives every node of a job the same number)."""
    if state.total is None or state.nodes == 1:
        return []
    if state.total % state.nodes:
        raise DirectiveError(f"{state.total_where}: {state.total} GPUs over {state.nodes} "
                             "nodes: labq gives every node of a job the same number of GPUs; "
                             "use --gpus-per-node")
    return ["--gpus", str(state.total // state.nodes)]


def _shown(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------- option words


def _split_words(parts: list[str], arity_of: Mapping[str, str], where: str, kind: str
                 ) -> list[tuple[str, str | None, str]]:
    """Options as (name, value, as typed), getopt-like: `--opt=v`, `--opt v`, `-Xv`, `-X v`,
    clustered flags `-HW`. An option not in `arity_of` takes the next word as its value when
    that word does not start with `-`."""
    out: list[tuple[str, str | None, str]] = []
    index = 0
    while index < len(parts):
        word = parts[index]
        index += 1
        if word.startswith("--") and len(word) > 2:
            name, eq, value = word.partition("=")
            arity = arity_of.get(name, "unknown")
            if eq:
                if arity == "flag":
                    raise DirectiveError(f"{where}: {kind} {_shown(word)}: {name} takes no value")
                out.append((name, value, word))
            elif arity in ("value", "unknown") and index < len(parts) and (
                    arity == "value" or not parts[index].startswith("-")):
                out.append((name, parts[index], f"{word} {parts[index]}"))
                index += 1
            elif arity == "value":
                raise DirectiveError(f"{where}: {kind} {word}: give it a value")
            else:
                out.append((name, None, word))
        elif word.startswith("-") and len(word) > 1 and word != "--":
            letters = word[1:]
            while letters:
                name = "-" + letters[0]
                arity = arity_of.get(name, "unknown")
                rest = letters[1:]
                if arity == "flag" or (arity == "optional" and not rest):
                    out.append((name, None, name))
                    letters = rest
                    continue
                if rest:
                    out.append((name, rest, f"{name}{rest}"))
                elif index < len(parts) and (arity == "value"
                                             or not parts[index].startswith("-")):
                    out.append((name, parts[index], f"{name} {parts[index]}"))
                    index += 1
                elif arity == "value":
                    raise DirectiveError(f"{where}: {kind} {name}: give it a value")
                else:
                    out.append((name, None, name))
                break
        else:
            out.append(("", word, word))  # not an option
    return out


def _labq_line(parts: list[str], where: str, options: Mapping[str, bool]) -> list[str]:
    arity = {name: "value" if takes else "flag" for name, takes in options.items()}
    words: list[str] = []
    for name, value, typed in _split_words(parts, arity, where, LABQ):
        if not name:
            raise DirectiveError(f"{where}: {LABQ} {_shown(typed)}: a #LABQ line holds "
                                 "options only (the command is the script itself)")
        if name not in options:
            raise DirectiveError(f"{where}: {LABQ} {_shown(typed)}: "
                                 f"{unknown_option(name, value, options)}")
        words += [name] if value is None else [name, value]
    return words


def _resolve(name: str) -> str:
    """A long sbatch option as getopt_long reads it: a unique abbreviation is the option."""
    if name in SBATCH_TABLE or not name.startswith("--"):
        return name
    matches = [long for long in LONG_NAMES if long.startswith(name)]
    return matches[0] if len(matches) == 1 else name


def _sbatch_line(parts: list[str], where: str, state: _State, warnings: list[str]
                 ) -> list[str]:
    arity = {name: opt.arity for name, opt in SBATCH_TABLE.items()}
    resolved = [_resolve(p.partition("=")[0]) + (p[len(p.partition("=")[0]):])
                if p.startswith("--") else p for p in parts]
    words: list[str] = []
    for name, value, typed in _split_words(resolved, arity, where, SBATCH):
        said = f"{where}: {SBATCH} {_shown(typed)}"
        if not name:
            warnings.append(f"{said}: not an option; ignored")
            continue
        opt = SBATCH_TABLE.get(name)
        if opt is None:
            warnings.append(f"{said}: neither labq nor sbatch has this option; ignored")
            continue
        try:
            result = translate(opt, name, value, state)
        except DirectiveError as exc:
            raise DirectiveError(f"{said}: {exc}") from None
        if isinstance(result, str):
            warnings.append(f"{said}: {result}; ignored")
            continue
        if opt.action == "gpus-total":
            state.total_where = said
        if opt.action == "ntasks" and state.tasks > 1:  # its GPUs were counted, yet:
            warnings.append(f"{said}: labq runs the script once and has no srun: start the "
                            f"{state.tasks} processes from the script (torchrun, mpirun)")
        words += result
    return words


def translate(opt: Sbatch, name: str, value: str | None, state: _State | None = None
              ) -> list[str] | str:
    """The labq words for sbatch option `name` with `value`, or a string saying why it is
    ignored; DirectiveError (without a place) when labq cannot honour it."""
    state = state or _State()
    if opt.action == "labq":
        assert value is not None
        return [opt.target, value]
    if opt.action == "flag":
        return [opt.target]
    if opt.action == "refuse":
        raise DirectiveError(opt.reason)
    if opt.action == "warn":
        return opt.reason
    assert value is not None
    if opt.action in ("gpus", "gpus-total"):
        count, gpu_type = _gpus(value)
        if opt.action == "gpus-total":
            state.total = count  # per node once the node count is known (`_share_out`)
        return ["--gpus", str(count), *(["--gpu-type", gpu_type] if gpu_type else [])]
    if opt.action == "gpus-per-task":
        count, gpu_type = _gpus(value)
        state.per_task = count
        return ["--gpus", str(count * state.tasks),
                *(["--gpu-type", gpu_type] if gpu_type else [])]
    if opt.action == "gres":
        return _gres(value)
    if opt.action == "nodes":
        count = _node_count(value)
        state.nodes = count
        return [] if count == 1 else ["--nodes", str(count)]
    if opt.action == "ntasks":
        tasks = _count(value, name)
        state.tasks = tasks
        if tasks == 1:
            return []
        if state.per_task is not None:  # the GPUs per task, times the tasks, as Slurm counts
            return ["--gpus", str(state.per_task * tasks)]
        return (f"labq runs the script once and has no srun: start the {tasks} processes from "
                "the script (torchrun, mpirun)")
    raise AssertionError(opt.action)


def _count(text: str, name: str) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", text) or int(text) < 1:
        raise DirectiveError(f"{name} must be a whole number of at least 1")
    return int(text)


def _gpus(value: str) -> tuple[int, str | None]:
    """Slurm's `--gpus` value: `N` or `TYPE:N` (one type)."""
    if "," in value:
        raise DirectiveError("a labq job's GPUs are of one type: ask for one TYPE:N")
    gpu_type, _, count = value.rpartition(":")
    return _count(count, "the GPU count"), gpu_type or None


def _gres(value: str) -> list[str] | str:
    """Slurm's `--gres` list: its `gpu` item (`gpu`, `gpu:N`, `gpu:TYPE`, `gpu:TYPE:N`, with
    or without `gres/`) as --gpus; other kinds are warned about."""
    words: list[str] = []
    other: list[str] = []
    for item in value.split(","):
        parts = item.removeprefix("gres/").split(":")
        if parts[0] != "gpu":
            other.append(item)
            continue
        if words:
            raise DirectiveError("a labq job's GPUs are of one type: ask for one gpu:TYPE:N")
        if len(parts) > 3:
            raise DirectiveError(f"cannot read {item!r}: write gpu:N or gpu:TYPE:N")
        count, gpu_type = "1", None
        if len(parts) == 2:
            if parts[1].isdigit():
                count = parts[1]
            else:
                gpu_type = parts[1]
        elif len(parts) == 3:
            gpu_type, count = parts[1], parts[2]
        words = ["--gpus", str(_count(count, "the GPU count")),
                 *(["--gpu-type", gpu_type] if gpu_type else [])]
    if other and not words:
        return f"labq has no gres but GPUs ({', '.join(other)})"
    return words


def _node_count(value: str) -> int:
    """The fewest nodes Slurm's node count allows (`N`, `MIN-MAX`, `N,M,...`): labq gives a
    job exactly that many."""
    counts = []
    for part in value.split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or int(low) < 1:
            raise DirectiveError(f"cannot read the node count {value!r}")
        counts.append(int(low))
    return min(counts)


# ---------------------------------------------------------------------------- hints


def unknown_option(name: str, value: str | None, options: Mapping[str, bool]) -> str:
    """What to say about option `name` (with the `value` that followed it, if any) that
    `labq submit` does not have: the labq option that does the same, why labq has none, or a
    close spelling."""
    opt = SBATCH_TABLE.get(_resolve(name)) if name.startswith("-") else None
    if opt is not None:
        result: list[str] | str | None = opt.reason if opt.action in ("warn", "refuse") else None
        if result is None and (opt.arity != "value" or value is not None):
            try:
                result = translate(opt, name, value if opt.arity != "flag" else None)
            except DirectiveError as exc:
                return f"labq submit has no option {name}: {exc}"
        if isinstance(result, str):
            return f"labq submit has no option {name}: {result}"
        if result:
            return f"labq submit has no option {name}: use {' '.join(result)}"
        if opt.action == "labq":
            return f"labq submit has no option {name}: use {opt.target}"
        if opt.action in ("gpus", "gpus-per-task", "gres"):
            return f"labq submit has no option {name}: use --gpus N (and --gpu-type TYPE)"
        if opt.action == "nodes":
            return f"labq submit has no option {name}: use --nodes N (-N N)"
        if opt.action == "ntasks":
            return f"labq submit has no option {name}: labq runs a job once, on one node"
    close = difflib.get_close_matches(name, [o for o in options if o.startswith("--")], 1, 0.75)
    if close:
        return f"labq submit has no option {name}: did you mean {close[0]}?"
    return f"labq submit has no option {name} (see labq submit -h)"
