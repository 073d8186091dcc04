"""Serving an ASGI app on a unix socket owned by hive-c0re: bind safely, serve, clean up.

Shared by the per-agent MCP sockets and model proxies. `what` names the socket in errors and
logs ("alice's MCP socket"); `error` is the HiveError subclass raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from hyperhive.errors import HiveError

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
RUN_DIR_MODE = 0o700


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: hive-c0re decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
        sock.bind(os.fspath(path))
        os.chmod(path, SOCKET_MODE)
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
