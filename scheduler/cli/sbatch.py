"""Slurm's sbatch options as labq reads them: the table `#SBATCH` directives are translated
with (scheduler.cli.directives says, in its docstring, which are read, warned about and
refused)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sbatch:
    """One sbatch option: how its value is read, and what labq makes of it."""

    names: tuple[str, ...]
    arity: str = "value"  # "value" (required), "flag" (none), "optional" (only as --opt=value)
    action: str = "warn"  # "labq" (to `target`), "flag" (to `target`), "gpus", "gpus-per-task",
    # "gres", "nodes", "ntasks", "warn", "refuse"
    target: str = ""
    reason: str = ""


_NO_MEM = "labq has no memory per CPU: use --mem (per node) or --mem-per-gpu"
_NO_CPU = "labq has no minimum CPUs: use --cpus-per-task (-c) or --cpus-per-gpu"
_PLACE = "labq does not place a job's tasks, CPUs or memory within a node"
_NO_NODE = "labq picks the node: --gpu-type picks the GPU model"
_NOT_LABQ = "labq has no such option"

SBATCH_OPTIONS: tuple[Sbatch, ...] = (
    # read
    Sbatch(("-J", "--job-name"), action="labq", target="--name"),
    Sbatch(("-t", "--time"), action="labq", target="--time"),
    Sbatch(("-A", "--account"), action="labq", target="--account"),
    Sbatch(("-q", "--qos"), action="labq", target="--qos"),
    Sbatch(("-D", "--chdir", "--workdir"), action="labq", target="--workdir"),
    Sbatch(("-o", "--output"), action="labq", target="--output"),
    Sbatch(("-e", "--error"), action="labq", target="--error"),
    Sbatch(("-a", "--array"), action="labq", target="--array"),
    Sbatch(("-d", "--dependency"), action="labq", target="--dependency"),
    Sbatch(("--export",), action="labq", target="--export"),
    Sbatch(("--requeue",), "flag", "flag", "--requeue"),
    Sbatch(("--no-requeue",), "flag", "flag", "--no-requeue"),
    Sbatch(("-H", "--hold"), "flag", "flag", "--hold"),
    Sbatch(("-W", "--wait"), "flag", "flag", "--wait"),
    Sbatch(("--parsable",), "flag", "flag", "--parsable"),
    Sbatch(("-G", "--gpus"), action="gpus-total"),  # the job's in all, as Slurm reads it
    Sbatch(("--gpus-per-node",), action="gpus"),
    Sbatch(("--gpus-per-task",), action="gpus-per-task"),
    Sbatch(("--gres",), action="gres"),
    Sbatch(("-N", "--nodes"), action="nodes"),
    Sbatch(("-n", "--ntasks", "--ntasks-per-node"), action="ntasks"),
    Sbatch(("--mem",), action="labq", target="--mem"),  # per node, as Slurm's
    Sbatch(("--mem-per-gpu",), action="labq", target="--mem-per-gpu"),
    Sbatch(("-c", "--cpus-per-task"), action="labq", target="--cpus"),  # one task per node
    Sbatch(("--cpus-per-gpu",), action="labq", target="--cpus-per-gpu"),
    Sbatch(("--mail-type",), action="labq", target="--mail-type"),  # read as --notify
    Sbatch(("--mail-user",), action="labq", target="--mail-user"),  # noted and ignored
    # warned about
    Sbatch(("--mem-per-cpu",), reason=_NO_MEM),
    Sbatch(("--mincpus",), reason=_NO_CPU),
    Sbatch(("-p", "--partition"),
           reason="labq has one queue, no partitions: --gpu-type picks the GPU model"),
    Sbatch(("--exclusive",), "optional",
           reason="labq gives a job its GPUs only, never a whole node"),
    Sbatch(("--nice",), "optional", reason="labq orders jobs by fair share; no nice values"),
    Sbatch(("--priority",), reason="labq orders jobs by fair share; no set priorities"),
    Sbatch(("-C", "--constraint"), reason="labq has no node features: --gpu-type picks the "
                                          "GPU model"),
    Sbatch(("--prefer",), reason="labq has no node features: --gpu-type picks the GPU model"),
    Sbatch(("--signal",), reason="labq sends SIGTERM when the time is up, then SIGKILL after "
                                 "its grace time"),
    Sbatch(("--comment",), reason="labq keeps no comments: --name names the job"),
    Sbatch(("-w", "--nodelist"), reason=_NO_NODE),
    Sbatch(("-x", "--exclude"), reason=_NO_NODE),
    Sbatch(("-F", "--nodefile"), reason=_NO_NODE),
    Sbatch(("--tmp",), reason="labq does not reserve local disk"),
    Sbatch(("--open-mode",), reason="labq does not choose how the output file is opened"),
    Sbatch(("-b", "--begin"), reason="labq has no start times yet: the job may start at once "
                                     "(--hold, then labq release, starts it later)"),
    Sbatch(("--deadline",), reason="labq has no deadlines: --time limits the run"),
    Sbatch(("--time-min",), reason="labq has no minimum time: --time is the limit"),
    *(Sbatch((name,), reason=_PLACE) for name in (
        "--ntasks-per-core", "--ntasks-per-gpu", "--ntasks-per-socket", "--gpus-per-socket",
        "--sockets-per-node", "--cores-per-socket", "--threads-per-core", "--hint",
        "--mem-bind", "--cpu-bind", "--gpu-bind", "--tres-bind", "--tres-per-task",
        "--gres-flags", "--cpu-freq", "--gpu-freq", "--thread-spec")),
    Sbatch(("-m", "--distribution"), reason=_PLACE),
    Sbatch(("-B", "--extra-node-info"), reason=_PLACE),
    Sbatch(("-S", "--core-spec"), reason=_PLACE),
    *(Sbatch((name,), reason=_NOT_LABQ) for name in (
        "--reservation", "--wckey", "--kill-on-invalid-dep", "--network", "--switches",
        "--acctg-freq", "--profile", "--power", "--mcs-label", "--bb", "--bbf", "--container",
        "--container-id", "--delay-boot", "--cluster-constraint", "--extra", "--wait-all-nodes",
        "--export-file", "--batch")),
    Sbatch(("-L", "--licenses"), reason=_NOT_LABQ),
    Sbatch(("-M", "--clusters"), reason="labq is one cluster"),
    Sbatch(("-i", "--input"), reason="labq jobs read no standard input"),
    Sbatch(("-k", "--no-kill"), "optional", reason="labq runs a job on one node"),
    Sbatch(("--get-user-env",), "optional",
           reason="labq sends the environment --export says (default ALL)"),
    Sbatch(("--propagate",), "optional", reason="labq does not propagate resource limits"),
    Sbatch(("-I", "--immediate"), "optional", reason=_NOT_LABQ),
    *(Sbatch(names, "flag", reason=_NOT_LABQ) for names in (
        ("-O", "--overcommit"), ("-s", "--oversubscribe"), ("--contiguous",), ("--spread-job",),
        ("--use-min-nodes",), ("--reboot",), ("-Q", "--quiet"), ("-v", "--verbose"),
        ("--ignore-pbs",), ("-h", "--help"), ("--usage",), ("-V", "--version"))),
    # refused
    Sbatch(("--uid",), action="refuse",
           reason="labq runs a job as its submitter: submit as that user (root: --as USER)"),
    Sbatch(("--gid",), action="refuse",
           reason="labq runs a job with its user's groups: submit as that user"),
    Sbatch(("--wrap",), action="refuse",
           reason="a batch script is already the command: leave --wrap out"),
    Sbatch(("--test-only",), "flag", "refuse",
           reason="labq has no test-only submit: it would queue the job"),
)
SBATCH_TABLE: dict[str, Sbatch] = {name: opt for opt in SBATCH_OPTIONS for name in opt.names}
LONG_NAMES = sorted(name for name in SBATCH_TABLE if name.startswith("--"))
