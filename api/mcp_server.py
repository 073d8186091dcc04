"""Each agent's MCP server, served on its own unix socket: the socket path is the caller's identity.

`build_agent_mcp(agent, broker)` makes an `MCPServer` whose tools act as `agent`, a name bound
to that server object and never taken from a tool argument: the tools are defined once for every
agent and read who is calling from the server that runs them (`Context.mcp_server`), and each
socket serves its own server, so whoever can reach `<run>/agents/<name>/mcp.sock` (only that
agent's container, where the directory is mounted at /run/hive) speaks as that agent.
Every agent gets `send`, `recv`, `whoami` and `set_status`; `extra_tools` adds more to one
server (the manager's tools go on hm1nd's socket only).

Tools return short plain text (registered without an output schema: claude would otherwise show
the model the JSON of `structuredContent`). A refused broker call comes back as a tool error
(`is_error`) saying what happened and what to do, never as a protocol error or a crash.

`AgentMcpSockets` serves those servers: one uvicorn per agent on its unix socket, streamable
HTTP at `/mcp`. In the container, `hive-agent mcp` (agent_harness.mcp_bridge) is the stdio MCP
server claude starts; it forwards to /run/hive/mcp.sock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec

import mcp.server.mcpserver.server as sdk_server
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field
from starlette.applications import Starlette

from api.http_protocol import header_deadline_protocol
from api.log_throttle import throttle_refused_sessions
from api.mcp_body_guard import StrictJsonBody
from api.unix_socket import AgentApp, PerAgentServers
from hyperhive import __version__
from hyperhive.broker import Broker
from hyperhive.domain import MANAGER_NAME, check_agent_name
from hyperhive.errors import HiveError
from hyperhive.models import AgentInfo, Message
from hyperhive.settings import HiveSettings

log = logging.getLogger(__name__)

SERVER_NAME = "hive"
MCP_PATH = "/mcp"
# The socket file: owner and group may connect (connecting needs write permission), others not.
# Clients reach the socket as http://localhost/mcp (there is no real host); DNS-rebinding
# protection stays on and answers 421 to any other Host header.
TRANSPORT_SECURITY = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"],
    allowed_origins=["http://localhost", "http://localhost:*"],
)

ExtraTools = Callable[[MCPServer], None]
"""Registers more tools on one agent's server (e.g. the manager's); see `hive_tool`."""

P = ParamSpec("P")


class McpSocketError(HiveError):
    """An agent's MCP socket cannot be served."""


# -- results --------------------------------------------------------------------------------------


def tool_text(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)])


def tool_error(what: str, hint: str = "") -> CallToolResult:
    """An `is_error` result: what happened, then what to do about it."""
    text = f"{what}\nWhat to do: {hint}" if hint else what
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _reporting_errors(
    fn: Callable[P, Awaitable[str]], tool_name: str
) -> Callable[P, Awaitable[CallToolResult]]:
    """`fn` returning its text as a result, and a `HiveError` as a tool error (see hive_tool)."""

    # functools.wraps keeps fn's signature (through __wrapped__) and docstring, from which
    # the SDK builds the tool's input schema and description.
    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> CallToolResult:
        try:
            return tool_text(await fn(*args, **kwargs))
        except HiveError as e:
            return tool_error(e.what, e.hint)
        except Exception:
            log.exception("MCP tool %s failed", tool_name)
            return tool_error(
                f"{tool_name} failed inside hive-c0re (an internal error; the operator can "
                "find it in hive-c0re's log).",
                "try again later; if it keeps failing, tell the operator",
            )

    return run


def hive_tool_def(
    fn: Callable[P, Awaitable[str]],
    *,
    name: str | None = None,
    description: str | None = None,
    annotations: ToolAnnotations | None = None,
) -> Tool:
    """The `Tool` for an async function returning plain text (see `hive_tool`), to be given to
    as many servers as need it: building one (its input schema) is the costly part."""
    tool_name = name or str(getattr(fn, "__name__", "tool"))
    return Tool.from_function(
        _reporting_errors(fn, tool_name),
        name=tool_name,
        description=description or inspect.cleandoc(fn.__doc__ or ""),
        annotations=annotations,
        structured_output=False,
    )


def hive_tool(
    server: MCPServer,
    *,
    name: str | None = None,
    description: str | None = None,
    annotations: ToolAnnotations | None = None,
) -> Callable[[Callable[P, Awaitable[str]]], Callable[P, Awaitable[CallToolResult]]]:
    """Register an async tool that returns plain text; a `HiveError` becomes a tool error.

    The tool gets no output schema (`structured_output=False`), so clients show its text as is.
    `BrokerError` (and any other `HiveError`) carries a message written for the caller: it goes
    back as an `is_error` result. Anything else is a bug: logged here, and the caller is told
    only that hive-c0re failed, not why.
    """

    def register(fn: Callable[P, Awaitable[str]]) -> Callable[P, Awaitable[CallToolResult]]:
        tool_name = name or str(getattr(fn, "__name__", "tool"))
        run = _reporting_errors(fn, tool_name)
        server.add_tool(
            run,
            name=tool_name,
            description=description or inspect.cleandoc(fn.__doc__ or ""),
            annotations=annotations,
            structured_output=False,
        )
        return run

    return register


