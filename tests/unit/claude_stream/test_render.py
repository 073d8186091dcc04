"""Rendering events of stdout recorded from the real claude CLI (record_transcripts.py)."""

from __future__ import annotations

import json

import pytest

from hyperhive.claude_stream.events import parse_line
from hyperhive.claude_stream.outcome import outcome_of_lines
from hyperhive.claude_stream.render import RenderedItem, RenderKind, render
from tests.unit.claude_stream.recorded import lines


def rendered(scenario: str) -> list[RenderedItem]:
    return [item for line in lines(scenario) for item in render(parse_line(line))]


@pytest.mark.parametrize(
    "line",
    ["", "   ", "not json", "{broken", "[1, 2]", '"a string"', "42", "null", "\x1b[31mred\x1b[0m"],
)
def test_noise_renders_as_noise(line: str) -> None:
    [item] = render(parse_line(line))
    assert item.kind == RenderKind.NOISE


def test_render_tool_call_transcript() -> None:
    items = rendered("tool_call")
    assert [i.kind for i in items] == [
        RenderKind.INIT,
        RenderKind.TEXT,
        RenderKind.TOOL_CALL,
        RenderKind.TOOL_RESULT,
        RenderKind.TEXT,
        RenderKind.RESULT,
    ]
    init, text, call, tool_result, final, result = items
    assert "model claude-opus-4-8[1m]" in init.text
    assert "MCP: echo connected" in init.text
    assert init.detail["tools_count"] == 29
    assert text.text == "I will record it."
    assert call.text == 'mcp__echo__record(text="hello hive")'
    assert call.tool_name == "mcp__echo__record"
    assert call.detail == {"arguments": {"text": "hello hive"}}
    assert tool_result.text == "recorded: hello hive"
    assert tool_result.tool_use_id == call.tool_use_id
    assert not tool_result.is_error
    assert final.text == "Recorded: hello hive."
    assert not result.is_error
    assert result.text.startswith("turn done · 2 turns · $0.2056 · tokens in ")
    assert result.text.endswith("\nRecorded: hello hive.")
    assert result.detail["cost_usd"] == outcome_of_lines(lines("tool_call")).cost_usd


def test_render_errors() -> None:
    init, error, result = rendered("api_401")
    assert init.kind == RenderKind.INIT
    assert error.kind == RenderKind.ERROR and error.is_error
    assert error.text == "Invalid API key · Fix external API key"
    assert error.detail == {"error": "authentication_failed"}
    assert result.kind == RenderKind.RESULT and result.is_error
    assert result.text.startswith("turn failed (API 401) · 1 turn · $0.0000")

    retry = [i for i in rendered("api_429_retried") if i.kind == RenderKind.RETRY]
    assert [r.text for r in retry] == ["API error 429 (rate_limit): retry 1/1 in 2.0 s"]

    [limit] = [i for i in rendered("subscription_limit") if i.kind == RenderKind.RATE_LIMIT]
    assert limit.is_error
    assert limit.text.startswith("rate limit rejected (five_hour) · resets 20")

    [denied] = [i for i in rendered("permission_denied") if i.kind == RenderKind.TOOL_RESULT]
    assert denied.is_error

    init = rendered("mcp_failed")[0]
    assert init.is_error
    assert "broken failed" in init.text

    [resume] = rendered("resume_unknown")
    assert resume.is_error
    assert "No conversation found with session ID" in resume.text


def test_render_clips_long_text_and_unknown_events() -> None:
    line = json.dumps(
        {
            "type": "user",
            "message": {
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": "y" * 50}, {"type": "image"}],
                    }
                ]
            },
        }
    )
    [item] = render(parse_line(line), max_chars=10)
    assert item.text == "yyyyyyyyyy… (48 more characters)"
    [full] = render(parse_line(line))
    assert full.text.endswith("\n[image]")
    [other] = render(parse_line('{"type": "system", "subtype": "compact_boundary"}'))
    assert (other.kind, other.text) == (RenderKind.OTHER, "system/compact_boundary")
    [thinking] = render(
        parse_line(
            json.dumps(
                {
                    "type": "assistant",
                    "message": {"content": [{"type": "thinking", "thinking": "hmm"}]},
                }
            )
        )
    )
    assert (thinking.kind, thinking.text) == (RenderKind.THINKING, "hmm")
    assert render(parse_line('{"type": "stream_event"}'))[0].kind == RenderKind.OTHER
