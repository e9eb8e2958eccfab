"""`labq sim`: replay job traces in virtual time through the live policy (`schedule`)."""

from scheduler.sim.engine import Cluster, Run, SimResult, simulate
from scheduler.sim.trace import (
    SimJob,
    TraceError,
    load_accounts,
    load_csv,
    load_philly,
    load_trace,
)

__all__ = ["Cluster", "Run", "SimJob", "SimResult", "TraceError", "load_accounts", "load_csv",
           "load_philly", "load_trace", "simulate"]
