"""#LABQ and #SBATCH directives of batch scripts (scheduler.cli.directives), pure."""

from __future__ import annotations

import re

import pytest

from scheduler.cli import directives
from scheduler.cli.directives import (
    SBATCH_OPTIONS,
    SBATCH_TABLE,
    DirectiveError,
    has_directives,
    parse_directives,
    script_problem,
    unknown_option,
)
from scheduler.cli.submit import submit_options


def parse(*lines: str) -> tuple[list[str], list[str]]:
    return parse_directives("#!/bin/bash\n" + "\n".join(lines) + "\n", "job.sh")


def words(*lines: str) -> list[str]:
    out, warnings = parse(*lines)
    assert warnings == []
    return out


@pytest.mark.parametrize(("line", "expected"), [
    ("#SBATCH -J train", ["--name", "train"]),
    ("#SBATCH --job-name=train", ["--name", "train"]),
    ("#SBATCH --job-name 'my run'", ["--name", "my run"]),
    ("#SBATCH -Jtrain", ["--name", "train"]),
    ("#SBATCH --job=train", ["--name", "train"]),  # an abbreviation, as getopt_long reads it
    ("#SBATCH -t 1-12:00 -A nlp -q scavenger", ["--time", "1-12:00", "--account", "nlp",
                                               "--qos", "scavenger"]),
    ("#SBATCH -D /data --chdir=/scratch", ["--workdir", "/data", "--workdir", "/scratch"]),
    ("#SBATCH -o out/%x-%j.log -e err/%A_%a.log", ["--output", "out/%x-%j.log", "--error",
                                                   "err/%A_%a.log"]),
    ("#SBATCH --array=0-99%8 -d afterok:12:13", ["--array", "0-99%8", "--dependency",
                                                "afterok:12:13"]),
    ("#SBATCH --export=NONE", ["--export", "NONE"]),
    ("#SBATCH --requeue", ["--requeue"]),
    ("#SBATCH --no-requeue", ["--no-requeue"]),
    ("#SBATCH -H -W --parsable", ["--hold", "--wait", "--parsable"]),
    ("#SBATCH -HW", ["--hold", "--wait"]),
    ("#SBATCH -G 2", ["--gpus", "2"]),
    ("#SBATCH --gpus=a100:2", ["--gpus", "2", "--gpu-type", "a100"]),
    ("#SBATCH --gpus-per-node=4", ["--gpus", "4"]),
    ("#SBATCH --gres=gpu:2", ["--gpus", "2"]),
    ("#SBATCH --gres=gpu:a100:3", ["--gpus", "3", "--gpu-type", "a100"]),
    ("#SBATCH --gres=gpu:a100", ["--gpus", "1", "--gpu-type", "a100"]),
    ("#SBATCH --gres=gres/gpu", ["--gpus", "1"]),
    ("#SBATCH -N 1 --nodes=1-1 -N1-4 -n 1 --ntasks-per-node=1", []),
    ("#SBATCH -N 2", ["--nodes", "2"]), ("#SBATCH --nodes=3-4", ["--nodes", "3"]),
    ("#SBATCH -N 2 --gpus-per-node=4", ["--nodes", "2", "--gpus", "4"]),
    # Slurm's -G is the job's GPUs in all: 8 over 2 nodes is 4 on each, whatever the order
    ("#SBATCH -G 8\n#SBATCH -N 2", ["--gpus", "8", "--nodes", "2", "--gpus", "4"]),
    ("#SBATCH -N 2 --gpus=a100:8", ["--nodes", "2", "--gpus", "8", "--gpu-type", "a100",
                                    "--gpus", "4"]),
    ("#SBATCH --gpus-per-task=2", ["--gpus", "2"]),
    ("#SBATCH --time=10   # ten minutes", ["--time", "10"]),
    ("#SBATCH", []),
])
def test_sbatch_options_labq_has_are_read(line: str, expected: list[str]) -> None:
    assert words(line) == expected


