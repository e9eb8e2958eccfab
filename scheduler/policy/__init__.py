"""The scheduling policy: pure functions of a snapshot and `now` (no Redis, no Ray).

The coordinator, the simulator and the property tests all call `schedule()`.
"""

from scheduler.policy.cycle import Decisions, Start, schedule
from scheduler.policy.snapshot import NodeView, PendingJob, Snapshot

__all__ = ["Decisions", "NodeView", "PendingJob", "Snapshot", "Start", "schedule"]
