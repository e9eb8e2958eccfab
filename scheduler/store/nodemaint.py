"""The store's node maintenance role (part of `Store`): an admin drains a node (the jobs there
run on to their end, nothing new starts there), resumes it, or removes a retired one.

A drain is the node's field of the drains hash (`keys.drains`: node name -> JSON {"by",
"reason", "at"}, read into `model.Node`'s drained_by, drain_reason, drained_at), never the node
hash: that one is the agent's to write (its ACL user may write `{p}node:{name}`), so a drain
kept there could be lifted, or forged, from the node. No agent's ACL patterns reach the drains
hash, nor does the heartbeat, so a drain outlives heartbeats and agent restarts, and liveness
(UP/DOWN) stays the agent's. Drain, resume and remove delete any drained_* fields an earlier
labq left in the node hash; nothing reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.store.core import StoreCore
from scheduler.store.outcome import Outcome
from scheduler.store.records import id_key


@dataclass(frozen=True)
class Drained:
    """A drain's outcome, and how many of the node's GPUs jobs still hold (DRAINING if any)."""

    outcome: Outcome
    gpus_allocated: int = 0


@dataclass(frozen=True)
class Resumed:
    """A resume's outcome, and who had drained the node."""

    outcome: Outcome
    drained_by: str = ""


@dataclass(frozen=True)
class Removed:
    """A removal's outcome; refused: the agent's last heartbeat (ALIVE) or the jobs it holds
    (HOLDS_JOBS)."""

    outcome: Outcome
    last_heartbeat: float = 0.0
    jobs: tuple[str, ...] = ()


class NodeMaintStore(StoreCore):
    """The node maintenance role: drain, resume, remove. Not fenced by the leader's epoch: an
    admin's act through any coordinator, like an account change."""

    SCRIPTS: tuple[str, ...] = ("node_drain", "node_resume", "node_remove")

    async def drain_node(self, name: str, by: str, reason: str, now: float) -> Drained:
        """Keep new jobs off `name`; jobs running there go on. Wakes the leader, whose next
        cycle names the drain in the waiting jobs' reasons."""
        keys = [self.keys.node(name), self.keys.nodes, self.keys.node_alloc(name),
                self.keys.wake, self.keys.drains]
        outcome, allocated = await self._run("node_drain", keys, [name, by, reason, now])
        return Drained(Outcome(outcome), int(allocated))

    async def resume_node(self, name: str) -> Resumed:
        """Lift a drain; wakes the leader so that waiting jobs may start there at once."""
        keys = [self.keys.node(name), self.keys.nodes, self.keys.wake, self.keys.drains]
        outcome, by = await self._run("node_resume", keys, [name])
        return Resumed(Outcome(outcome), str(by))

    async def remove_node(self, name: str, cutoff: float) -> Removed:
        """Forget a retired node and its keys, unless its agent reported at or after `cutoff`
        (now - node_timeout_s: it would join again at once) or jobs still hold it. An agent
        that reports again later makes it join again, undrained (its drain goes with it)."""
        keys = [self.keys.node(name), self.keys.nodes, self.keys.node_alloc(name),
                self.keys.node_runs(name), self.keys.node_stops(name),
                self.keys.node_status(name), self.keys.node_wake(name), self.keys.drains]
        outcome, detail = await self._run("node_remove", keys, [name, cutoff])
        change = Outcome(outcome)
        if change == Outcome.ALIVE:
            return Removed(change, last_heartbeat=float(detail or 0))
        if change == Outcome.HOLDS_JOBS:
            return Removed(change, jobs=tuple(sorted(str(detail).split(","), key=id_key)))
        return Removed(change)