# -- formatting -----------------------------------------------------------------------------------


def _when(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pending(n: int) -> str:
    return "1 message pending" if n == 1 else f"{n} messages pending"


def format_message(message: Message, still_pending: int | None = None) -> str:
    head = f"message #{message.id} from {message.sender} at {_when(message.created_at)}"
    if still_pending is not None:
        head += f" ({_pending(still_pending)} after this one)"
    return f"{head}:\n{message.body}"


def format_whoami(info: AgentInfo) -> str:
    role = " — the manager" if info.is_manager or info.name == MANAGER_NAME else ""
    status = f'status "{info.status_text}"' if info.status_text else "no status set"
    return f"you are {info.name}{role}; state {info.state}; {status}; {_pending(info.pending)}"


# -- the server -----------------------------------------------------------------------------------

_INSTRUCTIONS = (
    "You are the agent {agent} in a hive of agents. Other agents and the human operator reach "
    "you through messages: recv takes your oldest unread message (recv with wait_seconds waits "
    "for one), send(to, body) messages an agent by name or the human as 'operator'. Messages are "
    "sent as {agent}; nobody else can send in your name."
)


class AgentMcpServer(MCPServer):
    """One agent's MCP server: the tools it runs act as `agent` (see `caller`)."""

    def __init__(
        self,
        agent: str,
        broker: Broker,
        *,
        tools: list[Tool],
        closing: asyncio.Event | None = None,
    ) -> None:
        with _without_sdk_logging_setup():
            super().__init__(
                SERVER_NAME,
                version=__version__,
                instructions=_INSTRUCTIONS.format(agent=agent),
                warn_on_duplicate_tools=False,
                tools=tools,
            )
        self.agent = agent
        self.broker = broker
        # Once set, a waiting recv ends at once with "no messages" (the server is stopping).
        self.closing = closing


# Only the SDK's logging set-up, while an MCPServer is built; see _without_sdk_logging_setup.
_sdk_logging_lock = threading.Lock()


def _skip_logging_setup(*_: Any, **__: Any) -> None:
    pass


@contextlib.contextmanager
def _without_sdk_logging_setup() -> Iterator[None]:
    """Build an MCPServer without the SDK's logging set-up (which builds a rich console handler
    on every instance and may add it to the root logger): hive-c0re configures logging itself.
    Only the SDK's server module sees the change, and only for as long as the block runs."""
    names = vars(sdk_server)  # where MCPServer.__init__ looks the function up
    with _sdk_logging_lock:
        saved = names["configure_logging"]
        names["configure_logging"] = _skip_logging_setup
        try:
            yield
        finally:
            names["configure_logging"] = saved


def caller(ctx: Context) -> AgentMcpServer:
    """The server running this tool call, which says who calls: the socket's agent."""
    server = ctx.mcp_server
    if not isinstance(server, AgentMcpServer):
        raise TypeError(f"hive's tools run on an AgentMcpServer, not {type(server).__name__}")
    return server


async def send(
    to: Annotated[
        str, Field(description="Recipient: an agent's name, or 'operator' for the human.")
    ],
    body: Annotated[str, Field(description="The message text.")],
    ctx: Context,
) -> str:
    """Send a message to another agent (or to the human operator as 'operator').

    It is stored at once and wakes the recipient; its reply arrives in your inbox (recv).
    """
    me = caller(ctx)
    key = me.broker.turn_sends.next_key(me.agent, to, body)
    result = await me.broker.send(me.agent, to, body, send_key=key)
    return (
        f"sent #{result.id} to {result.recipient} ({result.recipient} has {result.pending} pending)"
    )


async def recv(
    ctx: Context,
    wait_seconds: Annotated[
        float,
        # Strict, as the HTTP API and the admin socket are: `true` is not a number of seconds,
        # and a wait past HIVE_RECV_MAX_WAIT_S is refused (the broker says the limit), not cut.
        Field(
            ge=0,
            strict=True,
            allow_inf_nan=False,
            description="How long to wait for a message if none is waiting (0 = do not wait; "
            "at most HIVE_RECV_MAX_WAIT_S, 120 s by default; more is refused).",
        ),
    ] = 0,
) -> str:
    me = caller(ctx)
    broker, agent = me.broker, me.agent
    if me.closing is None or wait_seconds == 0:
        message = await broker.recv(agent, wait_seconds)
    else:
        closed, message = await _recv_unless_closing(broker, agent, wait_seconds, me.closing)
        if closed:
            return "no messages (hive-c0re is stopping this MCP server; call recv again later)"
    if message is None:
        waited = f" (waited {wait_seconds:g}s)" if wait_seconds > 0 else ""
        return f"no messages{waited}"
    # The message is taken: a failure to count the rest must not lose it.
    try:
        still_pending: int | None = (await broker.whoami(agent)).pending
    except Exception:
        log.warning("whoami(%s) failed after recv", agent, exc_info=True)
        still_pending = None
    return format_message(message, still_pending)


async def whoami(ctx: Context) -> str:
    """Who you are in the hive: your name, state, status text and how many messages wait."""
    me = caller(ctx)
    return format_whoami(await me.broker.whoami(me.agent))


async def set_status(
    text: Annotated[
        str,
        Field(description="A short line on what you are doing; empty clears it."),
    ],
    ctx: Context,
) -> str:
    """Set your status line, shown to the operator and the other agents."""
    me = caller(ctx)
    await me.broker.set_status(me.agent, text)
    return f'status set: "{text}"' if text else "status cleared"


@functools.lru_cache(maxsize=8)
def common_tools(max_wait: float) -> tuple[Tool, ...]:
    """send, recv, whoami and set_status: every agent's server has these, the same objects
    (built once per recv limit, which recv's description states); each acts as the agent of
    the server that runs it."""
    return (
        hive_tool_def(send),
        hive_tool_def(
            recv,
            description="Take your oldest unread message: sender, id, time and text. Each "
            "message is handed out once. When the inbox is empty it waits up to wait_seconds "
            f'(at most {max_wait:g}) for one, then says "no messages".',
        ),
        hive_tool_def(whoami),
        hive_tool_def(set_status),
    )


async def _recv_unless_closing(
    broker: Broker, agent: str, wait_seconds: float, closing: asyncio.Event
) -> tuple[bool, Message | None]:
    """(False, what recv returned), or (True, None) when `closing` was set first."""
    receiving = asyncio.ensure_future(broker.recv(agent, wait_seconds))
    closed = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait({receiving, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        if not receiving.done():
            receiving.cancel()  # broker.recv puts back a message it popped for a cancelled caller
    try:
        return False, await receiving
    except asyncio.CancelledError:
        if receiving.cancelled() and closing.is_set():
            return True, None
        raise


def build_agent_mcp(
    agent: str,
    broker: Broker,
    *,
    extra_tools: ExtraTools | None = None,
    closing: asyncio.Event | None = None,
) -> AgentMcpServer:
    """The MCP server for `agent`: the common tools, plus whatever `extra_tools` registers.

    `closing`: set it before stopping the server, so that waiting recv calls return at once.
    """
    check_agent_name(agent)
    tools = list(common_tools(broker.settings.recv_max_wait_s))
    server = AgentMcpServer(agent, broker, tools=tools, closing=closing)
    if extra_tools is not None:
        extra_tools(server)
    return server


# -- serving on unix sockets ----------------------------------------------------------------------


class AgentMcpSockets(PerAgentServers):
    """One MCP server per agent, each on `settings.agent_socket_path(agent)`.

    `extra_tools_for(agent)` may return more tools for that agent's server (the manager's).
    """

    label = "MCP socket"
    error = McpSocketError

    def __init__(
        self,
        settings: HiveSettings,
        broker: Broker,
        *,
        extra_tools_for: Callable[[str], ExtraTools | None] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.broker = broker
        self.extra_tools_for = extra_tools_for
        throttle_refused_sessions()

    def socket_path(self, agent: str) -> Path:
        return self.settings.agent_socket_path(agent)

    def build(self, agent: str) -> AgentApp:
        extra = self.extra_tools_for(agent) if self.extra_tools_for is not None else None
        closing = asyncio.Event()
        mcp = build_agent_mcp(agent, self.broker, extra_tools=extra, closing=closing)
        app = mcp.streamable_http_app(
            streamable_http_path=MCP_PATH,
            transport_security=TRANSPORT_SECURITY,
            # Each session holds a server task and its streams: an agent opening sessions in
            # a loop must not exhaust hive-c0re.
            max_sessions=self.settings.max_mcp_sessions_per_agent,
        )
        app.add_middleware(StrictJsonBody)
        ready = asyncio.Event()
        _signal_when_started(app, ready)
        # Waiting recv calls answer at once, so their connections can close.
        return AgentApp(
            app,
            ready,
            before_stop=closing.set,
            uvicorn_options={"http": header_deadline_protocol(self.settings.http_header_timeout_s)},
        )


def _signal_when_started(app: Starlette, ready: asyncio.Event) -> None:
    """Set `ready` once the app's lifespan (the MCP session manager) has started."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state:
            ready.set()
            yield state

    app.router.lifespan_context = lifespan
