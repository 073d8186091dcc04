"""Serving an ASGI app on a unix socket owned by hive-c0re: bind safely, serve, clean up.

Shared by the per-agent MCP sockets and model proxies. `what` names the socket in errors and
logs ("alice's MCP socket"); `error` is the HiveError subclass raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import uvicorn
import uvicorn.server
from starlette.types import ASGIApp

from hyperhive.domain import check_agent_name
from hyperhive.errors import HiveError

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
RUN_DIR_MODE = 0o700
# How often a server with housekeeping to do (limit_max_requests, callback_notify) wakes.
HOUSEKEEPING_TICK_S = 1.0


class _LazyDateState(uvicorn.server.ServerState):
    """uvicorn's shared server state, with the default headers (the `date` header) computed when
    a response asks for them rather than by a timer: an idle server has nothing to refresh."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._config = config
        self._second = -1
        self._headers: list[tuple[bytes, bytes]] = []
        super().__init__()

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            date = [(b"date", formatdate(now, usegmt=True).encode())]
            self._headers = (date if self._config.date_header else []) + list(
                self._config.encoded_headers
            )
        return self._headers

    @default_headers.setter
    def default_headers(self, _: list[tuple[bytes, bytes]]) -> None:
        pass  # uvicorn's tick assigns them; here they are computed on demand


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers (hive-c0re decides when to stop), and without
    its 100 ms tick: an idle server sleeps until `should_exit` is set, which wakes it at once.

    uvicorn's tick refreshes the `date` header once a second (here computed on demand), and
    checks `limit_max_requests` and `callback_notify`; only a server configured with one of
    those still wakes, once a second.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        self._exit_requested = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        super().__init__(config)
        self.server_state = _LazyDateState(config)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    @property
    def should_exit(self) -> bool:
        return self._exit_requested

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._exit_requested = value
        wake, loop = self._wake, self._loop
        if value and wake is not None and loop is not None and not loop.is_closed():
            # Safe from anywhere: the loop's thread, another thread, a signal handler.
            loop.call_soon_threadsafe(wake.set)

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        housekeeping = (
            self.config.limit_max_requests is not None or self.config.callback_notify is not None
        )
        try:
            # Counter 0: uvicorn's on_tick does its once-a-second work on every call.
            while not await self.on_tick(0):
                if housekeeping:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), HOUSEKEEPING_TICK_S)
                else:
                    await self._wake.wait()
                self._wake.clear()
        finally:
            self._wake = None


def bind_unix_socket(path: Path, what: str, error: type[HiveError]) -> socket.socket:
    """A listening unix socket at `path` (mode 0660) in a directory made 0700 if it is new."""
    try:
        path.parent.mkdir(parents=True, mode=RUN_DIR_MODE, exist_ok=True)
    except OSError as e:
        raise error(
            f"cannot create {path.parent} for {what}: {e.strerror}",
            "check the permissions of HIVE_RUN_DIR (or set it to a writable directory)",
        ) from e
    clear_stale_socket(path, what, error)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _bind_private_then_move(sock, path)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise error(
            f"cannot listen on {path} for {what}: {e.strerror or e}",
            "unix socket paths are limited to 107 bytes: use a shorter HIVE_RUN_DIR"
            if "too long" in str(e)
            else "check the permissions of HIVE_RUN_DIR",
        ) from e
    return sock


def _private_ancestor(directory: Path) -> Path | None:
    """The nearest directory at or above `directory`, on its filesystem, that only this process's
    user can write to."""
    device = os.stat(directory).st_dev
    for candidate in (directory, *directory.parents):
        st = os.lstat(candidate)
        if st.st_dev != device:
            return None
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022:
            return candidate
    return None


