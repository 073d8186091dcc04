"""Each agent's page on its own TCP port (hm1nd on HIVE_MANAGER_PORT, the others in
HIVE_AGENT_PORT_MIN..MAX; see hyperhive/agent_ports.py), served by hive-c0re beside the
dashboard. The same page is always at /agents/<name>/ on the dashboard too, so a port that
some other program holds costs a warning, not the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.agent_pages import agent_router
from api.csrf import CsrfGuard, CsrfMiddleware
from api.unix_socket import GRACEFUL_SHUTDOWN_S, START_TIMEOUT_S, STOP_TIMEOUT_S, QuietServer
from hyperhive import __version__
from hyperhive.agent_ports import NoFreePort, assign_port
from hyperhive.domain import check_agent_name
from hyperhive.operator import OperatorService
from hyperhive.runtime import CoreRuntime

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


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
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
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


def page_app(
    runtime: CoreRuntime,
    operator: OperatorService,
    guard: CsrfGuard,
    agent: str,
    started: asyncio.Event,
    closing: asyncio.Event,
) -> FastAPI:
    """The app on the agent's own port: its page at `/`, nothing of the other agents."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started.set()
        yield

    app = FastAPI(
        title=f"hive agent {agent}",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.runtime = runtime
    app.state.operator = operator
    app.state.csrf = guard
    app.add_middleware(CsrfMiddleware, guard=guard)
    app.include_router(agent_router(agent, closing=closing))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


@dataclass
class _Served:
    port: int
    server: QuietServer
    task: asyncio.Task[None]
    closing: asyncio.Event


class AgentPageServers:
    """One page server per agent: idempotent `start` (a server that died is served afresh),
    `stop`, `stop_all`. Never raises for a port it cannot have: the page stays on the
    dashboard, and a warning says why the agent's own port does not answer."""

    def __init__(self, runtime: CoreRuntime, operator: OperatorService, guard: CsrfGuard) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._operator = operator
        self._guard = guard
        self._served: dict[str, _Served] = {}
        self._lock = asyncio.Lock()

    def running(self) -> dict[str, int]:
        """Agent → port of the pages being served."""
        return {name: s.port for name, s in self._served.items() if not s.task.done()}

    async def start(self, agent: str) -> int | None:
        """Serve `agent`'s page on its port; returns the port, or None when it cannot be
        served there (logged; the page is still at /agents/<agent>/ on the dashboard)."""
        check_agent_name(agent)
        async with self._lock:
            current = self._served.get(agent)
            if current is not None and not current.task.done():
                return current.port
            if current is not None:  # it died: clean up, then serve afresh
                await self._stop(agent)
            served = await self._start(agent)
            if served is None:
                return None
            self._served[agent] = served
            return served.port

    async def stop(self, agent: str) -> None:
        async with self._lock:
            await self._stop(agent)

    async def stop_all(self) -> None:
        async with self._lock:
            await asyncio.gather(*(self._stop(agent) for agent in list(self._served)))

    def _fallback(self, agent: str) -> str:
        return f"{self._settings.dashboard_url()}/agents/{agent}/"

    async def _start(self, agent: str) -> _Served | None:
        host = self._settings.bind_host
        try:
            port = await asyncio.to_thread(
                assign_port,
                self._runtime.engine,
                self._settings,
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
        started = asyncio.Event()
        closing = asyncio.Event()
        app = page_app(self._runtime, self._operator, self._guard, agent, started, closing)
        server = QuietServer(
            uvicorn.Config(
                app,
                lifespan="on",
                log_level="warning",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            )
        )
        task = asyncio.create_task(self._serve(server, sock), name=f"agent-page-{agent}")
        served = _Served(port, server, task, closing)
        waiting = asyncio.create_task(started.wait())
        try:
            done, _ = await asyncio.wait(
                {task, waiting}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:  # cancelled while starting: leave nothing behind
            await self._shutdown(agent, served)
            raise
        finally:
            waiting.cancel()
        if task in done or not done:
            await self._shutdown(agent, served)
            log.warning(
                "%s's page on %s:%d did not start; it is at %s",
                agent,
                host,
                port,
                self._fallback(agent),
            )
            return None
        task.add_done_callback(functools.partial(_log_unexpected_end, agent))
        log.info("%s's page listening on http://%s:%d/", agent, host, port)
        return served

    @staticmethod
    async def _serve(server: QuietServer, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit:
            # uvicorn exits the process when startup fails; here that only ends this page.
            raise RuntimeError("the page server failed its startup") from None
        finally:
            sock.close()

    async def _stop(self, agent: str) -> None:
        served = self._served.pop(agent, None)
        if served is not None:
            await self._shutdown(agent, served)
            log.info("%s's page stopped", agent)

    async def _shutdown(self, agent: str, served: _Served) -> None:
        served.closing.set()  # ends the open event streams at once
        served.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(served.task), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("%s's page did not stop in time: cancelling it", agent)
            served.server.force_exit = True
            served.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await served.task
        except Exception as e:
            log.debug("%s's page ended with %r", agent, e)


def _log_unexpected_end(agent: str, task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    if (exc := task.exception()) is not None:
        log.error("%s's page server failed: %s", agent, exc, exc_info=exc)
