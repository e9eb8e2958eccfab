"""Process entry points: `labq coordinator` and `labq agent`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from aiohttp import web

from scheduler.config import Settings
from scheduler.coordinator import Coordinator
from scheduler.metrics import render
from scheduler.server.api import Api
from scheduler.store import Store, StoreError

log = logging.getLogger(__name__)


class DaemonError(RuntimeError):
    """A daemon cannot start as configured."""


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def private_home(settings: Settings) -> None:
    """umask 077 for everything this daemon writes; $LABQ_HOME traversable but not listable
    (0711), so users reach the API socket in it and nothing else."""
    os.umask(0o077)
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.home.stat().st_uid == os.geteuid():
        os.chmod(settings.home, 0o711)


def open_store(settings: Settings, node: str | None = None) -> Store:
    try:
        return Store.connect(settings, node)
    except StoreError as exc:
        raise DaemonError(str(exc)) from None


async def _ping(store: Store) -> None:
    try:
        await store.ping()
    except StoreError as exc:
        await store.close()
        raise DaemonError(str(exc)) from None


async def run_coordinator(settings: Settings) -> None:
    private_home(settings)
    store = open_store(settings)
    await _ping(store)
    coordinator = Coordinator(store, settings)
    api = Api(store, settings, coordinator.kick.set, coordinator.job_submitted,
              coordinator.fresh_fairshare)

    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    sock_path = settings.socket
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    await web.UnixSite(runner, str(sock_path)).start()
    os.chmod(sock_path, 0o666)  # every local user may connect; the peer uid says who they are

    metrics_app = web.Application()

    async def metrics(_: web.Request) -> web.Response:
        body = await render(store, coordinator)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "leader": coordinator.is_leader})

    metrics_app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz)])
    metrics_runner = web.AppRunner(metrics_app, access_log=None)
    await metrics_runner.setup()
    await web.TCPSite(metrics_runner, settings.api_host, settings.metrics_port).start()
    log.info("coordinator %s: API on %s, metrics on http://%s:%d/metrics", coordinator.id,
             sock_path, settings.api_host, settings.metrics_port)
    try:
        await asyncio.gather(coordinator.lease_loop(), coordinator.cycle_loop(),
                             coordinator.wake_loop())
    finally:
        await runner.cleanup()
        await metrics_runner.cleanup()
        await store.close()


async def run_agent(settings: Settings, node: str, backend_kind: str, sim_gpus: int,
                    sim_model: str, exporter: tuple[str, int] | None = None) -> None:
    from agents.agent import Agent
    from agents.backends import make_backend
    from agents.cgroups import detect
    from agents.dcgm_exporter import serving_agent
    from agents.executor import Executor

    private_home(settings)
    store = open_store(settings, node)
    backend = make_backend(backend_kind, node_name=node, sim_gpus=sim_gpus, sim_model=sim_model)
    try:
        await _ping(store)
        layout = detect(node, settings.cgroup_root)
        log.info("node %s: jobs run as their users (%s); %s", node,
                 "as root" if os.geteuid() == 0 else "unprivileged: only as this user",
                 layout.describe())
        executor = Executor(store, node, settings.agent_dir(node), layout,
                            grace_s=settings.stop_grace_s, simulated=backend.simulated,
                            api_socket=str(settings.socket))
        agent = Agent(store, backend, node, settings.heartbeat_interval_s, executor)
        with serving_agent(agent, exporter):  # exporter = (host, port), or None: not served
            await agent.run()
    finally:
        backend.close()
        await store.close()
