"""An optional per-node `/metrics` with NVIDIA dcgm-exporter's metric names and labels.

With it, dashboards built for dcgm-exporter (NVIDIA's Grafana dashboard 12239 and the many made
from it) show a labq node's GPUs without DCGM installed. It serves the agent's latest GPU
snapshot, the one it heartbeats to the store, and never reads the GPUs itself: a scrape costs no
NVML call, and the exporter and the scheduler always agree.

Names, types, help texts and label names are those of dcgm-exporter's `etc/default-counters.csv`
and its output (`gpu`, `UUID`, `device`, `modelName`, `Hostname`), in DCGM's own units (%, MiB,
W, C), not Prometheus base units: that is NVIDIA's contract, kept as it is. `Hostname` is the
labq node name (the host name unless `--node` says otherwise), as dcgm-exporter uses the
Kubernetes node name where it has one. A field the backend could not read is left out, never 0.

What dcgm-exporter serves and this does not (the agent has no honest source for it): the
`pci_bus_id` and `DCGM_FI_DRIVER_VERSION` labels; clocks (`DCGM_FI_DEV_SM_CLOCK`,
`..._MEM_CLOCK`), memory temperature, energy, PCIe, encoder/decoder and memory-copy utilization,
XID errors, NVLink, remapped rows; and the profiling (DCP) fields such as
`DCGM_FI_PROF_GR_ENGINE_ACTIVE` and `DCGM_FI_PROF_PIPE_TENSOR_ACTIVE`. So in dashboard 12239 the
temperature, power, framebuffer and variable (`Hostname`, `gpu`) queries work; the SM clock,
"GPU Utilization" (DCP engine activity in its current revision; earlier revisions plot
`DCGM_FI_DEV_GPU_UTIL`, which is served) and tensor core panels stay empty.

`DCGM_FI_DEV_FB_USED` is NVML's `used` of `nvmlDeviceGetMemoryInfo` (v1), which counts the
driver's reserved memory; DCGM reports reserved memory apart (`DCGM_FI_DEV_FB_RESERVED`), so on
the same GPU DCGM's value is lower by that reserve (a few hundred MiB). `DCGM_FI_DEV_FB_FREE`
is total minus used.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from scheduler.model import GpuInfo, NodeReport

if TYPE_CHECKING:
    from agents.agent import Agent

log = logging.getLogger(__name__)

MIB = 2**20
LABELS = ("gpu", "UUID", "device", "modelName", "Hostname")
DEFAULT_MAX_AGE_S = 60.0

# (name, help text as in dcgm-exporter's counters CSV, value from a GpuInfo or None if unread)
_FIELDS: tuple[tuple[str, str, Callable[[GpuInfo], float | None]], ...] = (
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda g: g.temperature_c),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lambda g: g.power_watts),
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).",
     lambda g: None if g.utilization is None else round(g.utilization * 100)),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).",
     lambda g: None if g.memory_total_bytes is None or g.memory_used_bytes is None
     else max(0, g.memory_total_bytes - g.memory_used_bytes) // MIB),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).",
     lambda g: None if g.memory_used_bytes is None else g.memory_used_bytes // MIB),
    ("DCGM_FI_DEV_FB_TOTAL", "Framebuffer memory total (in MiB).",
     lambda g: None if g.memory_total_bytes is None else g.memory_total_bytes // MIB),
)

METRIC_NAMES = tuple(name for name, _, _ in _FIELDS)


class ExporterError(ValueError):
    """The exporter cannot serve on the address it was given; the message says what to do."""


# The agent's latest read of its GPUs, with when it was taken (Unix seconds); None before the first.
SnapshotSource = Callable[[], "tuple[float, NodeReport] | None"]


class DcgmCollector(Collector):
    """Builds every series at scrape time from the latest snapshot `latest()` returns.

    A snapshot older than `max_age_s` (the agent's reads have stalled) yields no GPU series, so a
    dashboard shows a gap rather than old values as current ones; `labq_agent_snapshot_age_seconds`
    still says how old it is.
    """

    def __init__(self, latest: SnapshotSource, *, max_age_s: float = DEFAULT_MAX_AGE_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.latest = latest
        self.max_age_s = max_age_s
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self.latest()
        if snapshot is None:  # the agent has not read its GPUs yet
            return
        taken_at, report = snapshot
        age = max(0.0, self.clock() - taken_at)
        families = {name: GaugeMetricFamily(name, help_text, labels=LABELS)
                    for name, help_text, _ in _FIELDS}
        if age <= self.max_age_s:
            for gpu in report.gpus:
                labels = [str(gpu.index), gpu.uuid, f"nvidia{gpu.index}", gpu.model, report.name]
                for name, _, value_of in _FIELDS:
                    value = value_of(gpu)
                    if value is not None:
                        families[name].add_metric(labels, float(value))
        yield from (family for family in families.values() if family.samples)
        yield GaugeMetricFamily(
            "labq_agent_snapshot_age_seconds",
            "Seconds since the agent last read the GPUs these DCGM_* series come from",
            value=age)


def registry_for(latest: SnapshotSource, *, max_age_s: float = DEFAULT_MAX_AGE_S,
                 clock: Callable[[], float] = time.time) -> CollectorRegistry:
    """A registry of its own holding only the DCGM collector (no process or platform series)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DcgmCollector(latest, max_age_s=max_age_s, clock=clock))
    return registry


class Exporter:
    """`/metrics` served by a daemon thread (prometheus_client's WSGI server) until `close`."""

    def __init__(self, latest: SnapshotSource, host: str, port: int, *,
                 max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        if not 0 <= port <= 65535:
            raise ExporterError(f"exporter port {port} is out of range: give 1..65535 "
                                "(or 0 for any free port)")
        try:
            self._server, self._thread = start_http_server(
                port, addr=host, registry=registry_for(latest, max_age_s=max_age_s))
        except OSError as exc:
            raise ExporterError(
                f"cannot serve the GPU exporter on {host}:{port}: {exc.strerror or exc}; "
                "choose another --exporter-port (or --exporter-host), or stop what uses it"
            ) from None
        self.host = host
        self.port = int(self._server.server_port)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def serving(latest: SnapshotSource, address: tuple[str, int] | None, *,
            max_age_s: float = DEFAULT_MAX_AGE_S) -> Iterator[Exporter | None]:
    """Serve the exporter on `address` (host, port) while the block runs; nothing if None."""
    if address is None:
        yield None
        return
    exporter = Exporter(latest, *address, max_age_s=max_age_s)
    log.info("GPU exporter (dcgm-exporter names) on %s", exporter.url)
    try:
        yield exporter
    finally:
        exporter.close()


def serving_agent(agent: Agent, address: tuple[str, int] | None
                  ) -> contextlib.AbstractContextManager[Exporter | None]:
    """`serving` the agent's `last_snapshot`; stale after 5 missed reads (a minute at least)."""
    return serving(lambda: agent.last_snapshot, address,
                   max_age_s=max(DEFAULT_MAX_AGE_S, 5 * agent.interval_s))
