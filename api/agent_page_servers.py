"""Each agent's page on its own TCP port (hm1nd on HIVE_MANAGER_PORT, the others in
HIVE_AGENT_PORT_MIN..MAX; see hyperhive/agent_ports.py), served by hive-c0re beside the
dashboard. The same page is always at /agents/<name>/ on the dashboard too, so a port that
some other program holds costs a warning, not the agent.

One web app and one uvicorn server serve every agent's port: each port is a listening socket
of its own (an asyncio server speaking uvicorn's HTTP protocol) added to that server as its
agent is started, and the port a request came in on (`scope["server"]`) says whose page it
is. An agent's routes (api/agent_pages.py, with the agent fixed) are built on the first
request to its port, so idle agents whose page nobody opens cost a socket and nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from api.agent_pages import agent_router
from api.csrf import CsrfGuard
from api.http_protocol import header_deadline_protocol
from api.operator_guards import guard_operator_app
from api.stream_slots import StreamSlots
from api.unix_socket import GRACEFUL_SHUTDOWN_S, START_TIMEOUT_S, STOP_TIMEOUT_S, QuietServer
from control.operator import OperatorService
from control.runtime import CoreRuntime
from hyperhive import __version__
from hyperhive.agent_ports import NoFreePort, assign_port
from hyperhive.domain import check_agent_name

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# While a stopping page's open connections finish, how often to look whether they have.
_CLOSE_POLL_S = 0.05


def port_is_free(host: str, port: int) -> bool:
    """Whether we could listen on host:port now (nothing else holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def bind_page_socket(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections accepted
    # from a socket that says it is TCP; without it a response written in two parts waited
    # for the client's delayed ACK, 40 ms per request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # SO_REUSEADDR: a restarted hive-c0re gets its ports back despite TIME_WAIT connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def local_port(scope: Scope) -> int | None:
    """The port of ours the request came in on."""
    server = scope.get("server")
    return server[1] if server else None


class ByPort(BaseRoute):
    """Every request on a port that `pages` knows goes to that page's app (the agent's routes);
    on any other port (a page being stopped) nothing matches, and the app answers 404."""

    def __init__(self, pages: Callable[[int], APIRouter | None]) -> None:
        self._pages = pages

    def _page(self, scope: Scope) -> APIRouter | None:
        port = local_port(scope)
        return self._pages(port) if port is not None else None

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] in ("http", "websocket") and self._page(scope) is not None:
            return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        page = self._page(scope)
        if page is None:  # stopped since it matched
            await self._not_found(scope, receive, send)
            return
        await page(scope, receive, send)

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = scope.get("router")
        if router is not None:
            await router.not_found(scope, receive, send)


def page_app(
    runtime: CoreRuntime,
    operator: OperatorService,
    guard: CsrfGuard,
    pages: Callable[[int], APIRouter | None],
    on_started: Callable[[], None],
    stream_slots: StreamSlots | None = None,
) -> FastAPI:
    """The app on every agent's own port: that agent's page at `/` (the router `pages` gives
    for the request's port), nothing of the other agents."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        on_started()
        yield

    app = FastAPI(
        title="hive agent pages",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    guard_operator_app(app, runtime, operator, guard, stream_slots)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.router.routes.append(ByPort(pages))
    return app


@dataclass
class _Page:
    agent: str
    port: int
    listener: asyncio.Server
    # Set when the page stops: ends its open event streams at once.
    closing: asyncio.Event
    # The agent's routes, built on the first request to its port.
    router: APIRouter | None = None


@dataclass
class _Shared:
    server: QuietServer
    task: asyncio.Task[None]
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def alive(self) -> bool:
        return not self.task.done() and not self.server.should_exit


class AgentPageServers:
    """Every agent's page, each on its own port: idempotent `start` (a page that died is served
    afresh), `stop`, `stop_all`. Never raises for a port it cannot have: the page stays on the
    dashboard, and a warning says why the agent's own port does not answer."""

    def __init__(
        self,
        runtime: CoreRuntime,
        operator: OperatorService,
        guard: CsrfGuard,
        stream_slots: StreamSlots | None = None,
    ) -> None:
        self._runtime = runtime
        self._operator = operator
        self._guard = guard
        self._stream_slots = stream_slots
        self._pages: dict[str, _Page] = {}
        self._by_port: dict[int, _Page] = {}
        self._app: FastAPI | None = None  # built once, by the first start
        self._shared: _Shared | None = None  # the one server, while any page is served
        self._lock = asyncio.Lock()

    def running(self) -> dict[str, int]:
        """Agent → port of the pages being served."""
        if self._shared is None or not self._shared.alive():
            return {}
        return {name: page.port for name, page in self._pages.items() if page.listener.is_serving()}

    async def start(self, agent: str) -> int | None:
        """Serve `agent`'s page on its port; returns the port, or None when it cannot be
        served there (logged; the page is still at /agents/<agent>/ on the dashboard)."""
        check_agent_name(agent)
        async with self._lock:
            current = self._pages.get(agent)
            if current is not None and self.running().get(agent) == current.port:
                return current.port
            if current is not None:  # it died: clean up, then serve afresh
                await self._stop(agent)
            page = await self._start(agent)
            return page.port if page is not None else None

    async def stop(self, agent: str) -> None:
        async with self._lock:
            await self._stop(agent)

    async def stop_all(self) -> None:
        async with self._lock:
            await asyncio.gather(*(self._stop(agent) for agent in list(self._pages)))
            await self._stop_server()

    # -- the pages ---------------------------------------------------------------------------

    def _fallback(self, agent: str) -> str:
        return f"{self._runtime.settings.dashboard_url()}/agents/{agent}/"

    def _router_for(self, port: int) -> APIRouter | None:
        page = self._by_port.get(port)
        if page is None:
            return None
        if page.router is None:
            page.router = agent_router(page.agent, closing=page.closing)
        return page.router

    async def _start(self, agent: str) -> _Page | None:
        settings = self._runtime.settings
        host = settings.bind_host
        try:
            port = await asyncio.to_thread(
                assign_port,
                self._runtime.engine,
                settings,
                agent,
                functools.partial(port_is_free, host),
            )
        except NoFreePort as e:
            log.warning(
                "%s's page has no port of its own: %s (%s); it is at %s",
                agent,
                e.what,
                e.hint,
                self._fallback(agent),
            )
            return None
        try:
            sock = bind_page_socket(host, port)
        except OSError as e:
            # The port was given to this agent earlier and another program holds it now.
            log.warning(
                "cannot serve %s's page on %s:%d: %s; stop whatever uses that port "
                "(or set HIVE_MANAGER_PORT / HIVE_AGENT_PORT_MIN..MAX); meanwhile it is at %s",
                agent,
                host,
                port,
                e.strerror or e,
                self._fallback(agent),
            )
            return None
        try:
            server = await self._ensure_server()
            listener = await self._listen(server, sock)
        except Exception as e:
            sock.close()
            log.warning(
                "%s's page on %s:%d did not start (%s); it is at %s",
                agent,
                host,
                port,
                e,
                self._fallback(agent),
            )
            return None
        page = _Page(agent, port, listener, asyncio.Event())
        self._pages[agent] = page
        self._runtime.served_page_ports[agent] = port
        self._by_port[port] = page
        log.info("%s's page listening on http://%s:%d/", agent, host, port)
        return page

    @staticmethod
    async def _listen(server: QuietServer, sock: socket.socket) -> asyncio.Server:
        """Serve `sock` with uvicorn's HTTP protocol, as part of `server` (which then closes it
        if it shuts down first, and counts its connections)."""
        config = server.config
        protocol = cast(Callable[..., asyncio.Protocol], config.http_protocol_class)
        listener = await asyncio.get_running_loop().create_server(
            functools.partial(
                protocol,
                config=config,
                server_state=server.server_state,
                app_state=server.lifespan.state,
            ),
            sock=sock,
            backlog=config.backlog,
        )
        server.servers.append(listener)
        return listener

    async def _stop(self, agent: str) -> None:
        page = self._pages.pop(agent, None)
        self._runtime.served_page_ports.pop(agent, None)
        if page is None:
            return
        if self._by_port.get(page.port) is page:
            del self._by_port[page.port]
        page.closing.set()  # ends the open event streams at once
        page.listener.close()  # no new connections
        shared = self._shared
        if shared is not None:
            with contextlib.suppress(ValueError):
                shared.server.servers.remove(page.listener)
            await _close_connections(shared.server, page.port, agent)
        log.info("%s's page stopped", agent)

    # -- the one server ----------------------------------------------------------------------

    def _page_app(self) -> FastAPI:
        if self._app is None:
            self._app = page_app(
                self._runtime,
                self._operator,
                self._guard,
                self._router_for,
                self._app_started,
                self._stream_slots,
            )
        return self._app

    def _app_started(self) -> None:
        if self._shared is not None:
            self._shared.started.set()

    async def _ensure_server(self) -> QuietServer:
        """The server all pages are served by, started if it is not running."""
        if self._shared is not None and self._shared.alive():
            return self._shared.server
        if self._shared is not None:  # it ended: so did every page
            for agent in list(self._pages):
                await self._stop(agent)
            await self._stop_server()
        server = QuietServer(
            uvicorn.Config(
                self._page_app(),
                lifespan="on",
                log_level="warning",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                http=header_deadline_protocol(self._runtime.settings.http_header_timeout_s),
            )
        )
        # No sockets of its own: each page adds its port (`_listen`).
        task = asyncio.create_task(self._serve(server), name="agent-pages")
        shared = self._shared = _Shared(server, task)
        waiting = asyncio.create_task(shared.started.wait())
        try:
            done, _ = await asyncio.wait(
                {task, waiting}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:  # cancelled while starting: leave nothing behind
            await self._stop_server()
            raise
        finally:
            waiting.cancel()
        if task in done or not done or not server.started:
            failure = task.exception() if task in done and not task.cancelled() else None
            await self._stop_server()
            raise RuntimeError(
                f"the page server failed to start: {failure}"
                if failure
                else "the page server did not start in time"
            )
        task.add_done_callback(_log_unexpected_end)
        return server

    @staticmethod
    async def _serve(server: QuietServer) -> None:
        try:
            await server.serve(sockets=[])
        except SystemExit:
            # uvicorn exits the process when startup fails; here that only ends the pages.
            raise RuntimeError("the page server failed its startup") from None

    async def _stop_server(self) -> None:
        shared, self._shared = self._shared, None
        if shared is None:
            return
        shared.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(shared.task), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("the agent page server did not stop in time: cancelling it")
            shared.server.force_exit = True
            shared.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shared.task
        except Exception as e:
            log.debug("the agent page server ended with %r", e)


async def _close_connections(server: QuietServer, port: int, agent: str) -> None:
    """End the connections to `port`: idle ones at once, the others once their response is
    sent (within GRACEFUL_SHUTDOWN_S, then they are cut), as uvicorn does at shutdown."""
    connections = server.server_state.connections

    def on_port() -> list[Any]:
        return [c for c in connections if (getattr(c, "server", None) or (None, None))[1] == port]

    for connection in on_port():
        connection.shutdown()
    deadline = time.monotonic() + GRACEFUL_SHUTDOWN_S
    # uvicorn says when a connection is gone only by dropping it from the set: poll (as its
    # own shutdown does), for as long as a page takes to stop.
    while (left := on_port()) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(_CLOSE_POLL_S)
    if left:
        log.warning("%s's page: cutting %d connection(s) still open", agent, len(left))
        for connection in left:
            connection.transport.close()


def _log_unexpected_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    if (exc := task.exception()) is not None:
        log.error("the agent page server failed: %s", exc, exc_info=exc)
