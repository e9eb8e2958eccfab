"""`labq up`, `labq coordinator` and `labq agent`: the commands that run daemons (their code
is in scheduler.server, imported only when one of them runs).

Each first checks $LABQ_HOME (scheduler.server.homecheck: owned by the user running it, writable
by no one else, nor any directory above it) before it reads anything there, config.toml
included, and refuses in one line otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import click

from scheduler.cli.common import fail
from scheduler.config import ConfigError, Settings


def trusted_settings(metrics_port: int | None = None, role: str = "up") -> Settings:
    """Settings.load, once $LABQ_HOME is checked (and made when missing): what a daemon reads
    and writes there is then the running user's alone. The coordinator's socket folder, when
    configured elsewhere, and an agent's agent_state_dir are held to the same rule."""
    from scheduler.server.homecheck import (
        HomeError,
        home_from_env,
        private_umask,
        trusted_dir,
        trusted_home,
    )

    private_umask()
    try:
        home = trusted_home(home_from_env())
        loaded = Settings.load(metrics_port=metrics_port)
        if role == "coordinator" and Path(os.path.realpath(loaded.socket.parent)) != home:
            trusted_dir(loaded.socket.parent, "the API socket's folder")
        if role == "agent" and loaded.agent_state_dir:
            trusted_home(Path(loaded.agent_state_dir), what="agent_state_dir")
        return loaded
    except (HomeError, ConfigError) as exc:
        fail(str(exc))


@click.command()
@click.option("--simulate", default=None, metavar="SPEC",
              help="simulated GPUs, NODESxGPUS[:MODEL], e.g. 2x4:A100-80GB")
@click.option("--metrics-port", default=None, type=int, help="port of /metrics (default 9464)")
@click.option("--demo", is_flag=True, help="also submit a small demo workload from several users")
@click.option("--exporter-port", default=None, type=click.IntRange(1, 65535),
              help="agents serve dcgm-exporter-style GPU metrics from this port (one per node)")
@click.option("--api-port", default=None, type=click.IntRange(1, 65535),
              help="also serve the API on this TCP port (callers prove who they are with "
                   "MUNGE or an API token)")
def up(simulate: str | None, metrics_port: int | None, demo: bool,
       exporter_port: int | None, api_port: int | None) -> None:
    """Run the whole single-machine stack in the foreground (Ctrl-C stops it all)."""
    from scheduler.server.up import UpError, run_up

    if api_port is not None:  # the coordinator reads it (and passes LABQ_SERVER to jobs)
        os.environ["LABQ_API_PORT"] = str(api_port)

    try:
        run_up(trusted_settings(), simulate=simulate, metrics_port=metrics_port, demo=demo,
               exporter_port=exporter_port)
    except UpError as exc:
        fail(str(exc))


@click.command()
@click.option("--metrics-port", default=None, type=int)
@click.option("--log-level", default="INFO")
def coordinator(metrics_port: int | None, log_level: str) -> None:
    """The coordinator daemon (API, scheduler, metrics). Needs LABQ_REDIS_URL (or redis_url)."""
    import asyncio

    from scheduler.server.daemon import DaemonError, run_coordinator, setup_logging

    setup_logging(log_level)
    try:
        asyncio.run(run_coordinator(trusted_settings(metrics_port, role="coordinator")))
    except DaemonError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@click.command()
@click.option("--node", default=None, help="node name (default: this host's name)")
@click.option("--simulate", "sim", default=None, metavar="GPUS[:MODEL]",
              help="SIMULATED GPUs instead of NVML, e.g. 4:A100-80GB")
@click.option("--log-level", default="INFO")
@click.option("--exporter-port", type=click.IntRange(0, 65535), default=None,
              envvar="LABQ_EXPORTER_PORT", help="serve GPU metrics with NVIDIA dcgm-exporter "
              "names on this port, e.g. 9400 (default: off)")
@click.option("--exporter-host", default="0.0.0.0", show_default=True,
              envvar="LABQ_EXPORTER_HOST", help="address the exporter listens on")
def agent(node: str | None, sim: str | None, log_level: str, exporter_port: int | None,
          exporter_host: str) -> None:
    """The node agent (root): reports this node's GPUs and runs the jobs placed on it, each as
    its user. Needs LABQ_REDIS_URL (or redis_url)."""
    import asyncio
    import socket

    from scheduler.server.daemon import DaemonError, run_agent, setup_logging

    setup_logging(log_level)
    kind, gpus, model = "nvml", 0, ""
    if sim:
        count, _, model = sim.partition(":")
        if not count.isdigit() or not 1 <= int(count) <= 16:
            fail(f"--simulate {sim!r}: write GPUS[:MODEL], e.g. 4:A100-80GB")
        kind, gpus = "simulated", int(count)
    loaded = trusted_settings(role="agent")
    try:
        asyncio.run(run_agent(loaded, node or socket.gethostname(), kind, gpus,
                              model or "SIM-GPU", None if exporter_port is None
                              else (exporter_host, exporter_port)))
    except (DaemonError, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
