"""Agents' MCP sockets end to end: the real unix-socket servers, the stdio bridge, the MCP
Inspector CLI as an independent client, and the real claude CLI sending through the bridge.

Everything runs over a real Broker on a real SQLite store; the waker only records.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

from api.mcp_server import AgentMcpSockets, McpSocketError, hive_tool
from hyperhive.broker import Broker
from hyperhive.domain import MANAGER_NAME
from hyperhive.settings import HiveSettings
from tests.fakes.anthropic_api import FakeAnthropic, Text, ToolUse, tool_result_text
from tests.fakes.fixtures import REPO_ROOT, run_claude
from tests.rig.broker import RecordingWaker
from tests.rig.mcp_client import INITIALIZE_REQUEST, text_of, uds_client

pytestmark = pytest.mark.integration

COMMON_TOOLS = {"send", "recv", "whoami", "set_status"}
HIVE_AGENT = Path(sys.executable).with_name("hive-agent")
INSPECTOR = REPO_ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "mcp-inspector"
TIMEOUT = 60.0


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture
async def sockets(hive_settings: HiveSettings, broker: Broker) -> AsyncIterator[AgentMcpSockets]:
    served = AgentMcpSockets(hive_settings, broker)
    yield served
    await served.stop_all()


def bridge(path: Path | str) -> StdioServerParameters:
    return StdioServerParameters(command=str(HIVE_AGENT), args=["mcp", "--socket", str(path)])


def dump_tools(tools: list[Any]) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]


def mcp_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if not t.done()}


async def inbox(broker: Broker, agent: str) -> list[tuple[str, str]]:
    found = []
    while (message := await broker.recv(agent)) is not None:
        found.append((message.sender, message.body))
    return found


@pytest.fixture(scope="session")
def inspector_bin() -> Path:
    if not (INSPECTOR.is_file() and os.access(INSPECTOR, os.X_OK)):
        pytest.fail(
            f"MCP Inspector not found at {INSPECTOR}: run `make test` (it installs the pinned "
            "@modelcontextprotocol/inspector from tools/npm)",
            pytrace=False,
        )
    return INSPECTOR


async def inspector(
    inspector_bin: Path, home: Path, socket_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """`mcp-inspector --cli hive-agent mcp --socket PATH ARGS…`, off the event loop (the socket's
    server runs on this loop)."""
    cmd = [str(inspector_bin), "--cli", str(HIVE_AGENT), "mcp", "--socket", str(socket_path)]
    env = {**os.environ, "HOME": str(home)}
    return await asyncio.to_thread(
        subprocess.run, [*cmd, *args], capture_output=True, text=True, env=env, timeout=TIMEOUT
    )


# -- the socket -----------------------------------------------------------------------------------


async def test_socket_serves_the_agents_tools_as_that_agent(
    sockets: AgentMcpSockets, hive_settings: HiveSettings, broker: Broker, waker: RecordingWaker
) -> None:
    path = await sockets.start("alice")

    assert path == hive_settings.agent_socket_path("alice")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert sockets.running() == {"alice"}

    async with uds_client(path) as client:
        assert {t.name for t in (await client.list_tools()).tools} == COMMON_TOOLS
        sent = text_of(await client.call_tool("send", {"to": "bob", "body": "over the socket"}))
        me = text_of(await client.call_tool("whoami", {}))

    assert sent.startswith("sent #") and sent.endswith(" to bob (bob has 1 pending)")
    assert me.startswith("you are alice;")
    assert await inbox(broker, "bob") == [("alice", "over the socket")]
    assert waker.woken == ["bob"]


async def test_the_socket_is_the_identity(sockets: AgentMcpSockets, broker: Broker) -> None:
    alice, bob = await sockets.start("alice"), await sockets.start("bob")
    async with uds_client(alice) as client:
        await client.call_tool("send", {"to": "bob", "body": "ping", "sender": "hm1nd"})
    async with uds_client(bob) as client:
        received = text_of(await client.call_tool("recv", {}))
        assert text_of(await client.call_tool("whoami", {})).startswith("you are bob;")
    assert " from alice at " in received and received.endswith("\nping")


async def test_only_the_managers_socket_offers_manager_tools(
    hive_settings: HiveSettings, broker: Broker
) -> None:
    def manager_tools(server: MCPServer) -> None:
        @hive_tool(server)
        async def request_spawn(name: str, purpose: str) -> str:
            """Ask the operator for a new agent."""
            return f"requested {name}"

    sockets = AgentMcpSockets(
        hive_settings,
        broker,
        extra_tools_for=lambda agent: manager_tools if agent == MANAGER_NAME else None,
    )
    try:
        manager, alice = await sockets.start(MANAGER_NAME), await sockets.start("alice")
        async with uds_client(manager) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == COMMON_TOOLS | {"request_spawn"}
            result = await client.call_tool("request_spawn", {"name": "carol", "purpose": "x"})
            assert text_of(result) == "requested carol"
        async with uds_client(alice) as client:
            assert {t.name for t in (await client.list_tools()).tools} == COMMON_TOOLS
            result = await client.call_tool("request_spawn", {"name": "carol", "purpose": "x"})
            assert result.is_error and "request_spawn" in text_of(result)
    finally:
        await sockets.stop_all()


async def test_other_host_headers_are_refused(sockets: AgentMcpSockets) -> None:
    path = await sockets.start("alice")
    async with httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(path))) as http:
        response = await http.post(
            "http://evil.example/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 421


async def test_json_the_api_would_refuse_is_refused_here_too(
    sockets: AgentMcpSockets, broker: Broker
) -> None:
    """Duplicate keys (the SDK would take the last: `to` could be read two ways), NaN: a
    JSON-RPC parse error, and nothing sent."""
    path = await sockets.start("alice")
    bodies = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"send",'
        b'"arguments":{"to":"bob","to":"operator","body":"hi"}}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"recv",'
        b'"arguments":{"wait_seconds":NaN}}}',
    )
    async with httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(path))) as http:
        for body in bodies:
            response = await http.post(
                "http://localhost/mcp",
                content=body,
                headers={
                    "accept": "application/json, text/event-stream",
                    "content-type": "application/json",
                },
            )
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == -32700 and "Parse error" in error["message"], error
    assert (await broker.whoami("bob")).pending == 0
    assert (await broker.whoami("operator")).pending == 0


async def test_an_agent_cannot_open_sessions_without_end(
    sockets: AgentMcpSockets, broker: Broker
) -> None:
    limit = sockets.settings.max_mcp_sessions_per_agent
    path = await sockets.start("alice")
    headers = {"accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(path))) as http:
        statuses = []
        for _ in range(limit + 3):
            response = await http.post(
                "http://localhost/mcp", json=INITIALIZE_REQUEST, headers=headers
            )
            statuses.append(response.status_code)
        assert statuses == [200] * limit + [503] * 3, statuses
        assert "Too many open sessions" in response.text
    # A real client still works once sessions end: restart frees them all.
    await sockets.stop("alice")
    path = await sockets.start("alice")
    async with uds_client(path) as client:
        assert "send" in {tool.name for tool in (await client.list_tools()).tools}


async def test_start_is_idempotent_and_stop_frees_the_socket_and_its_tasks(
    hive_settings: HiveSettings, broker: Broker
) -> None:
    sockets = AgentMcpSockets(hive_settings, broker)
    before = mcp_tasks()

    path = await sockets.start("alice")
    assert await sockets.start("alice") == path
    assert sockets.running() == {"alice"}
    async with uds_client(path) as client:
        await client.call_tool("whoami", {})
    # A long-polling recv in flight when the socket stops is answered at once, not cut off.
    async with uds_client(path) as client:
        polling = asyncio.create_task(client.call_tool("recv", {"wait_seconds": 60}))
        await asyncio.sleep(0.3)  # into the recv's wait: nothing announces it
        started = time.monotonic()
        await sockets.stop("alice")
        stopped_in = time.monotonic() - started
        answer = text_of(await asyncio.wait_for(polling, 5))

    assert stopped_in < 1, stopped_in
    assert answer.startswith("no messages (hive-c0re is stopping"), answer
    assert not path.exists()
    assert sockets.running() == set()
    leftover = mcp_tasks() - before
    assert not leftover, leftover
    with pytest.raises(FileNotFoundError), socket.socket(socket.AF_UNIX) as probe:
        probe.connect(str(path))

    # Served again on the same path, and stopping twice is harmless.
    assert await sockets.start("alice") == path
    async with uds_client(path) as client:
        assert text_of(await client.call_tool("whoami", {})).startswith("you are alice;")
    await sockets.stop_all()
    await sockets.stop("alice")
    assert not path.exists() and mcp_tasks() - before == set()


async def test_a_stale_socket_file_is_replaced(
    sockets: AgentMcpSockets, hive_settings: HiveSettings
) -> None:
    path = hive_settings.agent_socket_path("alice")
    path.parent.mkdir(parents=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound, never listening: what a killed hive-c0re leaves behind
    dead.close()
    assert path.exists()

    await sockets.start("alice")
    async with uds_client(path) as client:
        assert text_of(await client.call_tool("whoami", {})).startswith("you are alice;")


async def test_a_live_socket_or_a_file_in_the_way_is_not_touched(
    sockets: AgentMcpSockets, hive_settings: HiveSettings
) -> None:
    live = hive_settings.agent_socket_path("alice")
    live.parent.mkdir(parents=True)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(live))
    other.listen(1)
    try:
        with pytest.raises(McpSocketError, match="another process is serving"):
            await sockets.start("alice")
        assert live.exists()
    finally:
        other.close()

    plain = hive_settings.agent_socket_path("bob")
    plain.parent.mkdir(parents=True)
    plain.write_text("not a socket")
    with pytest.raises(McpSocketError, match="is not a socket"):
        await sockets.start("bob")
    assert plain.read_text() == "not a socket"
    assert sockets.running() == set()


# -- the stdio bridge -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_bridge_lists_and_calls_exactly_the_sockets_tools(
    sockets: AgentMcpSockets, broker: Broker, mode: str
) -> None:
    path = await sockets.start("alice")
    async with uds_client(path) as direct:
        direct_tools = dump_tools((await direct.list_tools()).tools)
        direct_refusal = text_of(await direct.call_tool("send", {"to": "zed", "body": "x"}))

    async with Client(bridge(path), mode=mode) as client:
        # initialize: the socket's name and instructions (claude shows the model the latter).
        assert client.server_info is not None and client.server_info.name == "hive"
        assert client.instructions is not None and "agent alice" in client.instructions
        assert dump_tools((await client.list_tools()).tools) == direct_tools

        sent = await client.call_tool("send", {"to": "bob", "body": "via the bridge"})
        refusal = await client.call_tool("send", {"to": "zed", "body": "x"})
        status = await client.call_tool("set_status", {"text": "bridging"})

    assert not sent.is_error and text_of(sent).endswith(" to bob (bob has 1 pending)")
    assert sent.structured_content is None
    assert refusal.is_error and text_of(refusal) == direct_refusal
    assert text_of(status) == 'status set: "bridging"'
    assert await inbox(broker, "bob") == [("alice", "via the bridge")]
    assert (await broker.whoami("alice")).status_text == "bridging"


async def test_bridge_keeps_working_across_a_restart_of_the_socket(
    sockets: AgentMcpSockets, broker: Broker
) -> None:
    path = await sockets.start("alice")
    async with Client(bridge(path), mode="legacy") as client:
        assert not (await client.call_tool("whoami", {})).is_error

        await sockets.stop("alice")
        started = time.monotonic()
        down = await client.call_tool("send", {"to": "bob", "body": "lost?"})
        assert time.monotonic() - started < 5
        assert down.is_error and str(path) in text_of(down)

        await sockets.start("alice")
        up = await client.call_tool("send", {"to": "bob", "body": "back"})
        assert not up.is_error, up
    assert await inbox(broker, "bob") == [("alice", "back")]


async def test_bridge_without_a_socket_fails_fast_and_clearly(hive_run_dir: Path) -> None:
    missing = hive_run_dir / "agents" / "alice" / "mcp.sock"

    # Started with stdin closed: it says what is wrong on stderr and ends, it does not hang.
    started = time.monotonic()
    proc = await asyncio.to_thread(
        subprocess.run,
        [str(HIVE_AGENT), "mcp", "--socket", str(missing)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert time.monotonic() - started < 10
    assert proc.returncode == 0, proc
    assert proc.stdout == ""
    assert f"cannot reach hive-c0re's MCP server on {missing}" in proc.stderr
    assert "the socket does not exist" in proc.stderr
    assert "hive-c0re must be running and this agent registered" in proc.stderr

    # Spoken to, it answers every request at once with that message.
    async with Client(bridge(missing), mode="legacy") as client:
        started = time.monotonic()
        with pytest.raises(MCPError, match="hive-c0re must be running"):
            await client.list_tools()
        result = await client.call_tool("send", {"to": "bob", "body": "hi"})
        assert time.monotonic() - started < 5
    assert result.is_error
    assert str(missing) in text_of(result) and "the socket does not exist" in text_of(result)


async def test_bridge_on_a_dead_socket_says_connection_refused(
    hive_settings: HiveSettings,
) -> None:
    path = hive_settings.agent_socket_path("alice")
    path.parent.mkdir(parents=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    async with Client(bridge(path), mode="legacy") as client:
        result = await client.call_tool("whoami", {})
    assert result.is_error and "connection refused" in text_of(result)


def test_bridge_imports_nothing_of_hive_c0re() -> None:
    """The bridge runs in the container: no Temporal, no database layer, no web framework."""
    code = (
        "import sys, agent_harness.cli, agent_harness.mcp_bridge\n"
        "heavy = {'temporalio', 'sqlalchemy', 'sqlmodel', 'fastapi', 'api', 'activities',"
        " 'workflows'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert out.stdout.strip() == "[]", out


# -- an independent client: the MCP Inspector CLI -------------------------------------------------


async def test_inspector_lists_and_calls_the_tools_through_the_bridge(
    sockets: AgentMcpSockets, broker: Broker, inspector_bin: Path, tmp_path: Path
) -> None:
    path = await sockets.start("alice")

    listed = await inspector(inspector_bin, tmp_path, path, "--method", "tools/list")
    assert listed.returncode == 0, listed
    assert {t["name"] for t in json.loads(listed.stdout)["tools"]} == COMMON_TOOLS

    called = await inspector(
        inspector_bin,
        tmp_path,
        path,
        *("--method", "tools/call", "--tool-name", "send"),
        *("--tool-arg", "to=bob", "body=hi"),
    )
    assert called.returncode == 0, called
    result = json.loads(called.stdout)
    assert result["isError"] is False
    [content] = result["content"]
    assert content["type"] == "text"
    assert content["text"].endswith(" to bob (bob has 1 pending)")
    assert await inbox(broker, "bob") == [("alice", "hi")]

    unknown = await inspector(
        inspector_bin,
        tmp_path,
        path,
        *("--method", "tools/call", "--tool-name", "request_spawn"),
        *("--tool-arg", "name=carol", "purpose=x"),
    )
    assert unknown.returncode == 5, unknown
    assert "tool_not_found" in unknown.stdout + unknown.stderr


# -- the real claude CLI --------------------------------------------------------------------------


async def test_claude_sends_a_message_through_the_bridge(
    sockets: AgentMcpSockets,
    broker: Broker,
    waker: RecordingWaker,
    claude_bin: Path,
    claude_env: dict[str, str],
    claude_cwd: Path,
    fake_model: FakeAnthropic,
) -> None:
    path = await sockets.start("alice")
    config = {
        "mcpServers": {
            "hive": {
                "type": "stdio",
                "command": str(HIVE_AGENT),
                "args": ["mcp", "--socket", str(path)],
            }
        }
    }
    fake_model.script(ToolUse("mcp__hive__send", {"to": "bob", "body": "hi"}), Text("done"))

    run = await asyncio.to_thread(
        run_claude,
        claude_bin,
        claude_env,
        "tell bob hi",
        ["--mcp-config", json.dumps(config), "--strict-mcp-config", "--allowedTools", "mcp__hive"],
        cwd=claude_cwd,
        timeout=TIMEOUT,
    )

    assert run.returncode == 0, run.describe()
    assert {"name": "hive", "status": "connected"} in run.init["mcp_servers"], run.describe()
    assert {f"mcp__hive__{t}" for t in COMMON_TOOLS} <= set(run.init["tools"])
    [tool_result] = fake_model.last_tool_results()
    assert not tool_result.get("is_error")
    assert tool_result_text(tool_result).endswith(" to bob (bob has 1 pending)")
    # The socket's instructions reached the model through the bridge's initialize.
    assert "You are the agent alice" in json.dumps(fake_model.turn_requests()[0].body)

    assert await inbox(broker, "bob") == [("alice", "hi")]
    assert waker.woken == ["bob"]
