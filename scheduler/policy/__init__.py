"""The scheduling policy: pure functions of a snapshot and `now` (no Redis, no Ray).

The coordinator, the simulator and the property tests all call `schedule()`.
"""

from scheduler.policy.cycle import Decisions, Start, schedule
from scheduler.policy.snapshot import Limits, NodeView, PendingJob, RunningJob, Snapshot

__all__ = ["Decisions", "Limits", "NodeView", "PendingJob", "RunningJob", "Snapshot", "Start",
           "schedule"]
