"""What the agent and a job's runner say to each other through RUNDIR: the spec the agent
writes (`RunSpec`, spec.json, root-only: the start record and what only the node knows),
the state the runner keeps (state.json, written atomically: `RunState`, which is
`noderun.RunStatus`, the one run-state type), and the agent's reason when it stops a job
(stop.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scheduler.noderun import STATE_FILE as STATE_FILE
from scheduler.noderun import RunStatus, StartRecord

SPEC_FILE = "spec.json"
STOP_FILE = "stop.json"  # the agent's reason, when it stops a job by a policy of its own


@dataclass(frozen=True)
class RunSpec:
    """What the agent hands a runner (RUNDIR/spec.json, root-only): the coordinator's start
    record as it came (`record`), and what only this node knows (its name, cgroups, sockets,
    directories, who may not run jobs here). spec.json stays one flat object, as before (the
    record's `id` is its `job_id`), so a spec written by an older agent still loads."""

    record: StartRecord
    node: str
    grace_s: float = 10.0
    cgroup: str = ""  # the job's cgroup directory ("" = subreaper only)
    runners_cgroup: str = ""  # where the runner itself lives ("" = stay)
    simulated: bool = False  # simulated GPUs: give Ray the count through RAY_OVERRIDE_RESOURCES
    api_socket: str = ""  # the labq API socket, so the job can run labq as its user
    api_server: str = ""  # the coordinator's TCP API (host:port), for jobs on other hosts
    append: bool = False  # requeued attempts append to the output (and the error file)
    job_dir: str = ""  # the attempt's job directory (TMPDIR, script); "" = the runner picks one
    ray_dir: str = ""  # the job's private Ray directory; "" = the runner picks one
    # Who may not run jobs (besides root): uids below `min_uid` (0: UID_MIN of login.defs)
    # and these names.
    min_uid: int = 0
    deny_users: list[str] = field(default_factory=list)
    # The driver minors of the job's GPUs: its cgroup gets a device program refusing every
    # other NVIDIA GPU (agents.devices). None: no device program (no cgroup, or none here).
    gpu_minors: list[int] | None = None
    # Its CPU and memory limits here (0: none; agents.jobres), resolved by the agent from the
    # request and this node's CPUs and memory; on a v2-hybrid node the install id its v1
    # cpu and memory groups are made under ("": no v1 groups).
    cpus: float = 0.0
    memory_bytes: int = 0
    v1_install: str = ""

    @property
    def key(self) -> str:
        return self.record.key

    def to_json(self) -> str:
        """spec.json: the record's fields (its `id` as `job_id`) and this node's, flat."""
        record = asdict(self.record)
        local = {k: v for k, v in asdict(self).items() if k != "record"}
        return json.dumps({"job_id": record.pop("id"), **record, **local})

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        """A spec.json of this agent's or an older one's (a field it lacks keeps its default;
        one it does not know is ignored)."""
        data = json.loads(text)
        names = StartRecord.__dataclass_fields__
        record = {k: v for k, v in data.items() if k in names and k != "id"}
        record["id"] = data["job_id"]
        record.setdefault("time_limit_s", 0)  # 0: unknown (no LABQ_JOB_END_TIME)
        local = {k: v for k, v in data.items()
                 if k in cls.__dataclass_fields__ and k != "record"}
        return cls(record=StartRecord(**record), **local)

    @classmethod
    def load(cls, rundir: Path) -> RunSpec:
        return cls.from_json((rundir / SPEC_FILE).read_text())


RunState = RunStatus  # the runner's state.json is the one run-state type (scheduler.noderun)
