"""The fake model: SSE encoding, scripting and recording; then the real claude CLI against it.

Most tests go through httpx's ASGI transport (no sockets); the lifecycle tests use the real
background server, since that is where threads and event loops meet. The last section runs the
pinned claude CLI (marked ``integration``) to check that scripted built-in tools really run and
that what a test reads on ``RecordedRequest`` is what the CLI sent.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.wake_prompt import wake_prompt
from tests.fakes.anthropic_api import (
    NOTHING_SCRIPTED,
    ApiError,
    Bash,
    Edit,
    FakeAnthropic,
    Gate,
    Read,
    RecordedRequest,
    Reply,
    Step,
    Text,
    ToolUse,
    Write,
    tool_result_text,
)
from tests.fakes.echo_mcp_server import read_log
from tests.fakes.fixtures import CompletedRun, echo_mcp_config, run_claude
from tests.rig.agent_scripts import for_agent

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


# -- step functions, per-request queues, what reached the model -------------------------------


def tool_result_turn(*results: str, prompt: str = "hi") -> dict[str, Any]:
    """A turn after tool calls: the prompt, the model's tool uses, then their results."""
    ids = [f"toolu_{i}" for i in range(len(results))]
    body = turn(prompt)
    body["messages"] += [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": i, "name": "t", "input": {}} for i in ids],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": i, "content": [{"type": "text", "text": r}]}
                for i, r in zip(ids, results, strict=True)
            ],
        },
    ]
    return body


