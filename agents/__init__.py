"""The labq node agent and its GPU backends (NVML on real nodes, simulated elsewhere)."""