def test_gpus_per_task_count_for_every_task_as_slurm_counts() -> None:
    out, warnings = parse("#SBATCH --ntasks=4 --gpus-per-task=2")
    assert out == ["--gpus", "8"]
    assert len(warnings) == 1 and "no srun" in warnings[0] and "4 processes" in warnings[0]
    out, warnings = parse("#SBATCH --gpus-per-task=2", "#SBATCH -n 3")
    assert out == ["--gpus", "2", "--gpus", "6"] and "line 3" in warnings[0]


@pytest.mark.parametrize(("line", "part"), [
    ("#SBATCH --mem-per-cpu=4G", "#SBATCH --mem-per-cpu=4G: labq has no memory per CPU: "
                                 "use --mem"),
    ("#SBATCH --mincpus=8", "labq has no minimum CPUs"),
    ("#SBATCH -p gpu", "no partitions"),
    ("#SBATCH --exclusive", "never a whole node"),
    ("#SBATCH --nice=10", "fair share"),
    ("#SBATCH -C a100", "no node features"),
    ("#SBATCH --signal=B:USR1@60", "SIGTERM"),
    ("#SBATCH --comment='hello there'", "no comments"),
    ("#SBATCH -w node1", "picks the node"),
    ("#SBATCH -x node2", "picks the node"),
    ("#SBATCH --tmp=100G", "local disk"),
    ("#SBATCH --open-mode=append", "output file"),
    ("#SBATCH --begin=now+1hour", "no start times"),
    ("#SBATCH -n 4", "no srun: start the 4 processes"),
    ("#SBATCH --gres=shard:2", "no gres but GPUs (shard:2)"),
    ("#SBATCH --frobnicate=3", "neither labq nor sbatch has this option"),
    ("#SBATCH --frobnicate 3", "#SBATCH --frobnicate 3: neither"),
    ("#SBATCH stray", "not an option"),
])
def test_sbatch_options_labq_lacks_are_named_in_a_warning(line: str, part: str) -> None:
    out, warnings = parse(line)
    assert out == [] and len(warnings) == 1, warnings
    assert warnings[0].startswith("job.sh line 2: #SBATCH ")
    assert part in warnings[0] and warnings[0].endswith("ignored")


@pytest.mark.parametrize(("line", "out"), [
    ("#SBATCH --mem=32G", ["--mem", "32G"]),
    ("#SBATCH --mem-per-gpu 16G", ["--mem-per-gpu", "16G"]),
    ("#SBATCH -c 8", ["--cpus", "8"]),
    ("#SBATCH --cpus-per-task=8", ["--cpus", "8"]),
    ("#SBATCH --cpus-per-gpu=4", ["--cpus-per-gpu", "4"]),
    ("#SBATCH --mail-type=END,FAIL", ["--mail-type", "END,FAIL"]),
    ("#SBATCH --mail-user=a@b.c", ["--mail-user", "a@b.c"]),
    ("#LABQ --cpus 2 --mem 1G --notify begin,end", ["--cpus", "2", "--mem", "1G", "--notify",
                                                    "begin,end"]),
])
def test_cpus_memory_and_notify_directives_are_read(line: str, out: list[str]) -> None:
    assert parse(line) == (out, [])


def test_a_gpu_gres_beside_another_is_read() -> None:
    assert words("#SBATCH --gres=gpu:2,shard:1") == ["--gpus", "2"]


@pytest.mark.parametrize(("line", "part"), [
    ("#SBATCH --nodes=x", "node count"), ("#SBATCH -N 0", "node count"),
    ("#SBATCH -N 2 -G 3", "same number of GPUs"),
    ("#SBATCH --gpus=a100:1,v100:1", "one type"),
    ("#SBATCH --gres=gpu:a100:1,gpu:v100:1", "one type"), ("#SBATCH --gpus=0", "at least 1"),
    ("#SBATCH --uid=alice", "--as USER"), ("#SBATCH --gid=lab", "groups"),
    ("#SBATCH --wrap='python x.py'", "already the command"),
    ("#SBATCH --test-only", "would queue"), ("#SBATCH --job-name", "give it a value"),
    ("#SBATCH --requeue=yes", "takes no value"), ("#SBATCH -J 'open", "cannot split"),
    ("#LABQ --mem-per-cpu 4G", "labq submit has no option --mem-per-cpu: labq has no memory "
                               "per CPU"),
    ("#LABQ --job-name x", "use --name x"), ("#LABQ python", "options only"),
    ("#LABQ --gpus", "give it a value"),
])
def test_what_labq_cannot_follow_is_an_error_naming_the_line(line: str, part: str) -> None:
    with pytest.raises(DirectiveError) as caught:
        parse("# fine", line)
    message = str(caught.value)
    assert message.startswith("job.sh line 3: ") and part in message, message
    assert "\n" not in message


