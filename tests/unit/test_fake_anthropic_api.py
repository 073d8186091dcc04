"""The fake model on its own: SSE encoding, scripting and recording, without the claude CLI.

Most tests go through httpx's ASGI transport (no sockets); the lifecycle tests use the real
background server, since that is where threads and event loops meet.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fakes.anthropic_api import (
    NOTHING_SCRIPTED,
    ApiError,
    FakeAnthropic,
    Gate,
    RecordedRequest,
    Reply,
    Text,
    ToolUse,
    tool_result_text,
)

TOOLS = [{"name": "mcp__echo__record", "input_schema": {"type": "object"}}]


def turn(content: Any = "hi", *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": 100,
        "stream": stream,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def parse_sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in raw.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def message_from_sse(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Rebuild the message the way a client SDK does, checking the event grammar on the way."""
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    message: dict[str, Any] = events[0][1]["message"]
    assert message["content"] == [] and message["stop_reason"] is None
    partial_json: dict[int, str] = {}
    for name, data in events[1:-2]:
        index = data["index"]
        if name == "content_block_start":
            assert index == len(message["content"])
            message["content"].append(data["content_block"])
        elif name == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                message["content"][index]["text"] += delta["text"]
            else:
                assert delta["type"] == "input_json_delta"
                partial_json[index] = partial_json.get(index, "") + delta["partial_json"]
        else:
            assert name == "content_block_stop"
            if index in partial_json:
                message["content"][index]["input"] = json.loads(partial_json[index])
    message["stop_reason"] = events[-2][1]["delta"]["stop_reason"]
    message["usage"].update(events[-2][1]["usage"])
    return message


@pytest.fixture
def fake() -> FakeAnthropic:
    return FakeAnthropic()


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as c:
        yield c


