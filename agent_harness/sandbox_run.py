"""`hive-agent run`: runs a command in a sandbox without a network, with the model API forwarded.

A bubblewrap sandbox has only its own loopback (`--unshare-all`): claude cannot reach the model API
directly. hive-c0re serves a per-agent model proxy on a unix socket in the agent's run dir (mounted
at /run/hive/model.sock); this command listens on 127.0.0.1:PORT inside the sandbox, copies the
bytes of each connection to that socket and back, and runs the command (claude, with
`ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`) as its child with stdin, stdout and stderr passed
through. It exits with the child's exit code (128 + N when the child died of signal N).

Plain asyncio and nothing else: this runs inside the container before every turn. Nothing is
printed on stdout (it is claude's stream-json channel); problems go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

DEFAULT_MODEL_SOCKET = "/run/hive/model.sock"
DEFAULT_PORT = 8787
LISTEN_HOST = "127.0.0.1"
CHUNK = 64 * 1024
# Signals sent to this process are passed on to the child (the host kills the whole process group
# with SIGKILL, which needs no forwarding).
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
# Exit codes of this command's own failures (the child's code otherwise).
EXIT_USAGE = 2
EXIT_CANNOT_LISTEN = 125
EXIT_CANNOT_RUN = 127


def _report(message: str) -> None:
    print(f"hive-agent run: {message}", file=sys.stderr, flush=True)


class ModelForwarder:
    """Listens on LISTEN_HOST:port; each connection is spliced to the unix socket."""

    def __init__(self, socket_path: str, port: int) -> None:
        self.socket_path = socket_path
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._reported = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, LISTEN_HOST, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._splice(reader, writer)
        except asyncio.CancelledError:
            # close() at exit: end quietly. A cancelled connection task would make asyncio's
            # stream server print a CancelledError traceback on claude's stderr.
            await _close(writer)
        finally:
            self._connections.discard(task)

    async def _splice(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError as e:
            if not self._reported:  # once: claude retries, and one line says it all
                self._reported = True
                _report(
                    f"cannot reach the model proxy on {self.socket_path}: {e.strerror or e}. "
                    "hive-c0re serves it for every agent of a sandboxed backend; is it running?"
                )
            await _close(writer)
            return
        try:
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        finally:
            await _close(up_writer)
            await _close(writer)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side (HTTP clients may shut down their writes)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def run_async(socket_path: str, port: int, argv: Sequence[str]) -> int:
    forwarder = ModelForwarder(socket_path, port)
    try:
        await forwarder.start()
    except OSError as e:
        _report(f"cannot listen on {LISTEN_HOST}:{port}: {e.strerror or e}")
        return EXIT_CANNOT_LISTEN
    try:
        try:
            child = await asyncio.create_subprocess_exec(*argv)
        except OSError as e:
            _report(f"cannot run {argv[0]}: {e.strerror or e}")
            return EXIT_CANNOT_RUN
        loop = asyncio.get_running_loop()
        for sig in FORWARDED_SIGNALS:
            loop.add_signal_handler(sig, _forward_signal, child, sig)
        try:
            code = await child.wait()
        finally:
            for sig in FORWARDED_SIGNALS:
                loop.remove_signal_handler(sig)
        return 128 - code if code < 0 else code
    finally:
        await forwarder.close()


def _forward_signal(child: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(sig)


def run(socket_path: str, port: int, argv: Sequence[str]) -> int:
    if not argv:
        _report("no command given: hive-agent run [--model-socket PATH] [--port N] -- COMMAND…")
        return EXIT_USAGE
    return asyncio.run(run_async(socket_path, port, list(argv)))
