"""`hive-agent mcp`: the stdio MCP server claude starts, forwarding to the agent's MCP socket.

claude's `--mcp-config` has no unix-socket transport, so inside the container claude starts this
bridge (`{"type": "stdio", "command": "hive-agent", "args": ["mcp"]}`) and the bridge forwards
`tools/list` and `tools/call` to hive-c0re's streamable-HTTP MCP server on /run/hive/mcp.sock:
the tool list and every result are the socket's, unchanged. The server's name, version and
instructions (what `initialize` tells claude) are the socket's too, read once at start.

Each forwarded request opens its own short connection (a unix socket, a few milliseconds), so a
restarted hive-c0re is picked up without restarting claude. When the socket is missing or does
not answer, the bridge still answers at once: `tools/call` with a tool error and `tools/list`
with an MCP error, both saying which socket and what must be running, and the same goes to
stderr. It never hangs waiting for hive-c0re.

Runs in the container: imports only the MCP SDK and httpx2, never hive-c0re's server stack.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    SERVER_INFO_META_KEY,
    CallToolRequestParams,
    CallToolResult,
    Implementation,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
)

from agent_harness.version import hive_agent_version

log = logging.getLogger("hive-agent.mcp")

SOCKET_ENV = "HIVE_MCP_SOCKET"
DEFAULT_SOCKET = "/run/hive/mcp.sock"
# Any host name will do over a unix socket; hive-c0re's server allows "localhost".
URL = "http://localhost/mcp"
FALLBACK_NAME = "hive"
# Reading the socket's server info at start: hive-c0re answers in milliseconds when it is up.
PROBE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
# A tool call may long-poll (recv with wait_seconds); hive-c0re caps that wait well below this.
READ_TIMEOUT_S = 900.0

T = TypeVar("T")


def default_socket() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


class Unreachable(Exception):
    """The socket is missing, refuses, or does not answer; the message says what to do."""


@dataclass(frozen=True)
class UpstreamInfo:
    name: str
    version: str
    instructions: str | None


class Upstream:
    """hive-c0re's MCP server on a unix socket, one connection per request."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Client]:
        """A connected MCP client; raises `Unreachable` or the server's `MCPError`."""
        timeout = httpx2.Timeout(CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)
        transport = httpx2.AsyncHTTPTransport(uds=self.socket_path)
        try:
            async with (
                httpx2.AsyncClient(transport=transport, timeout=timeout) as http,
                Client(
                    streamable_http_client(URL, http_client=http),
                    client_info=Implementation(name="hive-agent-mcp", version=hive_agent_version()),
                    cache=None,  # every answer comes from the socket
                ) as client,
            ):
                yield client
        except BaseException as e:
            translated = self._translate(e)
            if translated is e:
                raise
            raise translated from None if isinstance(translated, Unreachable) else e

    async def call(self, op: Callable[[Client], Awaitable[T]]) -> T:
        async with self.connect() as client:
            return await op(client)

    async def info(self) -> UpstreamInfo:
        def read(client: Client) -> UpstreamInfo:
            info = client.server_info
            return UpstreamInfo(
                name=info.name if info else FALLBACK_NAME,
                version=info.version if info else "",
                instructions=client.instructions,
            )

        with anyio.fail_after(PROBE_TIMEOUT_S):
            async with self.connect() as client:
                return read(client)

    def explain(self, reason: str) -> str:
        return (
            f"cannot reach hive-c0re's MCP server on {self.socket_path}: {reason}. "
            "hive-c0re must be running and this agent registered with it (hive-c0re serves each "
            "agent's socket at <run dir>/agents/<name>/mcp.sock, mounted in its container at "
            f"/run/hive); set {SOCKET_ENV} or --socket if the socket is elsewhere."
        )

    def _translate(self, exc: BaseException) -> BaseException:
        """Unwrap task-group exception groups; name connection failures plainly."""
        leaves = _leaves(exc)
        if any(not isinstance(leaf, Exception) for leaf in leaves):
            return exc  # cancellation, KeyboardInterrupt, …: never masked
        for leaf in leaves:
            if isinstance(leaf, Unreachable | MCPError):
                return leaf
        for leaf in leaves:
            if reason := _connection_failure(leaf):
                return Unreachable(self.explain(reason))
        if isinstance(exc, BaseExceptionGroup) and len(leaves) == 1:
            return leaves[0]
        return exc


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _connection_failure(exc: BaseException) -> str | None:
    """Why the socket could not be used, if that is what `exc` (or its cause) says."""
    if isinstance(exc, TimeoutError | httpx2.TimeoutException):
        return "it did not answer in time (is hive-c0re stuck?)"
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            if current.errno == errno.ENOENT:
                return "the socket does not exist"
            if current.errno == errno.ECONNREFUSED:
                return "nothing is listening on it (connection refused)"
            if current.errno in (errno.EACCES, errno.EPERM):
                return f"permission denied (this process runs as uid {os.geteuid()})"
            return current.strerror or str(current)
        current = current.__cause__ or current.__context__
    if isinstance(exc, httpx2.TransportError):
        return str(exc) or type(exc).__name__
    return None


def build_bridge(upstream: Upstream, info: UpstreamInfo | None) -> Server[Any]:
    """A stdio-side MCP server whose tools/list and tools/call are the upstream's."""

    async def list_tools(ctx: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
        cursor = params.cursor if params is not None else None
        try:
            return _without_era_stamp(await upstream.call(lambda c: c.list_tools(cursor=cursor)))
        except Unreachable as e:
            _report(str(e))
            raise MCPError(INTERNAL_ERROR, str(e)) from None

    async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        try:
            return _without_era_stamp(
                await upstream.call(lambda c: c.call_tool(params.name, params.arguments))
            )
        except Unreachable as e:
            _report(str(e))
            return CallToolResult(content=[TextContent(type="text", text=str(e))], is_error=True)

    return Server(
        info.name if info else FALLBACK_NAME,
        version=info.version if info else hive_agent_version(),
        instructions=info.instructions if info else None,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


R = TypeVar("R", ListToolsResult, CallToolResult)


def _without_era_stamp(result: R) -> R:
    """Drop the serverInfo stamp a 2026-era server puts in every result's `_meta`.

    It describes the bridge's connection to the socket, not the result; toward claude this
    bridge stamps its own when that connection is 2026-era too.
    """
    if result.meta and SERVER_INFO_META_KEY in result.meta:
        meta = {k: v for k, v in result.meta.items() if k != SERVER_INFO_META_KEY}
        return result.model_copy(update={"meta": meta or None})
    return result


def _report(message: str) -> None:
    print(f"hive-agent mcp: {message}", file=sys.stderr, flush=True)


async def serve(socket_path: str) -> None:
    """Serve MCP on stdin/stdout until stdin closes."""
    upstream = Upstream(socket_path)
    info: UpstreamInfo | None
    try:
        info = await upstream.info()
    except (Unreachable, MCPError, TimeoutError) as e:
        reason = upstream.explain("it did not answer in time") if isinstance(e, TimeoutError) else e
        _report(f"{reason} (serving anyway: every tool call will fail until it is reachable)")
        info = None
    bridge = build_bridge(upstream, info)
    async with stdio_server() as (read_stream, write_stream):
        await bridge.run(read_stream, write_stream, bridge.create_initialization_options())


def run(socket_path: str | None = None) -> int:
    # stdout is the MCP channel: logs go to stderr, and the HTTP client's per-request INFO lines
    # are not wanted there either.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="hive-agent mcp: %(levelname)s %(message)s"
    )
    anyio.run(serve, socket_path or default_socket())
    return 0
