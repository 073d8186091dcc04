"""Parsing claude's stdout lines into typed events, recorded (record_transcripts.py) and odd."""

from __future__ import annotations

import json

import pytest

from hyperhive.claude_stream.events import (
    ApiRetryEvent,
    AssistantEvent,
    InitEvent,
    NoiseEvent,
    OtherBlock,
    OtherEvent,
    RateLimitEvent,
    ResultEvent,
    StreamEvent,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    UserEvent,
    parse_line,
    parse_object,
)
from hyperhive.claude_stream.outcome import outcome_of_lines
from hyperhive.claude_stream.render import render
from tests.unit.claude_stream.record_transcripts import SCENARIOS, session_id_of
from tests.unit.claude_stream.recorded import lines


@pytest.mark.parametrize(
    "line",
    ["", "   ", "not json", "{broken", "[1, 2]", '"a string"', "42", "null", "\x1b[31mred\x1b[0m"],
)
def test_noise_never_raises(line: str) -> None:
    event = parse_line(line)
    assert isinstance(event, NoiseEvent)
    assert event.type == "noise"
    assert event.text == line
    assert event.raw == {}


def test_parse_line_fields() -> None:
    event = parse_line(lines("tool_call")[0])
    assert isinstance(event, InitEvent)
    assert (event.type, event.subtype, event.session_id, event.raw) == (
        "system",
        "init",
        session_id_of("tool_call"),
        json.loads(lines("tool_call")[0]),
    )
    odd = parse_line('{"type": 5, "subtype": ["x"], "session_id": 7}\n')
    assert (odd.type, odd.subtype, odd.session_id) == ("unknown", None, None)
    assert not isinstance(odd, NoiseEvent)


EVENT_CLASSES: dict[tuple[str, str | None], type[StreamEvent]] = {
    ("system", "init"): InitEvent,
    ("system", "api_retry"): ApiRetryEvent,
    ("assistant", None): AssistantEvent,
    ("user", None): UserEvent,
    ("rate_limit_event", None): RateLimitEvent,
    ("result", "success"): ResultEvent,
    ("result", "error_max_turns"): ResultEvent,
    ("result", "error_during_execution"): ResultEvent,
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_recorded_line_is_a_modelled_event(scenario: str) -> None:
    for line in lines(scenario):
        event = parse_line(line)
        raw = json.loads(line)
        assert isinstance(event, EVENT_CLASSES[raw["type"], raw.get("subtype")]), line
        assert (event.type, event.subtype) == (raw["type"], raw.get("subtype"))
        assert event.session_id == session_id_of(scenario)
        assert event.raw == raw


def test_init_fields() -> None:
    init = parse_line(lines("mcp_failed")[0])
    assert isinstance(init, InitEvent)
    assert init.model == "claude-opus-4-8[1m]"
    assert init.mcp_servers == {"echo": "connected", "broken": "failed"}
    assert init.failed_servers == ["broken"]
    assert init.tool_count == len(json.loads(lines("mcp_failed")[0])["tools"])
    assert init.permission_mode == "default"
    assert init.claude_code_version == "2.1.197"
    assert init.cwd == "/tmp/hive-transcripts/work"


def test_message_blocks() -> None:
    events = [parse_line(line) for line in lines("tool_call")]
    assert [e.content for e in events if isinstance(e, AssistantEvent | UserEvent)] == [
        (TextBlock("I will record it."),),
        (ToolUseBlock("mcp__echo__record", "toolu_fake000001", {"text": "hello hive"}),),
        (ToolResultBlock("toolu_fake000001", False, "recorded: hello hive"),),
        (TextBlock("Recorded: hello hive."),),
    ]
    odd = parse_object(
        {
            "type": "assistant",
            "message": {
                "content": [
                    {"type": "thinking", "thinking": "hmm"},
                    {"type": "redacted_thinking", "data": "x"},
                    {"type": "tool_use"},
                    {"no": "type"},
                    "not a block",
                ]
            },
        }
    )
    assert isinstance(odd, AssistantEvent)
    assert odd.content == (
        ThinkingBlock("hmm"),
        OtherBlock("redacted_thinking"),
        ToolUseBlock("?", None, {}),
        OtherBlock(None),
    )
    plain = parse_object({"type": "user", "message": {"content": "just text"}})
    assert isinstance(plain, UserEvent)
    assert plain.content == (TextBlock("just text"),)


def test_result_fields() -> None:
    result = parse_line(lines("max_turns")[-1])
    assert isinstance(result, ResultEvent)
    assert result.subtype == "error_max_turns"
    assert result.is_error
    assert result.api_error_status is None
    assert result.result is None
    assert result.errors == ("Reached maximum number of turns (1)",)
    assert result.text == "Reached maximum number of turns (1)"
    assert result.terminal_reason == "max_turns"
    assert result.num_turns == 2
    assert result.total_cost_usd is not None and result.total_cost_usd > 0
    assert result.usage.input_tokens > 0


def test_fields_of_another_type_read_as_absent() -> None:
    """Nothing claude printed so far, but one odd field must not cost the turn its outcome."""
    odd = [
        '{"type": "system", "subtype": "init", "mcp_servers": 5, "tools": "x", "model": 3}',
        '{"type": "system", "subtype": "api_retry", "attempt": "1", "retry_delay_ms": NaN}',
        '{"type": "assistant", "message": "x", "error": 7}',
        '{"type": "assistant", "message": {"content": 5}, "error": ""}',
        '{"type": "user", "message": {"content": [1, {"type": "tool_result", "content": {}}]}}',
        '{"type": "rate_limit_event", "rate_limit_info": [], "session_id": ["s"]}',
        '{"type": "result", "errors": "abc", "usage": [], "num_turns": "3", "is_error": 1,'
        ' "duration_ms": Infinity, "total_cost_usd": true, "permission_denials": {"a": 1},'
        ' "api_error_status": 1e400}',
    ]
    events = [parse_line(line) for line in odd]
    init, retry, assistant, empty, user, limit, result = events
    assert init == InitEvent(raw=json.loads(odd[0]))
    assert retry == ApiRetryEvent(raw=retry.raw)
    assert assistant == AssistantEvent(raw=json.loads(odd[2]))
    assert empty == AssistantEvent(raw=json.loads(odd[3]))
    assert user == UserEvent(raw=json.loads(odd[4]), content=(ToolResultBlock(None, False, ""),))
    assert limit == RateLimitEvent(raw=json.loads(odd[5]))
    assert result == ResultEvent(raw=result.raw, usage=Usage())
    for event in events:
        render(event)
    assert outcome_of_lines(odd).num_turns == 0


def test_a_stored_payload_is_parsed_by_its_kind_when_it_has_no_type() -> None:
    # The store keeps a noise line as kind "noise" with an empty payload.
    assert parse_object({}, default_type="noise") == NoiseEvent()
    assert parse_object({}) == OtherEvent(type="unknown")
    assert isinstance(parse_object({"subtype": "init"}, default_type="system"), InitEvent)
    assert isinstance(parse_object({"type": "result"}, default_type="noise"), ResultEvent)
