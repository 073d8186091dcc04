"""Property tests (hypothesis, profile `hostile` in tests/hostile/__init__.py):

- any JSON-ish arguments to any MCP tool (the common ones on alice's socket, the manager's on
  hm1nd's) answer with text, success or a tool error, never a crash or an internal error, and
  the store stays consistent;
- broker send/recv against a model of per-recipient FIFO inboxes: every accepted message is
  received exactly once, in order, by its recipient alone; refused sends store nothing;
- the admin protocol parser never raises: every line gets a request or a coded error that
  encodes as a response line with the protocol version, and the admin socket answers every
  read-only or malformed line with one such line.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client

from api.admin_socket import AdminSocket
from api.manager_tools import manager_tools
from api.mcp_server import AgentMcpServer, build_agent_mcp
from hyperhive.admin_protocol import (
    COMMANDS,
    PROTOCOL_VERSION,
    BaseRequest,
    ErrorCode,
    ProtocolError,
    encode_response,
    parse_request,
)
from hyperhive.broker import MAX_STATUS_CHARS, Broker, BrokerError
from hyperhive.bus import EventBus
from hyperhive.domain import OPERATOR_NAME, SYSTEM_SENDER, InvalidName, check_recipient
from hyperhive.store.db import begin
from tests.hostile.conftest import WORLD_AGENTS, World
from tests.hostile.corpus import BAD_NAMES, MAX_BODY_BYTES
from tests.rig.broker import RecordingWaker

pytestmark = pytest.mark.integration  # the manager's tools reach the real Temporal dev server

# -- strategies ----------------------------------------------------------------------------------

NAMES = [n for _, n, _ in BAD_NAMES] + ["alice", "bob", "hm1nd", OPERATOR_NAME, "nobody", "zz9"]
text = st.text(max_size=40) | st.sampled_from(NAMES) | st.text(min_size=95, max_size=120)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
COMMON_TOOLS = {
    "send": ["to", "body"],
    "recv": ["wait_seconds"],
    "whoami": [],
    "set_status": ["text"],
}
MANAGER_TOOLS = {
    "request_spawn": ["name", "purpose"],
    "kill": ["name"],
    "request_apply_commit": ["name", "sha", "description"],
    "list_agents": [],
}
EXTRA_KEYS = ["sender", "agent", "as", "from", "__class__", ""]


@st.composite
def tool_calls(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    agent = draw(st.sampled_from(["alice", "hm1nd"]))
    tools = {**COMMON_TOOLS, **(MANAGER_TOOLS if agent == "hm1nd" else {})}
    tool = draw(st.sampled_from([*tools, "no_such_tool"]))
    keys = tools.get(tool, [])
    args: dict[str, Any] = {}
    for key in keys:
        if draw(st.integers(0, 9)) > 0:  # usually present, sometimes missing
            args[key] = draw(text if draw(st.booleans()) else json_values)
    for key in draw(st.lists(st.sampled_from(EXTRA_KEYS), max_size=2, unique=True)):
        args[key] = draw(json_values)
    if tool == "kill" and args.get("name") in WORLD_AGENTS:
        # Killing a real agent waits for its KillWorkflow; no worker runs here.
        args["name"] = "nobody"
    return agent, tool, args


@pytest.fixture(scope="module")
async def quick(hostile_world: World) -> AsyncIterator[tuple[Broker, dict[str, AgentMcpServer]]]:
    """A broker on the world's store that waits at most 10 ms in recv and never rate-limits,
    and alice's and hm1nd's MCP servers on it."""
    settings = hostile_world.settings.model_copy(
        update={"recv_max_wait_s": 0.01, "send_rate_per_minute": 1_000_000}
    )
    broker = Broker(hostile_world.engine, EventBus(), RecordingWaker(), settings)
    servers = {
        "alice": build_agent_mcp("alice", broker),
        "hm1nd": build_agent_mcp(
            "hm1nd",
            broker,
            extra_tools=manager_tools(hostile_world.lifecycle, hostile_world.engine),
        ),
    }
    yield broker, servers
    await broker.aclose()


def message_rows(world: World) -> list[tuple[Any, ...]]:
    with begin(world.engine) as conn:
        return list(conn.execute(sa.text("SELECT sender, recipient, body FROM messages")))


def assert_store_consistent(world: World) -> None:
    for sender, recipient, body in message_rows(world):
        for name in (sender, recipient):
            if name != SYSTEM_SENDER:
                check_recipient(name)
        assert body.strip() and "\x00" not in body, body
        assert len(body.encode()) <= MAX_BODY_BYTES, body
    with begin(world.engine) as conn:
        statuses = conn.execute(sa.text("SELECT name, status_text FROM agents")).all()
    for name, status in statuses:
        assert name in WORLD_AGENTS, name
        assert status is None or (len(status) <= MAX_STATUS_CHARS and "\x00" not in status)


# -- MCP tools -------------------------------------------------------------------------------------


@given(call=tool_calls())
async def test_any_tool_arguments_get_text_never_a_crash(
    hostile_world: World, quick: tuple[Broker, dict[str, AgentMcpServer]], call: Any
) -> None:
    agent, tool, args = call
    _, servers = quick
    before_rows = len(message_rows(hostile_world))
    before = await hostile_world.workflows()
    try:
        async with Client(servers[agent]) as client:
            result = await client.call_tool(tool, args)
    finally:
        # A spawn or apply that was (rightly) accepted started a workflow: nothing runs it here.
        await hostile_world.terminate_new(before, await hostile_world.workflows())
    assert len(result.content) == 1, result
    said = result.content[0].text  # type: ignore[union-attr]
    assert said.strip(), result
    assert "internal error" not in said, said
    assert "Traceback" not in said, said
    added = len(message_rows(hostile_world)) - before_rows
    assert added == (1 if tool == "send" and not result.is_error else 0), (tool, args, said)
    if tool == "send" and not result.is_error:
        assert said.startswith("sent #"), said
    assert_store_consistent(hostile_world)


# -- broker send/recv against a model --------------------------------------------------------------

PARTIES = ["alice", "bob", "hm1nd", OPERATOR_NAME]
bodies = (
    st.text(max_size=30)
    | st.text(min_size=90, max_size=110)
    | st.sampled_from(["", " ", "\x00", "\ud800", "é" * 50 + "a", "ok"])
)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("send"),
            st.sampled_from([*PARTIES, "nobody", "Bad"]),
            st.sampled_from([*PARTIES, "nobody", "../x", ""]),
            bodies,
        ),
        st.tuples(st.just("recv"), st.sampled_from([*PARTIES, "nobody"])),
    ),
    max_size=25,
)


def _would_accept(sender: str, to: str, body: str) -> bool:
    try:
        check_recipient(sender)
        check_recipient(to)
    except InvalidName:
        return False
    if sender not in PARTIES or to not in PARTIES:
        return False
    try:
        size = len(body.encode())
    except UnicodeEncodeError:
        return False
    return 0 < size <= MAX_BODY_BYTES and bool(body.strip()) and "\x00" not in body


@given(ops=operations)
async def test_every_accepted_message_is_received_once_in_order_by_its_recipient(
    hostile_world: World, quick: tuple[Broker, dict[str, AgentMcpServer]], ops: list[Any]
) -> None:
    broker, _ = quick
    for party in PARTIES:  # start from empty inboxes
        while await broker.recv(party) is not None:
            pass
    inbox: dict[str, deque[tuple[int, str, str]]] = {p: deque() for p in PARTIES}
    for op in ops:
        if op[0] == "send":
            _, sender, to, body = op
            expected = _would_accept(sender, to, body)
            try:
                result = await broker.send(sender, to, body)
            except BrokerError as e:
                assert not expected, (sender, to, body, e.code, e.what)
                assert e.code and e.what
                continue
            assert expected, (sender, to, body)
            assert result.recipient == to
            assert result.pending == len(inbox[to]) + 1
            inbox[to].append((result.id, sender, body))
        else:
            _, agent = op
            try:
                message = await broker.recv(agent)
            except BrokerError as e:
                assert agent not in PARTIES and e.code == "unknown_agent"
                continue
            if not inbox[agent]:
                assert message is None
                continue
            assert message is not None
            assert (message.id, message.sender, message.body) == inbox[agent].popleft()
            assert message.recipient == agent
    for party in PARTIES:
        while inbox[party]:
            message = await broker.recv(party)
            assert message is not None
            assert (message.id, message.sender, message.body) == inbox[party].popleft()
        assert await broker.recv(party) is None


# -- the admin protocol --------------------------------------------------------------------------

envelope_values = json_values | st.sampled_from([PROTOCOL_VERSION, 0, 2, -1, 2**64, 1.0, True])


@st.composite
def admin_objects(draw: st.DrawFn) -> dict[str, Any]:
    cmd = draw(st.sampled_from([*COMMANDS, "nope"]) | json_values)
    model = COMMANDS.get(cmd) if isinstance(cmd, str) else None
    obj: dict[str, Any] = {}
    if draw(st.integers(0, 9)) > 0:
        obj["version"] = draw(st.just(PROTOCOL_VERSION) | envelope_values)
    if draw(st.integers(0, 9)) > 0:
        obj["cmd"] = cmd
    if model is not None:
        for key in model.model_fields:
            if key not in ("version", "cmd") and draw(st.booleans()):
                obj[key] = draw(json_values)
    for key in draw(st.lists(st.text(max_size=8), max_size=2)):
        obj[key] = draw(json_values)
    return obj


lines = (
    st.binary(max_size=200)
    | admin_objects().map(lambda o: json.dumps(o).encode())
    | admin_objects().map(lambda o: json.dumps(o, ensure_ascii=False).encode("utf-8", "replace"))
    | st.builds(
        lambda a, b: a + b,
        admin_objects().map(lambda o: json.dumps(o).encode()),
        st.binary(max_size=5),
    )
)


def check_response(response: dict[str, Any]) -> None:
    assert response["version"] == PROTOCOL_VERSION
    line = encode_response(response)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == response


@given(line=lines)
def test_the_admin_parser_never_raises_and_answers_with_a_version(line: bytes) -> None:
    parsed = parse_request(line)
    if isinstance(parsed, ProtocolError):
        assert parsed.code in ErrorCode and parsed.code not in (
            ErrorCode.REFUSED,
            ErrorCode.INTERNAL,
        )
        assert parsed.message.strip() and parsed.hint.strip()
        response = parsed.response()
        assert response["ok"] is False and response["error"] == parsed.code.value
        check_response(response)
    else:
        assert isinstance(parsed, BaseRequest)
        assert parsed.version == PROTOCOL_VERSION and parsed.cmd in COMMANDS
        for value in parsed.model_dump().values():
            if isinstance(value, float):
                assert math.isfinite(value)
            if isinstance(value, str):
                assert "\x00" not in value


READ_ONLY = {"list", "status", "approvals", "logs", "urls"}


@given(line=lines)
async def test_the_admin_socket_answers_every_line_with_one_response_line(
    hostile_world: World, line: bytes
) -> None:
    parsed = parse_request(line)
    if not isinstance(parsed, ProtocolError) and parsed.cmd not in READ_ONLY:
        return  # acting commands are covered by the corpus (they need a running hive)
    answer = await AdminSocket(hostile_world.operator, hostile_world.settings).answer(line, "t")
    response = json.loads(answer)
    check_response(response)
    if not response["ok"]:
        assert response["error"] != ErrorCode.INTERNAL.value, response
        assert response["message"].strip(), response