def test_labq_lines_are_the_command_lines_options() -> None:
    assert words("#LABQ --gpus 2 -J run --env A=1 --env=B=2 -t2h --requeue --hold") == [
        "--gpus", "2", "-J", "run", "--env", "A=1", "--env", "B=2", "-t", "2h", "--requeue",
        "--hold"]


def test_directives_are_read_until_the_first_command() -> None:
    out, warnings = parse("", "# a comment", "   ", "  # indented comment",
                          "#SBATCH -J a", "##SBATCH -J disabled", "#LABQ --gpus 2",
                          "module load cuda", "#SBATCH -J late", "#LABQ --gpus 3")
    assert out == ["--name", "a", "--gpus", "2"]
    assert warnings == [
        "job.sh line 10: #SBATCH after the first command is not read (directives go before any "
        "command); ignored",
        "job.sh line 11: #LABQ after the first command is not read (directives go before any "
        "command); ignored"]


def test_a_lookalike_directive_is_named() -> None:
    out, warnings = parse("#sbatch --gpus=2", "# SBATCH -J x", "#SBATCH--mem=1")
    assert out == [] and len(warnings) == 3
    assert "line 2: #sbatch --gpus=2 is not read" in warnings[0]
    assert "line 3: # SBATCH -J x is not read" in warnings[1]
    assert "line 4: #SBATCH--mem=1 is not read" in warnings[2]


def test_what_is_a_script() -> None:
    assert script_problem("#!/bin/sh\necho\n") is None
    assert "#!" in (script_problem("echo\n") or "")
    assert "DOS" in (script_problem("#!/bin/sh\r\necho\r\n") or "")
    assert has_directives("x\n#SBATCH -J a\n") and has_directives("#LABQ\n")
    assert not has_directives("##SBATCH -J a\n#SBATCHX\n")


@pytest.mark.parametrize(("name", "value", "part"), [
    ("--job-name", "x", "use --name x"), ("--job-name", None, "use --name"),
    ("--gres", "gpu:2", "use --gpus 2"), ("--gpus-per-node", "2", "use --gpus 2"),
    ("--gres", None, "use --gpus N"), ("--mem-per-cpu", "4G", "labq has no memory per CPU"),
    ("--cpus-per-task", "4", "use --cpus 4"), ("--mincpus", "4", "no minimum CPUs"),
    ("-N", "2", "use --nodes 2"),
    ("-n", "1", "once, on one node"), ("--uid", "x", "--as USER"),
    ("--gpu", None, "did you mean --gpus?"), ("--zzz", None, "see labq submit -h"),
])
def test_hints_for_an_option_labq_submit_lacks(name: str, value: str | None, part: str
                                               ) -> None:
    message = unknown_option(name, value, submit_options())
    assert message.startswith(f"labq submit has no option {name}") and part in message


def test_every_labq_option_a_translation_names_exists() -> None:
    options = submit_options()
    targets = {opt.target for opt in SBATCH_OPTIONS if opt.target}
    assert targets <= set(options), targets - set(options)
    assert {"--gpus", "--gpu-type"} <= set(options)
    for opt in SBATCH_OPTIONS:
        if opt.action == "flag":
            assert options[opt.target] is False, opt
        if opt.action in ("warn", "refuse"):
            assert opt.reason, opt


def test_the_docstring_names_every_sbatch_option_it_knows() -> None:
    doc = directives.__doc__ or ""
    named = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", doc))
    # `--ntasks-per-core/-gpu/-socket` is written short in the docstring
    missing = {n for n in SBATCH_TABLE if n not in named
               and not n.startswith("--ntasks-per-")} - {"--workdir"}
    assert not missing, sorted(missing)
