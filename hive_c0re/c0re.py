"""hive-c0re: the Temporal workers, the store and the dashboard app in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta

import uvicorn
from temporalio.worker import Worker

from activities.agents import AgentActivities
from activities.backends import ContainerBackend, select_backend
from activities.lifecycle import LifecycleActivities
from activities.repos import RepoActivities
from activities.store import StoreActivities
from activities.turns import TurnActivities
from activities.warm_claude import WarmPool
from api.admin_socket import AdminSocket
from api.agent_page_servers import AgentPageServers
from api.app import create_app, csrf_guard
from api.http_protocol import header_deadline_protocol
from api.manager_tools import extra_tools_for
from api.mcp_server import AgentMcpSockets
from api.model_proxy import ModelProxies
from api.stream_slots import stream_slots_for
from api.unix_socket import QuietServer
from control.auto_update_schedule import ensure_auto_update
from control.health_check import run_health_check
from control.lifecycle import Lifecycle
from control.operator import OperatorService
from control.runtime import CoreRuntime
from control.waker import TemporalWaker
from hive_c0re.agent_runtime import AgentRuntime
from hyperhive import agent_flake
from hyperhive.access_token import load_access_token
from hyperhive.agent_config import ClaudeDefaults
from hyperhive.broker import Broker
from hyperhive.bus import Bus
from hyperhive.bus_select import open_bus
from hyperhive.errors import StartupError
from hyperhive.host_heartbeat import HostHeartbeat
from hyperhive.metrics import HiveMetrics
from hyperhive.orphaned_approvals import sweep_forever
from hyperhive.settings import HiveSettings
from hyperhive.store.db import make_engine, migrate
from hyperhive.temporal_client import connect
from workflows.registry import ALL_WORKFLOWS

log = logging.getLogger(__name__)

READY_CHECK_TIMEOUT = timedelta(seconds=30)


def bind_listener(host: str, port: int, setting: str) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections accepted
    # from a socket that says it is TCP; without it a response written in two parts waited
    # for the client's delayed ACK, 40 ms per request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen on {host}:{port} ({setting}): {exc.strerror}",
            f"stop whatever uses that port or set {setting} to a free port",
        ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


def build_workers(
    runtime: CoreRuntime,
    backend: ContainerBackend,
    bus: Bus,
    agent_runtime: AgentRuntime,
    waker: TemporalWaker,
    warm: WarmPool,
) -> list[Worker]:
    settings = runtime.settings
    store = StoreActivities(runtime.engine)
    turns = TurnActivities(
        settings,
        runtime.engine,
        bus,
        backend,
        metrics=runtime.metrics,
        warm=warm,
        turn_sends=runtime.broker.turn_sends,
    )
    agents = AgentActivities(runtime.engine, runtime.broker)
    # The waker wakes the agents' turn loops and stops them (it is their AgentLoops).
    lifecycle = LifecycleActivities(
        settings, runtime.engine, runtime.broker, backend, agent_runtime, waker
    )
    # Named, so the SDK does not hash every loaded module to make one up (~0.5 s at start-up).
    build_id = f"hyperhive-{settings.hyperhive_rev or agent_flake.hyperhive_revision()}"
    core = Worker(
        runtime.client,
        build_id=build_id,
        task_queue=settings.core_task_queue,
        workflows=ALL_WORKFLOWS,
        graceful_shutdown_timeout=timedelta(seconds=5),
    )
    host = Worker(
        runtime.client,
        build_id=build_id,
        task_queue=settings.host_task_queue,
        activities=[
            store.check_store,
            turns.run_turn,
            turns.release_turn_message,
            agents.set_agent_state,
            agents.notify_operator,
            agents.last_session_id,
            *lifecycle.all(),
            *RepoActivities(
                settings,
                hyperhive_flake_url=settings.hyperhive_flake_url or None,
                hyperhive_rev=settings.hyperhive_rev or None,
            ).all(),
        ],
        # Turns are cancelled at shutdown: their process groups die and Temporal retries them.
        graceful_shutdown_timeout=timedelta(seconds=2),
    )
    return [core, host]


async def run_c0re(
    settings: HiveSettings,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[CoreRuntime], Awaitable[None]] | None = None,
) -> None:
    """Serve until `stop` is set. Raises StartupError when something is not usable."""
    listener = bind_listener(settings.bind_host, settings.dashboard_port, "HIVE_DASHBOARD_PORT")
    # Closes the bus last, after the workers and the broker that publish on it stopped.
    bus_closer = contextlib.AsyncExitStack()
    try:
        engine = make_engine(settings.database_url)
        version = await asyncio.to_thread(migrate, engine)
        log.info("store ready at schema version %d", version)
        client = await connect(settings)
        # PostgreSQL: the hive-c0re processes sharing the store hear each other's events.
        bus = await bus_closer.enter_async_context(open_bus(settings.database_url))
        waker = TemporalWaker(client, settings, engine)
        metrics = HiveMetrics(engine)
        broker = Broker(engine, bus, waker, settings, metrics=metrics)
        lifecycle = Lifecycle(client, settings, engine)
        runtime = CoreRuntime(
            settings=settings,
            engine=engine,
            client=client,
            broker=broker,
            lifecycle=lifecycle,
            metrics=metrics,
            access_token=load_access_token(settings),
        )
        backend = select_backend(settings)
        runtime.backend_name = backend.name
        runtime.claude_defaults = ClaudeDefaults(
            model=settings.model,
            permission_mode=settings.permission_mode,
            sandboxed=backend.sandboxed,
        )
        sockets = AgentMcpSockets(
            settings, broker, extra_tools_for=extra_tools_for(lifecycle, engine)
        )
        proxies = ModelProxies(settings) if getattr(backend, "needs_model_proxy", False) else None
        operator = OperatorService(runtime)
        guard = csrf_guard(runtime)
        # One bound on live streams for the dashboard and every agent page together.
        stream_slots = stream_slots_for(settings)
        pages = AgentPageServers(runtime, operator, guard, stream_slots)
        agents = AgentRuntime(settings, engine, sockets, proxies, pages)
        server = QuietServer(
            uvicorn.Config(
                create_app(runtime, operator=operator, guard=guard, stream_slots=stream_slots),
                log_level="warning",
                access_log=False,
                log_config=None,  # our handler (text or json, HIVE_LOG_FORMAT) formats its lines
                lifespan="off",
                # Open SSE streams (dashboard, agent pages) must not hold up a shutdown.
                timeout_graceful_shutdown=3,
                http=header_deadline_protocol(settings.http_header_timeout_s),
            )
        )
        warm = WarmPool(settings.warm_agents, settings.warm_idle_s)
        runtime.warm_agents = warm.warm_agents
        metrics.watch_warm(warm)
        workers = build_workers(runtime, backend, bus, agents, waker, warm)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(broker.aclose)
            # After the workers stopped (exit order): no turn takes a warm claude any more.
            stack.push_async_callback(warm.close_all)
            stack.push_async_callback(sockets.stop_all)
            stack.push_async_callback(pages.stop_all)
            if proxies is not None:
                stack.push_async_callback(proxies.stop_all)
            # Up in the store before the workers (a spawn elsewhere may pick this host), and
            # stopped after them (exit order).
            heartbeat = HostHeartbeat(engine, settings)
            await heartbeat.start()
            stack.push_async_callback(heartbeat.stop)
            for worker in workers:
                await stack.enter_async_context(worker)
            runtime.workers_running = True
            admin = AdminSocket(operator, settings)
            await admin.start()
            stack.push_async_callback(admin.stop)
            registered = await agents.ensure_all()
            # Whatever was pending when the last hive-c0re stopped is delivered now.
            woken = await broker.drain_pending()
            log.info("%d agents registered; woke %s", len(registered), woken or "none")
            if settings.create_manager:
                await lifecycle.ensure_manager(backend.status)
            await ensure_auto_update(client, settings)
            await waker.follow_settings(registered)
            sweeping = asyncio.create_task(
                sweep_forever(client, engine, broker), name="orphaned approvals"
            )
            stack.callback(sweeping.cancel)
            serving = asyncio.create_task(server.serve(sockets=[listener]), name="dashboard")
            try:
                result = await run_health_check(client, settings, within=READY_CHECK_TIMEOUT)
                if not result.store.ok:
                    raise StartupError(
                        f"the store does not answer: {result.store.detail}",
                        "check HIVE_DB_URL / HIVE_STATE_DIR",
                    )
                if on_ready is not None:
                    await on_ready(runtime)
                stopping = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait(
                    {serving, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                stopping.cancel()
                if serving in done:
                    serving.result()
                    raise StartupError("the dashboard server stopped unexpectedly", "see the log")
            finally:
                runtime.workers_running = False
                server.should_exit = True
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
        engine.dispose()
    finally:
        listener.close()
        await bus_closer.aclose()