async def post_turn(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/messages?beta=true", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return message_from_sse(parse_sse(response.text))


async def test_text_step_streams_one_text_block(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    fake.script(Text("hello there"))

    message = await post_turn(client, turn())

    assert message["role"] == "assistant"
    assert message["model"] == "claude-test"
    assert message["content"] == [{"type": "text", "text": "hello there"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["output_tokens"] >= 1
    assert fake.turn_requests()[0].reply == {**message, "stop_sequence": None}


async def test_reply_mixes_text_and_tool_uses(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    fake.script(
        Reply(
            Text("let me"),
            ToolUse("mcp__echo__record", {"text": "a", "n": [1, 2]}),
            ToolUse("mcp__echo__add", {"a": 1, "b": 2}),
        )
    )

    message = await post_turn(client, turn())

    text, use1, use2 = message["content"]
    assert text == {"type": "text", "text": "let me"}
    assert use1["type"] == "tool_use" and use1["name"] == "mcp__echo__record"
    assert use1["input"] == {"text": "a", "n": [1, 2]}
    assert use2["input"] == {"a": 1, "b": 2}
    assert use1["id"].startswith("toolu_") and use1["id"] != use2["id"]
    assert message["stop_reason"] == "tool_use"


async def test_tool_use_block_starts_with_empty_input(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    fake.script(ToolUse("t", {"k": "v"}))

    response = await client.post("/v1/messages", json=turn())

    starts = [d for name, d in parse_sse(response.text) if name == "content_block_start"]
    assert starts[0]["content_block"]["input"] == {}


async def test_steps_are_consumed_in_order_then_nothing_scripted(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    fake.script(Text("one"), Text("two"))

    texts = [(await post_turn(client, turn()))["content"][0]["text"] for _ in range(3)]

    assert texts == ["one", "two", NOTHING_SCRIPTED]
    assert fake.pending_steps() == 0


async def test_side_requests_do_not_consume_the_script(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    fake.script(Text("scripted"))
    title_format = {
        "type": "json_schema",
        "schema": {"type": "object", "properties": {"title": {"type": "string"}}},
    }

    side = await post_turn(client, {**turn("probe"), "tools": []})
    titled = await post_turn(
        client, {**turn("name it"), "tools": [], "output_config": {"format": title_format}}
    )
    scripted = await post_turn(client, turn())

    assert side["content"] == [{"type": "text", "text": "ok"}]
    assert json.loads(titled["content"][0]["text"]) == {"title": "ok"}
    assert scripted["content"][0]["text"] == "scripted"
    assert [r.kind for r in fake.requests] == ["side", "side", "turn"]
    assert fake.side_requests()[0].is_side


async def test_records_last_user_message_before_trailing_system_entry(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    tool_result = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [{"type": "text", "text": "recorded: x"}],
    }
    body = turn()
    body["messages"] = [
        {"role": "user", "content": "old"},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
        {
            "role": "user",
            "content": [
                tool_result,
                {"type": "text", "text": "<system-reminder>\nnoise\n</system-reminder>\n\n"},
                {"type": "text", "text": "the prompt"},
            ],
        },
        {"role": "system", "content": "agent types…"},
    ]

    await post_turn(client, body)

    [request] = fake.turn_requests()
    assert request.path == "/v1/messages" and request.query == "beta=true"
    assert request.body == body
    assert request.prompt == "the prompt"
    assert "noise" in request.last_user_text
    assert fake.last_tool_results() == [tool_result]
    assert tool_result_text(tool_result) == "recorded: x"
    assert tool_result_text({"content": "plain"}) == "plain"


async def test_non_streaming_request_gets_a_json_message(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    fake.script(ToolUse("t", {"x": 1}))

    response = await client.post("/v1/messages", json=turn(stream=False))

    assert response.status_code == 200
    message = response.json()
    assert message["type"] == "message"
    assert message["content"][0]["input"] == {"x": 1}
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("error", "status", "error_type"),
    [
        (ApiError.unauthorized(), 401, "authentication_error"),
        (ApiError.rate_limited(retry_after_s=7), 429, "rate_limit_error"),
        (ApiError.overloaded(), 529, "overloaded_error"),
    ],
)
async def test_api_errors(
    fake: FakeAnthropic,
    client: httpx.AsyncClient,
    error: ApiError,
    status: int,
    error_type: str,
) -> None:
    fake.script(error)

    response = await client.post("/v1/messages", json=turn())

    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type
    if status == 429:
        assert response.headers["retry-after"] == "7"
        assert response.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert fake.turn_requests()[0].error == error


async def test_in_stream_error_follows_message_start(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    fake.script(ApiError(529, "overloaded_error", "busy", in_stream=True))

    response = await client.post("/v1/messages", json=turn())

    assert response.status_code == 200
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["message_start", "error"]
    assert events[1][1]["error"] == {"type": "overloaded_error", "message": "busy"}


async def test_responder_used_when_script_empty() -> None:
    seen: list[RecordedRequest] = []

    def responder(request: RecordedRequest) -> Text:
        seen.append(request)
        return Text(f"you said {request.prompt}")

    fake = FakeAnthropic(responder)
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as c:
        fake.script(Text("scripted first"))
        first = await post_turn(c, turn("a"))
        second = await post_turn(c, turn("b"))

    assert first["content"][0]["text"] == "scripted first"
    assert second["content"][0]["text"] == "you said b"
    assert [r.prompt for r in seen] == ["b"]


async def test_broken_responder_answers_500_and_is_kept() -> None:
    def responder(request: RecordedRequest) -> Text:
        raise ValueError("oops")

    fake = FakeAnthropic(responder)
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as c:
        response = await c.post("/v1/messages", json=turn())

    assert response.status_code == 500
    assert [repr(e) for e in fake.errors] == [repr(ValueError("oops"))]


async def test_probe_count_tokens_and_unknown_paths(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    assert (await client.head("/")).status_code == 200
    assert (await client.get("/")).status_code == 200
    counted = await client.post("/v1/messages/count_tokens", json=turn())
    missing = await client.post("/v1/complete", json={})

    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0
    assert missing.status_code == 404
    assert "/v1/complete" in missing.json()["error"]["message"]
    assert [r.kind for r in fake.requests] == ["probe", "probe", "count_tokens", "other"]
    assert fake.turn_requests() == []


# -- the real server in its thread ------------------------------------------------------------


def test_server_serves_on_base_url_at_once() -> None:
    with FakeAnthropic() as fake:
        fake.script(Text("over tcp"))
        # No readiness wait: the socket listens before the server thread starts.
        response = httpx.post(f"{fake.base_url}/v1/messages", json=turn(stream=False))
        assert response.json()["content"][0]["text"] == "over tcp"
        assert fake.wait_for_requests(1, timeout=1)[0].kind == "turn"


def test_wait_for_requests_times_out_with_what_it_saw() -> None:
    fake = FakeAnthropic()
    with pytest.raises(TimeoutError, match="0 of 1 turn requests"):
        fake.wait_for_requests(1, timeout=0.01)


async def test_hang_holds_the_reply_until_the_gate_opens() -> None:
    gate = Gate()
    with FakeAnthropic() as fake:
        fake.script(Text("late", hang=gate))
        async with httpx.AsyncClient(base_url=fake.base_url) as c:
            pending = asyncio.create_task(c.post("/v1/messages", json=turn(stream=False)))
            # Recorded on arrival, before the hang: the request is now held by the gate.
            await fake.wait_for_requests_async(1, timeout=10)
            assert not pending.done()

            gate.open()
            response = await asyncio.wait_for(pending, 10)

    assert response.json()["content"][0]["text"] == "late"


async def test_stop_releases_a_gate_nobody_opened() -> None:
    gate = Gate()
    fake = FakeAnthropic().start()
    fake.script(Text("never", hang=gate))
    async with httpx.AsyncClient(base_url=fake.base_url) as c:
        pending = asyncio.create_task(c.post("/v1/messages", json=turn(stream=False)))
        await fake.wait_for_requests_async(1, timeout=10)
        await asyncio.to_thread(fake.stop)
        assert gate.is_open
        # The held request is answered (or dropped by the shutdown), never left hanging.
        await asyncio.wait_for(asyncio.gather(pending, return_exceptions=True), 10)


async def test_delay_is_served_after_the_delay(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    fake.script(Text("slow", delay_s=0.2))
    loop = asyncio.get_running_loop()

    started = loop.time()
    message = await post_turn(client, turn())

    assert message["content"][0]["text"] == "slow"
    assert loop.time() - started >= 0.2
