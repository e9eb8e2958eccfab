"""Process entry points: `labq coordinator` and `labq agent`. The coordinator serves its API
through the front door (scheduler.server.frontdoor: connection caps and deadlines)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import redis.exceptions as redis_errors
from aiohttp import web

from scheduler.config import Settings
from scheduler.coordinator.core import Coordinator
from scheduler.metrics import render
from scheduler.metrics.access import ensure_metrics_token, full_access
from scheduler.server.api import Api
from scheduler.server.daemonlog import setup_logging as setup_logging  # `labq agent` too
from scheduler.server.frontdoor import (
    DoorError,
    DoorLimits,
    DoorSite,
    plan_limits,
    runner_for,
)
from scheduler.server.homecheck import HomeError, private_umask, trusted_home
from scheduler.server.listen import claim_unix_socket, listen_tcp, listen_unix
from scheduler.server.remote import RemoteAuth, munge_problem, tls_context
from scheduler.store import Store, StoreError
from scheduler.store.schema import check_store, shown_url

METRICS_RETRY_S = 5.0  # a metrics port that cannot be bound is tried again this often
STORE_WAIT_FIRST_S = 0.5  # a store not reached at start is tried again after this...
STORE_WAIT_MAX_S = 10.0  # ...doubled each time, up to this
# What an unreachable store raises (AuthenticationError, a ConnectionError, is caught first).
UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, TimeoutError)

log = logging.getLogger(__name__)


class DaemonError(RuntimeError):
    """A daemon cannot start as configured."""


def private_home(settings: Settings) -> None:
    """umask 077 for everything this daemon writes; $LABQ_HOME traversable but not listable
    (0711), so users reach the API socket in it and nothing else; no bytecode caches
    (homecheck.private_umask)."""
    private_umask()
    try:  # made if missing; refused unless this user's and no one else's to write, nor above
        trusted_home(settings.home)
    except HomeError as exc:
        raise DaemonError(str(exc)) from None
    os.chmod(settings.home, 0o711)


def open_store(settings: Settings, node: str | None = None) -> Store:
    try:
        return Store.connect(settings, node)
    except StoreError as exc:
        raise DaemonError(str(exc)) from None


async def wait_for_store(store: Store, settings: Settings) -> None:
    """Return once the store answers a PING. A daemon started before its store (at boot, or
    while the store restarts) waits for it instead of exiting: one line when the wait starts,
    one when it ends, tried again after a delay that doubles up to STORE_WAIT_MAX_S. A store
    that answers but refuses (a wrong password, a missing ACL grant) is not waited for: `_ping`
    says what is wrong."""
    delay, since, tries = STORE_WAIT_FIRST_S, 0.0, 0
    while True:
        try:
            await store.r.ping()
        except (redis_errors.AuthenticationError, redis_errors.ResponseError):
            return
        except UNREACHABLE as exc:
            tries += 1
            if tries == 1:
                since = time.monotonic()
                log.warning("cannot reach the store at %s (%s); waiting for it, trying again "
                            "every %g-%g s (one line when it answers)",
                            shown_url(settings.redis_url), " ".join(str(exc).split()),
                            STORE_WAIT_FIRST_S, STORE_WAIT_MAX_S)
            await asyncio.sleep(delay)
            delay = min(2 * delay, STORE_WAIT_MAX_S)
            continue
        if tries:
            log.warning("the store at %s answers, after %.0f s (%d failed tries)",
                        shown_url(settings.redis_url), time.monotonic() - since, tries)
        return


async def _ping(store: Store, settings: Settings, node: str | None = None) -> None:
    """The store answers (waited for), is Redis/Valkey 7 or later, holds a schema this labq
    understands, and keeps the same time as this host (scheduler.store.schema)."""
    try:
        await wait_for_store(store, settings)
        await store.ping()
        await check_store(store, settings, node)
    except StoreError as exc:
        await store.close()
        raise DaemonError(str(exc)) from None


async def run_coordinator(settings: Settings) -> None:
    private_home(settings)
    try:  # first of all: a second coordinator on this home leaves the first untouched
        lock = claim_unix_socket(settings.socket)
    except DoorError as exc:
        raise DaemonError(str(exc)) from None
    try:
        await _serve_coordinator(settings, *plan_limits(settings))
    finally:
        lock.close()


async def _serve_coordinator(settings: Settings, api_limits: DoorLimits,
                             metrics_limits: DoorLimits) -> None:
    store = open_store(settings)
    await _ping(store, settings)
    coordinator = Coordinator(store, settings)
    api = Api(store, settings, coordinator.kick.set, coordinator.job_submitted,
              coordinator.fresh_fairshare)

    app = api.app()
    runner = runner_for(app, api_limits)
    app.middlewares.append(RemoteAuth(store, settings).middleware())  # TCP callers: who
    await runner.setup()
    tcp_sock = None
    try:
        api_sock = listen_unix(settings.socket)
        tls = tls_context(settings) if settings.api_port else None
        if settings.api_port:
            try:
                tcp_sock = listen_tcp(settings.api_bind, settings.api_port)
            except OSError as exc:
                raise DoorError(f"cannot listen on the API port {settings.api_bind}:"
                                f"{settings.api_port}: {exc.strerror or exc}") from None
    except DoorError as exc:
        await runner.cleanup()
        await store.close()
        raise DaemonError(str(exc)) from None
    await DoorSite(runner, api_sock, api_limits, "the API").start()
    if tcp_sock is not None:
        await DoorSite(runner, tcp_sock, api_limits, "the TCP API", tls=tls,
                       by_address=True).start()
        log.info("API on %s://%s:%d too (callers prove who they are with MUNGE or an API "
                 "token)%s", "https" if tls else "http", settings.api_bind,
                 tcp_sock.getsockname()[1],
                 "" if tls else "; no TLS: API tokens cross the network readable, set "
                 "tls_cert_file and tls_key_file")
        problem = await asyncio.to_thread(munge_problem, settings)
        if problem:
            log.warning("TCP API: %s", problem)

    metrics_app = web.Application()

    ensure_metrics_token(settings)  # per-user series: for the scraper holding it

    async def metrics(request: web.Request) -> web.Response:
        private = not full_access(request.headers.get("Authorization"), settings)
        body = await render(store, coordinator, private=private)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "leader": coordinator.is_leader})

    metrics_app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz)])
    metrics_runner = runner_for(metrics_app, metrics_limits)
    await metrics_runner.setup()
    log.info("coordinator %s: API on %s", coordinator.id, settings.socket)
    try:
        await asyncio.gather(coordinator.lease_loop(), coordinator.cycle_loop(),
                             coordinator.wake_loop(),
                             serve_metrics(metrics_runner, settings, metrics_limits))
    finally:
        await runner.cleanup()
        await metrics_runner.cleanup()
        await store.close()


async def serve_metrics(runner: web.AppRunner, settings: Settings, limits: DoorLimits) -> None:
    """Serve /metrics and /healthz once their port can be bound. A port taken (another
    process holds it) is said once and tried again every METRICS_RETRY_S; the API and the
    scheduling never wait for it."""
    host, port = settings.api_host, settings.metrics_port
    said = False
    while True:
        try:
            sock = listen_tcp(host, port)
            break
        except OSError as exc:
            if not said:
                log.warning("metrics port %s:%d cannot be bound (%s): the API and scheduling "
                            "run on without it; trying again every %.0f s", host, port,
                            exc.strerror or exc, METRICS_RETRY_S)
                said = True
        await asyncio.sleep(METRICS_RETRY_S)
    await DoorSite(runner, sock, limits, "metrics").start()
    bound = sock.getsockname()[1]
    log.info("metrics on http://%s:%d/metrics%s", host, bound,
             " (its port is free again)" if said else "")


def job_api_server() -> str:
    """Where a job on this node reaches the coordinator's TCP API (LABQ_SERVER for the job):
    the agent's own LABQ_SERVER, or the node's /etc/labq/client.toml `server` ("" if none:
    a job on the coordinator's host uses the socket)."""
    if os.environ.get("LABQ_SERVER"):
        return os.environ["LABQ_SERVER"]
    from scheduler.cli.common import client_config

    try:
        return client_config().get("server", "")
    except Exception:  # an unreadable client.toml is the CLI's to report
        return ""


async def run_agent(settings: Settings, node: str, backend_kind: str, sim_gpus: int,
                    sim_model: str, exporter: tuple[str, int] | None = None) -> None:
    from agents.agent import Agent, fence_after, node_address
    from agents.backends import make_backend
    from agents.cgroups import detect
    from agents.dcgm_exporter import serving_agent
    from agents.executor import Executor

    private_home(settings)
    store = open_store(settings, node)
    backend = make_backend(backend_kind, node_name=node, sim_gpus=sim_gpus, sim_model=sim_model)
    try:
        await _ping(store, settings, node)
        layout = detect(node, settings.cgroup_root)
        log.info("node %s: jobs run as their users (%s); %s", node,
                 "as root" if os.geteuid() == 0 else "unprivileged: only as this user",
                 layout.describe())
        executor = Executor(store, node, settings.agent_dir(node), layout,
                            grace_s=settings.stop_grace_s, simulated=backend.simulated,
                            api_socket=str(settings.socket), api_server=job_api_server(),
                            min_job_uid=settings.job_uid_floor(),
                            job_user_deny=settings.job_user_deny,
                            gpu_misuse_policy=settings.gpu_misuse_policy,
                            confine_devices=settings.confine_gpu_devices)
        address = node_address(settings.redis_url or "", os.environ.get("LABQ_NODE_ADDRESS", ""))
        log.info("node %s: its peers reach it at %s", node, address or socket.gethostname())
        fence = fence_after(settings.node_timeout_s, settings.stop_grace_s)
        agent = Agent(store, backend, node, settings.heartbeat_interval_s, executor, address,
                      fence)
        with serving_agent(agent, exporter):  # exporter = (host, port), or None: not served
            await agent.run()
    finally:
        backend.close()
        await store.close()
