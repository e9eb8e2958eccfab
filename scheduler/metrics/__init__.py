"""`/metrics`: built at scrape time from one read of the store (scrape.py), the series of
docs/metrics.md (families.py), and this process's own histograms (hist.py)."""

from scheduler.metrics.scrape import ClusterCollector, read_view, render

__all__ = ["ClusterCollector", "read_view", "render"]
