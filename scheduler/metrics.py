"""`/metrics`: a collector built fresh at each scrape from the store (no stale series)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from scheduler.model import Job, JobState, Node
from scheduler.store import Store


@dataclass
class ClusterView:
    nodes: list[Node]
    jobs: list[Job]
    usage: dict[str, dict[str, dict[str, float]]]
    last_cycle_s: float
    is_leader: bool
    now: float


class ClusterCollector(Collector):
    def __init__(self, view: ClusterView) -> None:
        self.view = view

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        v = self.view
        total = GaugeMetricFamily("labq_gpus_total", "GPUs on the node", labels=["node", "model"])
        alloc = GaugeMetricFamily("labq_gpus_allocated", "GPUs held by labq jobs",
                                  labels=["node", "model"])
        idle = GaugeMetricFamily("labq_gpus_idle", "GPUs free for labq jobs",
                                 labels=["node", "model"])
        util = GaugeMetricFamily("labq_gpu_utilization_ratio", "GPU utilization (0-1)",
                                 labels=["node", "gpu", "model"])
        mem = GaugeMetricFamily("labq_gpu_memory_used_bytes", "GPU memory used",
                                labels=["node", "gpu", "model"])
        hb = GaugeMetricFamily("labq_node_heartbeat_age_seconds",
                               "Seconds since the node's agent last reported", labels=["node"])
        up = GaugeMetricFamily("labq_node_up", "1 if the node is UP", labels=["node"])
        for node in v.nodes:
            total.add_metric([node.name, node.gpu_model], node.gpus_total)
            alloc.add_metric([node.name, node.gpu_model], node.gpus_allocated)
            idle.add_metric([node.name, node.gpu_model], node.gpus_total - node.gpus_allocated)
            hb.add_metric([node.name], max(0.0, v.now - node.last_heartbeat))
            up.add_metric([node.name], 1.0 if node.state.value == "UP" else 0.0)
            for gpu in node.gpus:
                if gpu.utilization is not None:
                    util.add_metric([node.name, str(gpu.index), gpu.model], gpu.utilization)
                if gpu.memory_used_bytes is not None:
                    mem.add_metric([node.name, str(gpu.index), gpu.model], gpu.memory_used_bytes)
        yield from (total, alloc, idle, util, mem, hb, up)

        jobs = GaugeMetricFamily("labq_jobs", "Jobs by state (queued and running)",
                                 labels=["state"])
        counts = Counter(j.state for j in v.jobs)
        for state in JobState:
            if not state.is_terminal():
                jobs.add_metric([state.value], counts.get(state, 0))
        yield jobs
        pending = GaugeMetricFamily("labq_pending_jobs", "Waiting jobs by account and user",
                                    labels=["account", "user"])
        for (account, user), n in Counter(
            (j.account, j.user) for j in v.jobs if j.state.is_waiting()
        ).items():
            pending.add_metric([account, user], n)
        yield pending

        for kind in ("user", "account"):
            billed = CounterMetricFamily(f"labq_{kind}_billed_units",
                                         f"Billing units charged per {kind}", labels=[kind])
            gpu_s = CounterMetricFamily(f"labq_{kind}_gpu_seconds",
                                        f"GPU-seconds used per {kind}", labels=[kind])
            for name, values in v.usage[kind].items():
                billed.add_metric([name], values.get("billed", 0.0))
                gpu_s.add_metric([name], values.get("gpu_s", 0.0))
            yield billed
            yield gpu_s
        cycle = GaugeMetricFamily("labq_scheduling_cycle_last_seconds",
                                  "Duration of the last scheduling cycle")
        cycle.add_metric([], v.last_cycle_s)
        yield cycle
        leader = GaugeMetricFamily("labq_coordinator_leader", "1 if this coordinator leads")
        leader.add_metric([], 1.0 if v.is_leader else 0.0)
        yield leader


async def render(store: Store, last_cycle_s: float, is_leader: bool) -> bytes:
    jobs = await store.active_jobs() + await store.waiting_jobs()
    view = ClusterView(await store.nodes(), jobs, await store.usage(), last_cycle_s, is_leader,
                       time.time())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(view))
    return generate_latest(registry)
