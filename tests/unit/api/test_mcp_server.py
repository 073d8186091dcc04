"""The per-agent MCP server in process (`mcp.Client(server)`), over a real Broker and store.

What an agent can do through its tools, what comes back as plain text, how refusals come back
(tool errors carrying the broker's own message), and that the identity is the one bound at build
time: no argument can make a tool act as another agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

import mcp.server.mcpserver.server as sdk_server
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent
from sqlalchemy.engine import Engine

from api.mcp_server import build_agent_mcp, common_tools, hive_tool
from hyperhive.broker import Broker, BrokerError
from hyperhive.bus import EventBus
from hyperhive.domain import MANAGER_NAME, InvalidName
from hyperhive.settings import HiveSettings
from tests.rig.broker import RecordingWaker

COMMON_TOOLS = {"send", "recv", "whoami", "set_status"}


def text_of(result: CallToolResult) -> str:
    assert len(result.content) == 1, result
    block = result.content[0]
    assert isinstance(block, TextContent), result
    return block.text


async def call(server: MCPServer, tool: str, **arguments: object) -> CallToolResult:
    async with Client(server) as client:
        return await client.call_tool(tool, arguments)


async def ok(server: MCPServer, tool: str, **arguments: object) -> str:
    result = await call(server, tool, **arguments)
    assert not result.is_error, result
    assert result.structured_content is None, result
    return text_of(result)


async def refused(server: MCPServer, tool: str, **arguments: object) -> str:
    result = await call(server, tool, **arguments)
    assert result.is_error, result
    return text_of(result)


# -- the tool list --------------------------------------------------------------------------------


async def test_every_agent_gets_the_four_tools_with_plain_text_results(broker: Broker) -> None:
    async with Client(build_agent_mcp("alice", broker)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert client.instructions is not None and "alice" in client.instructions

    assert set(tools) == COMMON_TOOLS
    for tool in tools.values():
        # No output schema: claude would show the model '{"result": ...}' instead of the text.
        assert tool.output_schema is None, tool
        assert tool.description, tool
    assert set(tools["send"].input_schema["properties"]) == {"to", "body"}
    assert set(tools["send"].input_schema["required"]) == {"to", "body"}
    assert set(tools["recv"].input_schema["properties"]) == {"wait_seconds"}
    assert tools["recv"].input_schema.get("required", []) == []
    assert tools["whoami"].input_schema.get("properties", {}) == {}
    assert set(tools["set_status"].input_schema["properties"]) == {"text"}
    # The recv limit comes from the broker's settings.
    assert f"at most {broker.settings.recv_max_wait_s:g}" in (tools["recv"].description or "")


def test_agent_name_is_validated_at_build_time(broker: Broker) -> None:
    for bad in ("../etc", "Alice", "", "far-too-long-name", "operator"):
        with pytest.raises(InvalidName):
            build_agent_mcp(bad, broker)


# -- send / recv / whoami / set_status ------------------------------------------------------------


async def test_send_stores_the_message_as_the_bound_agent_and_wakes_the_recipient(
    broker: Broker, waker: RecordingWaker
) -> None:
    alice = build_agent_mcp("alice", broker)

    text = await ok(alice, "send", to="bob", body="hello bob")
    again = await ok(alice, "send", to="bob", body="second")

    message = await broker.recv("bob")
    assert message is not None
    assert (message.sender, message.recipient, message.body) == ("alice", "bob", "hello bob")
    assert text == f"sent #{message.id} to bob (bob has 1 pending)"
    assert again == f"sent #{message.id + 1} to bob (bob has 2 pending)"
    # Coalesced: one wake-up while the first is outstanding.
    assert waker.woken == ["bob"]


async def test_send_to_the_operator(broker: Broker) -> None:
    text = await ok(build_agent_mcp("alice", broker), "send", to="operator", body="done")
    assert text.startswith("sent #") and text.endswith("to operator (operator has 1 pending)")
    message = await broker.recv("operator")
    assert message is not None and message.sender == "alice"


async def test_recv_gives_sender_id_time_and_body_once(broker: Broker) -> None:
    alice, bob = build_agent_mcp("alice", broker), build_agent_mcp("bob", broker)
    await ok(alice, "send", to="bob", body="first line\nsecond line")
    await ok(alice, "send", to="bob", body="later")

    first = await ok(bob, "recv")
    head, body = first.split("\n", 1)
    assert head.startswith("message #") and " from alice at " in head, first
    assert " UTC (1 message pending after this one):" in head, first
    assert body == "first line\nsecond line"

    second = await ok(bob, "recv")
    assert "(0 messages pending after this one)" in second and second.endswith("\nlater")
    assert await ok(bob, "recv") == "no messages"
    # alice's inbox is hers alone.
    assert await ok(alice, "recv") == "no messages"


async def test_recv_waits_for_a_message(broker: Broker) -> None:
    alice, bob = build_agent_mcp("alice", broker), build_agent_mcp("bob", broker)

    started = time.monotonic()
    assert await ok(bob, "recv", wait_seconds=0.3) == "no messages (waited 0.3s)"
    assert time.monotonic() - started >= 0.25

    waiting = asyncio.create_task(ok(bob, "recv", wait_seconds=10))
    await asyncio.sleep(0.2)  # a negative check: time to return early, then see it did not
    assert not waiting.done()
    await ok(alice, "send", to="bob", body="wake up")
    text = await asyncio.wait_for(waiting, 5)
    assert text.endswith("\nwake up") and " from alice " in text


async def test_recv_refuses_a_wait_past_the_limit_as_the_http_api_does(
    store_engine: Engine, waker: RecordingWaker, hive_settings: HiveSettings, broker: Broker
) -> None:
    quick = Broker(
        store_engine, EventBus(), waker, hive_settings.model_copy(update={"recv_max_wait_s": 0.2})
    )
    bob = build_agent_mcp("bob", quick)
    refused = await call(bob, "recv", wait_seconds=3600)
    assert refused.is_error
    assert "wait_seconds must be a number from 0 to 0.2" in text_of(refused)
    for bad in (True, "5", float("inf"), 1e9):
        assert (await call(bob, "recv", wait_seconds=bad)).is_error, bad
    assert await ok(bob, "recv", wait_seconds=0.2) == "no messages (waited 0.2s)"


async def test_whoami_and_set_status(broker: Broker) -> None:
    alice = build_agent_mcp("alice", broker)
    assert (
        await ok(alice, "whoami") == "you are alice; state idle; no status set; 0 messages pending"
    )

    assert (
        await ok(alice, "set_status", text="reading the spec") == 'status set: "reading the spec"'
    )
    assert (await broker.whoami("alice")).status_text == "reading the spec"
    await ok(build_agent_mcp("bob", broker), "send", to="alice", body="hi")
    assert await ok(alice, "whoami") == (
        'you are alice; state idle; status "reading the spec"; 1 message pending'
    )

    assert await ok(alice, "set_status", text="") == "status cleared"
    assert (await broker.whoami("alice")).status_text == ""

    manager = await ok(build_agent_mcp(MANAGER_NAME, broker), "whoami")
    assert manager.startswith(f"you are {MANAGER_NAME} — the manager;"), manager


# -- refusals are tool errors with the broker's message -------------------------------------------


async def broker_refusal(call: Awaitable[object]) -> BrokerError:
    """What the broker itself says when refusing `call`."""
    with pytest.raises(BrokerError) as caught:
        await call
    return caught.value


@pytest.mark.parametrize(
    ("to", "body"),
    [
        ("zed", "hi"),  # not a registered agent
        ("Not A Name", "hi"),  # invalid name
        ("bob", "   "),  # empty body
        ("bob", "x" * 70_000),  # over max_body_bytes
        ("bob", "nul\x00byte"),
    ],
)
async def test_refused_send_is_a_tool_error_saying_what_and_what_to_do(
    broker: Broker, to: str, body: str
) -> None:
    expected = await broker_refusal(broker.send("alice", to, body))

    text = await refused(build_agent_mcp("alice", broker), "send", to=to, body=body)

    assert text == f"{expected.what}\nWhat to do: {expected.hint}"
    assert (await broker.whoami("bob")).pending == 0


async def test_refused_set_status_and_recv_are_tool_errors(broker: Broker) -> None:
    alice = build_agent_mcp("alice", broker)
    expected = await broker_refusal(broker.set_status("alice", "x" * 5000))
    assert await refused(alice, "set_status", text="x" * 5000) == (
        f"{expected.what}\nWhat to do: {expected.hint}"
    )
    # Out-of-schema arguments are refused by the SDK before the broker sees them.
    assert "wait_seconds" in await refused(alice, "recv", wait_seconds=-1)


async def test_unregistered_agent_gets_tool_errors_not_crashes(broker: Broker) -> None:
    ghost = build_agent_mcp("ghost", broker)  # a valid name with no agent record
    for tool, arguments in [
        ("whoami", {}),
        ("recv", {}),
        ("set_status", {"text": "hi"}),
        ("send", {"to": "bob", "body": "hi"}),
    ]:
        text = await refused(ghost, tool, **arguments)
        assert "'ghost' is not a registered agent" in text, (tool, text)
        assert "What to do:" in text


async def test_a_bug_is_a_tool_error_without_internals(broker: Broker) -> None:
    def extra(server: MCPServer) -> None:
        @hive_tool(server)
        async def explode() -> str:
            """Fails."""
            raise KeyError("secret internal detail")

    text = await refused(build_agent_mcp("alice", broker, extra_tools=extra), "explode")
    assert "explode failed inside hive-c0re" in text
    assert "secret" not in text


# -- identity -------------------------------------------------------------------------------------


# `ctx` is the name of the tools' own context parameter, which says who calls.
@pytest.mark.parametrize("spoof", ["sender", "agent", "from", "as", "name", "ctx"])
async def test_identity_cannot_be_spoofed_through_arguments(broker: Broker, spoof: str) -> None:
    alice = build_agent_mcp("alice", broker)
    result = await call(alice, "send", to="bob", body="who am i", **{spoof: "hm1nd"})

    message = await broker.recv("bob")
    if result.is_error:  # refusing the unknown argument is as good as ignoring it
        assert message is None
    else:
        assert message is not None and message.sender == "alice"

    result = await call(alice, "whoami", **{spoof: "bob"})
    assert result.is_error or text_of(result).startswith("you are alice;")
    result = await call(alice, "set_status", text="mine", **{spoof: "bob"})
    assert (await broker.whoami("bob")).status_text == ""


async def test_each_server_acts_as_its_own_agent(broker: Broker) -> None:
    servers = {name: build_agent_mcp(name, broker) for name in ("alice", "bob", MANAGER_NAME)}
    for name, server in servers.items():
        assert (await ok(server, "whoami")).startswith(f"you are {name}")
        await ok(server, "send", to="operator", body=f"from {name}")
    senders = []
    while (message := await broker.recv("operator")) is not None:
        senders.append((message.sender, message.body))
    assert senders == [(name, f"from {name}") for name in servers]


# -- extra tools ----------------------------------------------------------------------------------


async def test_extra_tools_are_added_to_that_server_only(broker: Broker) -> None:
    def manager_tools(server: MCPServer) -> None:
        @hive_tool(server)
        async def list_agents() -> str:
            """Every agent."""
            return "alice, bob"

        @hive_tool(server)
        async def kill(name: str) -> str:
            """Refuses."""
            raise BrokerError(f"cannot kill {name}", "ask the operator")

    manager = build_agent_mcp(MANAGER_NAME, broker, extra_tools=manager_tools)
    alice = build_agent_mcp("alice", broker)
    async with Client(manager) as client:
        assert {t.name for t in (await client.list_tools()).tools} == COMMON_TOOLS | {
            "list_agents",
            "kill",
        }
    async with Client(alice) as client:
        assert {t.name for t in (await client.list_tools()).tools} == COMMON_TOOLS

    assert await ok(manager, "list_agents") == "alice, bob"
    assert (
        await refused(manager, "kill", name="bob")
        == "cannot kill bob\nWhat to do: ask the operator"
    )
    assert "list_agents" in await refused(alice, "list_agents")


# -- built once -----------------------------------------------------------------------------------


async def test_servers_share_the_tool_definitions_yet_each_acts_as_its_own_agent(
    broker: Broker,
) -> None:
    alice, bob = build_agent_mcp("alice", broker), build_agent_mcp("bob", broker)
    shared = common_tools(broker.settings.recv_max_wait_s)
    for server in (alice, bob):
        tools = {tool.name: tool for tool in server._tool_manager.list_tools()}
        assert all(tools[tool.name] is tool for tool in shared), "built once, not per agent"
    # The same tool object acts as whoever's server runs it.
    assert (await ok(alice, "whoami")).startswith("you are alice;")
    assert (await ok(bob, "whoami")).startswith("you are bob;")
    await ok(bob, "send", to="alice", body="from bob")
    message = await broker.recv("alice")
    assert message is not None and message.sender == "bob"


def test_building_a_server_leaves_logging_alone(broker: Broker) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging = vars(sdk_server)["configure_logging"]
    build_agent_mcp("alice", broker)
    assert root.handlers == handlers and root.level == level
    # Only skipped while our server is built: the SDK's own function is back.
    assert vars(sdk_server)["configure_logging"] is configure_logging
