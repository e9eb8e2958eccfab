"""Stored hashes -> records: nodes, and the usage hash's views (pure, no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from scheduler.model import GpuInfo, Job, JobSpec, Node, NodeState

# What a compact history record keeps (given to history_retire.lua as `HISTORY_FIELDS`, so the
# script and the readers name the same fields): what `labq history`, `labq eff` and `labq show`
# of an old job need; never its command, environment or script.
HISTORY_FIELDS = ("id", "user", "account", "state", "reason", "exit_code", "name", "gpus",
                  "nodes", "node", "parts", "gpu_indices", "gpu_type", "qos", "submitted_at",
                  "started_at", "ended_at", "time_limit_s", "billed", "gpu_seconds",
                  "cpu_seconds", "memory_peak_bytes", "array_job", "array_task", "workdir",
                  "restarts", "cpus", "cpus_per_gpu", "mem", "mem_per_gpu")


def nodes_from(rows: Sequence[dict[str, str]], drains: Mapping[str, str] | None = None,
               names: Sequence[str] | None = None) -> list[Node]:
    """Nodes from (node hash, alloc hash) pairs, as `nodes` reads them, with their drains from
    the drains hash (`keys.drains`: node name -> drain JSON; None: no drain read). `names`:
    each pair's node, as the nodes set names it (the key it was read from). The node hash is
    its agent's to write, so it never says the node's drain: drained_by, drain_reason and
    drained_at fields an earlier labq kept there are ignored; with `names`, its `name` field
    decides neither which node it is nor whose drain applies."""
    result = []
    pairs = zip(rows[0::2], rows[1::2], strict=True)
    for i, (raw, alloc) in enumerate(pairs):
        if not raw:
            continue
        name = names[i] if names is not None else raw.get("name", "")
        text = (drains or {}).get(name)
        by, reason, at = drain_of(text) if text is not None else ("", "", None)
        try:
            node = Node(
                name=name, state=NodeState(raw.get("state", "DOWN")),
                gpus_total=int(raw.get("gpus_total") or 0), gpu_model=raw.get("gpu_model", ""),
                last_heartbeat=float(raw.get("last_heartbeat") or 0),
                gpus=[GpuInfo.from_dict(g) for g in json.loads(raw.get("gpus") or "[]")],
                allocations={int(k): v for k, v in alloc.items()},
                simulated=bool(raw.get("simulated")), hostname=raw.get("hostname", ""),
                address=raw.get("address", ""), drained_by=by, drain_reason=reason,
                drained_at=at, cpus=int(raw.get("cpus") or 0),
                memory_mb=int(raw.get("memory_mb") or 0),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            # The node hash is its agent's to write: one that cannot be read (a broken or
            # hostile agent) is that node DOWN with nothing to offer, never an error that
            # stops the cycle, `labq nodes` and /metrics for the whole cluster.
            node = Node(name=name, state=NodeState.DOWN, gpus_total=0, gpu_model="",
                        last_heartbeat=0.0, gpus=[], allocations=_allocations(alloc),
                        drained_by=by, drain_reason=reason, drained_at=at)
        result.append(node)
    return result


def _allocations(alloc: dict[str, str]) -> dict[int, str]:
    """The GPU index -> job id pairs of an allocation hash that can be read."""
    return {int(k): v for k, v in alloc.items() if k.isdigit()}


def drain_of(text: str) -> tuple[str, str, float | None]:
    """(who, why, since when) of a drain, from its JSON in the drains hash. The entry is the
    drain: one that cannot be read is still one (the start script refuses the node whatever
    it holds), by "unknown"."""
    try:
        drain = json.loads(text)
    except ValueError:
        drain = None
    if not isinstance(drain, dict):
        drain = {}
    at = drain.get("at")
    return (str(drain.get("by") or "") or "unknown", str(drain.get("reason") or ""),
            float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None)


def parse_decayed(raw: dict[str, str], now: float) -> dict[tuple[str, str], float]:
    """(account, user) -> billed usage decayed to `now`, from the usage hash."""
    half_life = float(raw.get("half_life_s") or 604800)
    out: dict[tuple[str, str], float] = {}
    for field_name, value in raw.items():
        if not field_name.startswith("decayed:"):
            continue
        assoc = field_name[len("decayed:"):]
        since = float(raw.get(f"decayed_t:{assoc}") or now)
        account, _, user = assoc.partition("|")
        out[(account, user)] = float(value) * 2 ** (-max(0.0, now - since) / half_life)
    return out


def parse_totals(raw: dict[str, str]) -> dict[str, dict[str, dict[str, float]]]:
    """Usage totals per user and per account, from the usage hash (see `Store.usage`)."""
    out: dict[str, dict[str, dict[str, float]]] = {"user": {}, "account": {}}
    for field_name, value in raw.items():
        kind, _, rest = field_name.partition(":")
        name, _, metric = rest.rpartition(":")
        if kind in out and name:
            out[kind].setdefault(name, {"billed": 0.0, "gpu_s": 0.0})[metric] = float(value)
    return out


def parse_daily(raw: dict[str, str]) -> list[tuple[int, str, str, float]]:
    """(UTC day number, account, user, billed) for every day with usage, from the usage hash."""
    out = []
    for field_name, value in raw.items():
        if field_name.startswith("day:"):
            _, day, assoc = field_name.split(":", 2)
            account, _, user = assoc.partition("|")
            out.append((int(day), account, user, float(value)))
    return out


def id_key(job_id: str) -> tuple[int, int, str]:
    """Numeric order, array tasks after their array's id in index order: 9, 17, 17_2, 17_10."""
    head, _, index = job_id.partition("_")
    if head.isdigit():  # an array's waiting line (17_[4-99%8]) after its tasks
        return (int(head), 0 if not index else int(index) + 1 if index.isdigit() else 1 << 40,
                job_id)
    return (1 << 62, 0, job_id)


def job_from_spec(spec: JobSpec, job_id: str, now: float) -> Job:
    """A new PENDING job (or an array's template) from a validated request."""
    return Job.from_spec(spec, job_id, now, submitter=spec.submitter or spec.user,
                         reason="Submitted")