async def test_step_function_is_computed_from_its_request(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    seen: list[RecordedRequest] = []

    def next_step(request: RecordedRequest) -> Step:
        seen.append(request)
        return ToolUse("mcp__hive__request_apply_commit", {"sha": request.last_tool_result})

    fake.script(Bash("git rev-parse HEAD"), next_step, Text("done"))
    assert fake.pending_steps() == 3

    first = await post_turn(client, turn("apply it"))
    second = await post_turn(client, tool_result_turn("abc123"))
    third = await post_turn(client, tool_result_turn("requested"))

    assert first["content"][0]["input"] == {"command": "git rev-parse HEAD"}
    assert second["content"][0]["input"] == {"sha": "abc123"}
    assert third["content"] == [{"type": "text", "text": "done"}]
    assert [r.index for r in seen] == [1]
    assert fake.pending_steps() == 0


async def test_step_function_that_raises_answers_500_and_is_kept(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    def broken(request: RecordedRequest) -> Step:
        raise KeyError("no such result")

    def not_a_step(request: RecordedRequest) -> Step:
        return None  # type: ignore[return-value]

    fake.script(broken, not_a_step, Text("after"))

    failed = await client.post("/v1/messages", json=turn())
    wrong = await client.post("/v1/messages", json=turn())
    after = await post_turn(client, turn())

    assert failed.status_code == 500 and wrong.status_code == 500
    assert failed.json()["error"]["type"] == "api_error"
    assert "no such result" in failed.json()["error"]["message"]
    assert [type(e) for e in fake.errors] == [KeyError, TypeError]
    # Each failed step was used up; the script goes on.
    assert after["content"][0]["text"] == "after"


async def test_script_when_queues_come_before_the_global_fifo(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    fake.responder = lambda request: Text(f"responder: {request.prompt}")
    fake.script(Text("global 1"), Text("global 2"))
    fake.script_when(lambda r: "alpha" in r.prompt, Text("alpha 1"), Text("alpha 2"))
    fake.script_when(lambda r: "beta" in r.prompt, Text("beta 1"))
    # Registered later and also matching alpha: only used once the first alpha queue is empty.
    fake.script_when(lambda r: "alpha" in r.prompt, Text("alpha 3"))
    assert fake.pending_steps() == 6

    prompts = ["beta", "alpha", "other", "beta", "alpha", "alpha", "alpha", "other", "other"]
    texts = [(await post_turn(client, turn(p)))["content"][0]["text"] for p in prompts]

    assert texts == [
        "beta 1",
        "alpha 1",
        "global 1",
        "global 2",  # beta's queue is used up: the global FIFO serves it
        "alpha 2",
        "alpha 3",
        "responder: alpha",
        "responder: other",
        "responder: other",
    ]
    assert fake.pending_steps() == 0


async def test_script_when_ignores_side_requests(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    asked: list[str] = []

    def predicate(request: RecordedRequest) -> bool:
        asked.append(request.kind)
        return True

    fake.script_when(predicate, Text("for the turn"))

    side = await post_turn(client, {**turn("title?"), "tools": []})
    scripted = await post_turn(client, turn())

    assert side["content"][0]["text"] == "ok"
    assert scripted["content"][0]["text"] == "for the turn"
    assert asked == ["turn"]


async def test_raising_predicate_answers_500_and_is_kept(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    fake.script_when(lambda r: 1 / 0 > 0, Text("never"))

    response = await client.post("/v1/messages", json=turn())

    assert response.status_code == 500
    assert [type(e) for e in fake.errors] == [ZeroDivisionError]


async def test_for_agent_scripts_each_agent_through_its_tool_calls(
    fake: FakeAnthropic, client: httpx.AsyncClient
) -> None:
    fake.script_when(for_agent("alice"), ToolUse("mcp__hive__recv"), Text("alice done"))
    fake.script_when(for_agent("bob"), Text("bob done"))
    fake.script(Text("anyone"))
    alice = wake_prompt("alice", "bob", "You are bob, says bob", 0)
    bob = wake_prompt("bob", "operator", "hi", 0)

    texts = []
    for body in [
        {**turn(alice), "tools": []},  # alice's side request: consumes nothing
        turn(bob),
        turn(alice),
        tool_result_turn("no message", prompt=alice),  # alice's tool round-trip
        turn("not a wake prompt"),
    ]:
        message = await post_turn(client, body)
        texts.append(message["content"][0].get("text") or message["content"][0]["name"])

    assert texts == ["ok", "bob done", "mcp__hive__recv", "alice done", "anyone"]
    assert fake.pending_steps() == 0


async def test_request_accessors(fake: FakeAnthropic, client: httpx.AsyncClient) -> None:
    blocks_system = [
        {"type": "text", "text": "billing header"},
        {"type": "text", "text": "You are Claude Code", "cache_control": {"type": "ephemeral"}},
    ]
    body = tool_result_turn("first out", "second out", prompt="the prompt")
    body["messages"][0]["content"] = [
        {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
        {"type": "text", "text": "the prompt"},
    ]
    body["messages"].append({"role": "system", "content": "not user text"})
    tools = [{"name": "Bash", "input_schema": {}}, {"name": "mcp__echo__record"}]

    await post_turn(client, {**body, "system": blocks_system, "tools": tools})
    await post_turn(client, {**turn("plain"), "system": "one string", "model": "m2"})
    await post_turn(client, {**turn("side"), "tools": []})

    listed, plain, side = fake.requests
    assert listed.system_text == "billing header\nYou are Claude Code"
    assert listed.model == "claude-test"
    assert listed.tool_names == ["Bash", "mcp__echo__record"]
    assert listed.tool_result_texts == ["first out", "second out"]
    assert listed.last_tool_result == "second out"
    assert listed.messages_text == "<system-reminder>ctx</system-reminder>\nthe prompt"
    assert listed.prompt == ""  # the last user message holds only tool results
    assert plain.system_text == "one string"
    assert plain.model == "m2"
    assert plain.tool_result_texts == [] and plain.last_tool_result is None
    assert plain.messages_text == "plain" == plain.prompt
    assert side.tool_names == [] and side.system_text == ""


def test_builtin_tool_helpers_are_tool_uses_with_claude_shapes() -> None:
    assert Bash("ls") == Bash("ls")
    assert (Bash("ls").name, Bash("ls").input) == ("Bash", {"command": "ls"})
    assert Bash("ls", "List files", timeout_ms=5000, run_in_background=True).input == {
        "command": "ls",
        "description": "List files",
        "timeout": 5000,
        "run_in_background": True,
    }
    assert Read(Path("/w/f"), offset=3, limit=2).input == {
        "file_path": "/w/f",
        "offset": 3,
        "limit": 2,
    }
    assert Write("/w/f", "text").input == {"file_path": "/w/f", "content": "text"}
    assert Edit("/w/f", "a", "b").input == {
        "file_path": "/w/f",
        "old_string": "a",
        "new_string": "b",
    }
    assert Edit("/w/f", "a", "b", replace_all=True).input["replace_all"] is True
    gate = Gate()
    write = Write("/w/f", "x", delay_s=1.5, hang=gate)
    assert isinstance(write, ToolUse) and (write.delay_s, write.hang) == (1.5, gate)


# -- the real claude CLI against the fake -----------------------------------------------------

CLI_TIMEOUT = 60.0
# bypassPermissions lets Bash/Write/Edit run under -p (IS_SANDBOX=1 is in claude_env, for root).
RUN_TOOLS = ("--permission-mode", "bypassPermissions")


def run_tools(
    claude_bin: Path, env: dict[str, str], cwd: Path, prompt: str = "go", *args: str
) -> CompletedRun:
    run = run_claude(claude_bin, env, prompt, [*RUN_TOOLS, *args], cwd=cwd, timeout=CLI_TIMEOUT)
    assert run.returncode == 0, run.describe()
    return run


@pytest.mark.integration
def test_cli_writes_runs_and_feeds_a_tool_output_into_the_next_call(
    claude_bin: Path, claude_env: dict[str, str], claude_cwd: Path, fake_model: FakeAnthropic
) -> None:
    script = claude_cwd / "hello.py"
    out = claude_cwd / "out.txt"
    fake_model.script(
        Write(script, "print('hello from', 6 * 7)\n"),
        Bash(f"{shlex.quote(sys.executable)} hello.py", "Run hello.py"),
        lambda request: Write(out, f"seen: {request.last_tool_result}\n"),
        Text("done"),
    )

    run = run_tools(claude_bin, claude_env, claude_cwd)

    assert run.result["result"] == "done", run.describe()
    assert script.read_text() == "print('hello from', 6 * 7)\n"
    assert out.read_text() == "seen: hello from 42\n"
    wrote, ran, wrote_out, finished = fake_model.turn_requests()
    assert wrote.prompt == "go" and wrote.last_tool_result is None
    assert (ran.last_tool_result or "").startswith(f"File created successfully at: {script}")
    assert ran.tool_results[0]["tool_use_id"] == (wrote.reply or {})["content"][0]["id"]
    assert wrote_out.tool_result_texts == ["hello from 42"]
    assert wrote_out.tool_results[0]["is_error"] is False
    assert (finished.last_tool_result or "").startswith(f"File created successfully at: {out}")
    assert fake_model.pending_steps() == 0


@pytest.mark.integration
def test_cli_edit_needs_a_read_first(
    claude_bin: Path, claude_env: dict[str, str], claude_cwd: Path, fake_model: FakeAnthropic
) -> None:
    notes = claude_cwd / "notes.txt"
    notes.write_text("alpha\nbeta\n")
    fake_model.script(
        Edit(notes, "beta", "gamma"),
        Write(notes, "overwritten\n"),
        Read(notes),
        Edit(notes, "beta", "gamma"),
        Text("done"),
    )

    run_tools(claude_bin, claude_env, claude_cwd)

    assert notes.read_text() == "alpha\ngamma\n"  # the unread Write was refused too
    _, edit_refused, write_refused, read, edited = fake_model.turn_requests()
    for refused in (edit_refused, write_refused):
        assert refused.last_tool_result == (
            "<tool_use_error>File has not been read yet. "
            "Read it first before writing to it.</tool_use_error>"
        )
        assert refused.tool_results[0]["is_error"] is True
    assert read.last_tool_result is not None
    assert read.last_tool_result.startswith("1\talpha\n2\tbeta")
    assert edited.last_tool_result is not None
    assert edited.last_tool_result.startswith(f"The file {notes} has been updated successfully.")
    assert not edited.tool_results[0].get("is_error")


@pytest.mark.integration
def test_cli_flags_and_tools_reach_the_model(
    claude_bin: Path,
    claude_env: dict[str, str],
    claude_cwd: Path,
    fake_model: FakeAnthropic,
    tmp_path: Path,
) -> None:
    fake_model.script(ToolUse("mcp__echo__record", {"text": "via mcp"}), Text("done"))
    mcp_config = json.dumps(echo_mcp_config(tmp_path / "echo.jsonl"))

    # Wait for the echo server before the first request (as activities.claude_command does):
    # by default -p connects it in the background, and a Python start-up on a busy machine
    # misses the first request.
    env = {**claude_env, "MCP_CONNECTION_NONBLOCKING": "0", "MCP_CONNECT_TIMEOUT_MS": "60000"}
    run_tools(
        claude_bin,
        env,
        claude_cwd,
        "check the flags",
        "--append-system-prompt",
        "MARKER-7f3a",
        "--model",
        "some-model",
        "--mcp-config",
        mcp_config,
        "--strict-mcp-config",
    )

    first, second = fake_model.turn_requests()
    assert "MARKER-7f3a" in first.system_text
    assert "MARKER-7f3a" not in first.messages_text
    assert first.model == "some-model"
    assert {"Bash", "Read", "Write", "Edit", "mcp__echo__record"} <= set(first.tool_names)
    assert "check the flags" in first.messages_text
    assert "check the flags" in second.messages_text  # the whole conversation is sent again
    assert second.tool_result_texts == ["recorded: via mcp"]
    assert [c["arguments"] for c in read_log(tmp_path / "echo.jsonl")] == [{"text": "via mcp"}]

    # The helpers' inputs, every option set, fit the schemas the CLI offers.
    schemas = {t["name"]: t["input_schema"] for t in (first.body or {})["tools"]}
    helpers: list[ToolUse] = [
        Bash("ls", "List files", timeout_ms=1000, run_in_background=True),
        Read("/w/f", offset=1, limit=2),
        Write("/w/f", "x"),
        Edit("/w/f", "a", "b", replace_all=True),
    ]
    json_types: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "number": (int, float),
        "integer": int,
        "boolean": bool,
    }
    for helper in helpers:
        schema = schemas[helper.name]
        properties = schema["properties"]
        assert set(schema["required"]) <= set(helper.input) <= set(properties), helper
        for key, value in helper.input.items():
            assert isinstance(value, json_types[properties[key]["type"]]), (helper, key)


@pytest.mark.integration
def test_cli_script_when_queues_are_consumed_independently(
    claude_bin: Path, claude_env: dict[str, str], tmp_path: Path, fake_model: FakeAnthropic
) -> None:
    fake_model.script(Text("global, unused"))
    fake_model.script_when(
        lambda r: "MARK_A" in r.messages_text,
        Bash("echo a-one", "Say a-one"),
        lambda r: Text(f"A saw {r.last_tool_result}"),
    )
    fake_model.script_when(lambda r: "MARK_B" in r.messages_text, Text("B done"))
    cwds = {name: tmp_path / name for name in ("a", "b")}
    for cwd in cwds.values():
        cwd.mkdir()

    with ThreadPoolExecutor(2) as pool:
        run_a = pool.submit(run_tools, claude_bin, claude_env, cwds["a"], "task MARK_A")
        run_b = pool.submit(run_tools, claude_bin, claude_env, cwds["b"], "task MARK_B")
        result_a, result_b = run_a.result().result, run_b.result().result

    assert result_a["result"] == "A saw a-one"
    assert result_b["result"] == "B done"
    assert fake_model.pending_steps() == 1  # the global FIFO was never needed
    assert len(fake_model.turn_requests()) == 3