def _bind_private_then_move(sock: socket.socket, path: Path) -> None:
    """Bind `sock` at `path` with mode SOCKET_MODE, never touching anything through a name an
    agent controls: an agent's socket dir is the agent's own (writable in its sandbox), so a
    chmod there after bind could be swapped onto a symlink to any host file. The socket is made
    and chmod-ed in a private directory and renamed into place (rename replaces, never follows).
    """
    private = _private_ancestor(path.parent)
    if private == path.parent or private is None:
        sock.bind(os.fspath(path))
        os.chmod(path, SOCKET_MODE)
        return
    scratch = Path(tempfile.mkdtemp(prefix=".sock-", dir=private))
    try:
        staged = scratch / "s"
        sock.bind(os.fspath(staged))
        os.chmod(staged, SOCKET_MODE)
        os.rename(staged, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def clear_stale_socket(path: Path, what: str, error: type[HiveError]) -> None:
    """Remove a socket file left by a process that is gone; refuse one that still answers."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise error(
            f"{path} exists and is not a socket, so {what} cannot be served there",
            f"move {path} away",
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        result = probe.connect_ex(os.fspath(path))
    finally:
        probe.close()
    if result in (0, errno.EAGAIN, errno.EINPROGRESS):
        raise error(
            f"another process is serving {path} ({what})",
            "stop the other hive-c0re using this run directory, or set HIVE_RUN_DIR",
        )
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    log.info("removed stale socket %s (%s)", path, what)


def remove_socket(path: Path, inode: int) -> None:
    """Remove the socket file, unless it is no longer the one we bound."""
    try:
        if os.lstat(path).st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


async def serve_on(
    server: uvicorn.Server, sock: socket.socket, what: str, error: type[HiveError]
) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit:
        # uvicorn exits the process when the app's startup fails; here that only ends this task.
        raise error(f"{what} failed its startup", "see hive-c0re's log") from None
    finally:
        sock.close()


def log_unexpected_end(what: str, task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    if (exc := task.exception()) is not None:
        log.error("%s failed: %s", what, exc, exc_info=exc)


START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
# On stop, open requests (a long-polling recv, a streaming model reply) get this long to finish
# before uvicorn cancels them.
GRACEFUL_SHUTDOWN_S = 2
# After `before_stop`, how long the answers it caused get before the server stops (uvicorn's old
# 100 ms tick gave them that much by chance).
ANSWER_GRACE_S = 0.1


@dataclass
class AgentApp:
    """What one agent's server is made of, as built by a `PerAgentServers` subclass."""

    app: ASGIApp
    # Set once the app has started (its lifespan ran); the server counts as up from then.
    started: asyncio.Event
    # Called first at shutdown (e.g. to end long polls), and awaited last (e.g. close a client).
    before_stop: Callable[[], None] | None = None
    after_stop: Callable[[], Awaitable[None]] | None = None
    uvicorn_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Served:
    agent: str
    path: Path
    inode: int
    server: QuietServer
    task: asyncio.Task[None]
    parts: AgentApp


class PerAgentServers(ABC):
    """One ASGI server per agent on its own unix socket: idempotent start (a server that died is
    served afresh), stop, stop_all. Subclasses say where the socket is and what app it serves."""

    #: For logs and errors: "MCP socket", "model proxy".
    label: str
    error: type[HiveError]

    def __init__(self) -> None:
        self._served: dict[str, _Served] = {}
        self._lock = asyncio.Lock()

    @abstractmethod
    def socket_path(self, agent: str) -> Path: ...

    @abstractmethod
    def build(self, agent: str) -> AgentApp: ...

    def running(self) -> set[str]:
        return {name for name, s in self._served.items() if not s.task.done()}

    async def start(self, agent: str) -> Path:
        """Serve `agent`'s socket (a no-op if it is served already); returns the socket path."""
        check_agent_name(agent)
        async with self._lock:
            current = self._served.get(agent)
            if current is not None and not current.task.done():
                return current.path
            if current is not None:  # it died: clean up, then serve afresh
                await self._stop(agent)
            served = await self._start(agent)
            self._served[agent] = served
            return served.path

    async def stop(self, agent: str) -> None:
        """Stop serving `agent`'s socket and remove the socket file (a no-op if not served)."""
        async with self._lock:
            await self._stop(agent)

    async def stop_all(self) -> None:
        async with self._lock:
            await asyncio.gather(*(self._stop(agent) for agent in list(self._served)))

    async def _start(self, agent: str) -> _Served:
        what = f"{self.label} for {agent}"
        path = self.socket_path(agent)
        sock = bind_unix_socket(path, what, self.error)
        inode = os.stat(path).st_ino
        parts = self.build(agent)
        options: dict[str, Any] = {
            "lifespan": "on",
            "log_level": "warning",
            "log_config": None,
            "access_log": False,
            "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        }
        server = QuietServer(uvicorn.Config(parts.app, **(options | parts.uvicorn_options)))
        task = asyncio.create_task(
            serve_on(server, sock, f"the {what} on {path}", self.error),
            name=f"{self.label.replace(' ', '-').lower()}-{agent}",
        )
        served = _Served(agent, path, inode, server, task, parts)
        waiting = asyncio.create_task(parts.started.wait())
        try:
            done, _ = await asyncio.wait(
                {task, waiting}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:  # cancelled while starting: leave nothing behind
            await self._shutdown(served)
            raise
        finally:
            waiting.cancel()
        if task in done or not done:
            await self._shutdown(served)
            failure = task.exception() if task in done else None
            raise self.error(
                f"the {what} on {path} "
                + (
                    f"failed to start: {failure}"
                    if failure
                    else f"did not start within {START_TIMEOUT_S}s"
                ),
                "see hive-c0re's log",
            ) from failure
        task.add_done_callback(functools.partial(log_unexpected_end, what))
        log.info("%s listening on %s", what, path)
        return served

    async def _stop(self, agent: str) -> None:
        served = self._served.pop(agent, None)
        if served is not None:
            await self._shutdown(served)
            log.info("%s for %s stopped", self.label, agent)

    async def _shutdown(self, served: _Served) -> None:
        if served.parts.before_stop is not None:
            served.parts.before_stop()
            # What it ended (a waiting recv) answers on its open connection; the server closes
            # its socket the moment it is told to stop, so let those answers leave first.
            await asyncio.sleep(ANSWER_GRACE_S)
        served.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(served.task), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("%s for %s did not stop in time: cancelling it", self.label, served.agent)
            served.server.force_exit = True
            served.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await served.task
        except Exception as e:
            # It failed: logged by its done callback, or reported by start().
            log.debug("%s for %s ended with %r", self.label, served.agent, e)
        if served.parts.after_stop is not None:
            await served.parts.after_stop()
        remove_socket(served.path, served.inode)
