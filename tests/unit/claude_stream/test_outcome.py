"""Turn outcomes of stdout recorded from the real claude CLI (record_transcripts.py)."""

from __future__ import annotations

import json

import pytest

from hyperhive.claude_stream.events import parse_line
from hyperhive.claude_stream.outcome import (
    TurnAccumulator,
    TurnOutcome,
    init_server_status,
    outcome_of_lines,
    retry_after_from_text,
)
from hyperhive.domain import TurnErrorClass
from tests.unit.claude_stream.record_transcripts import SCENARIOS, session_id_of
from tests.unit.claude_stream.recorded import INDEX, TRANSCRIPTS, lines


def outcome(scenario: str) -> TurnOutcome:
    return outcome_of_lines(lines(scenario))


EXPECTED_CLASS = {
    "tool_call": TurnErrorClass.NONE,
    "text": TurnErrorClass.NONE,
    "mcp_failed": TurnErrorClass.NONE,
    "permission_denied": TurnErrorClass.NONE,
    "api_401": TurnErrorClass.NEEDS_LOGIN,
    "api_403": TurnErrorClass.NEEDS_LOGIN,
    "not_logged_in": TurnErrorClass.NEEDS_LOGIN,
    "api_429": TurnErrorClass.RATE_LIMITED,
    "api_429_retried": TurnErrorClass.RATE_LIMITED,
    "subscription_limit": TurnErrorClass.RATE_LIMITED,
    "api_529": TurnErrorClass.OVERLOADED,
    "api_529_in_stream": TurnErrorClass.OVERLOADED,
    "api_500": TurnErrorClass.API_ERROR,
    "request_timeout": TurnErrorClass.API_ERROR,
    "max_turns": TurnErrorClass.MAX_TURNS,
    "resume_unknown": TurnErrorClass.CRASHED,
    "killed": TurnErrorClass.CRASHED,
}


def test_every_scenario_is_recorded_and_expected() -> None:
    assert set(EXPECTED_CLASS) == set(SCENARIOS)
    for scenario in SCENARIOS:
        assert (TRANSCRIPTS / f"{scenario}.jsonl").is_file(), scenario
        assert scenario in INDEX, scenario


@pytest.mark.parametrize("scenario", sorted(EXPECTED_CLASS))
def test_classification(scenario: str) -> None:
    result = outcome(scenario)
    assert result.error_class == EXPECTED_CLASS[scenario], result
    # The session is the one asked for (--session-id / --resume), killed or not.
    assert result.session_id == session_id_of(scenario)
    # The CLI's exit code agrees: 0 exactly when the turn succeeded.
    assert (INDEX[scenario]["returncode"] == 0) == (result.error_class == TurnErrorClass.NONE)
    # Recorded stdout is pure JSON lines.
    assert result.noise == []
    if scenario != "killed":
        assert result.got_result
        assert result.is_error == (result.error_class != TurnErrorClass.NONE)


@pytest.mark.parametrize(
    ("scenario", "status"),
    [
        ("api_401", 401),
        ("api_403", 403),
        ("api_429", 429),
        ("api_429_retried", 429),
        ("subscription_limit", 429),
        ("api_529", 529),
        ("api_529_in_stream", 529),
        ("api_500", 500),
        ("not_logged_in", None),
        ("request_timeout", None),
        ("max_turns", None),
        ("resume_unknown", None),
    ],
)
def test_api_error_status(scenario: str, status: int | None) -> None:
    result = outcome(scenario)
    assert result.api_error_status == status
    # API errors keep subtype "success": that is why classification ignores it.
    if status is not None:
        assert result.subtype == "success"


def test_tool_call_success() -> None:
    result = outcome("tool_call")
    assert result.result_text == "Recorded: hello hive."
    assert result.tool_calls == ["mcp__echo__record"]
    assert result.mcp_servers == {"echo": "connected"}
    assert result.mcp_failed == []
    assert result.num_turns == 2
    assert result.cost_usd > 0
    assert result.input_tokens > 0
    assert result.output_tokens > 0
    assert result.cache_read_input_tokens == 0
    assert result.cache_creation_input_tokens == 0
    assert result.duration_ms is not None and result.duration_ms > 0
    assert result.model == "claude-opus-4-8[1m]"
    assert result.permission_denials == []
    assert result.retry_after_s is None
    assert not result.session_missing


def test_outcome_takes_usage_and_cost_from_the_result_event() -> None:
    [raw] = [json.loads(line) for line in lines("tool_call") if '"type":"result"' in line]
    result = outcome("tool_call")
    assert result.cost_usd == raw["total_cost_usd"]
    assert result.input_tokens == raw["usage"]["input_tokens"]
    assert result.output_tokens == raw["usage"]["output_tokens"]
    assert result.duration_ms == raw["duration_ms"]


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        ("tool_call", ""),
        ("api_401", "API 401: Invalid API key · Fix external API key"),
        ("api_429", "API Error: Request rejected (429) · Number of request tokens"),
        ("not_logged_in", "Not logged in · Please run /login"),
        ("max_turns", "Reached maximum number of turns (1)"),
        ("request_timeout", "Request timed out"),
        ("resume_unknown", "No conversation found with session ID: "),
        ("killed", "claude ended without a result (killed or crashed)"),
    ],
)
def test_error_message(scenario: str, message: str) -> None:
    result = outcome(scenario)
    assert result.error_message.startswith(message)
    assert bool(result.error_message) == (result.error_class != TurnErrorClass.NONE)


def test_text_success() -> None:
    result = outcome("text")
    assert result.result_text == "Hello from the fake model."
    assert result.tool_calls == []
    assert result.num_turns == 1


def test_failed_mcp_server_is_reported_and_the_turn_goes_on() -> None:
    result = outcome("mcp_failed")
    assert result.mcp_servers == {"echo": "connected", "broken": "failed"}
    assert result.mcp_failed == ["broken"]
    assert result.error_class == TurnErrorClass.NONE


def test_pending_mcp_server_is_not_a_failure() -> None:
    # "Not logged in" ends before the servers are up: init lists them as "pending".
    result = outcome("not_logged_in")
    assert result.mcp_servers == {"echo": "pending"}
    assert result.mcp_failed == []


def test_the_status_of_one_server_is_read_off_init_alone() -> None:
    """What the turn checks before the model acts: is the hive server connected?"""
    [init, *rest] = [parse_line(line) for line in lines("mcp_failed")]
    assert init_server_status(init, "echo") == "connected"
    assert init_server_status(init, "broken") == "failed"
    assert init_server_status(init, "hive") == "missing"
    assert all(init_server_status(event, "echo") is None for event in rest)
    pending = parse_line(lines("not_logged_in")[0])
    assert init_server_status(pending, "echo") == "pending"


def test_permission_denials() -> None:
    result = outcome("permission_denied")
    [denial] = result.permission_denials
    assert denial.tool_name == "Bash"
    assert denial.tool_input == {"command": "touch created-by-agent.txt"}
    assert denial.tool_use_id
    assert result.tool_calls == ["Bash"]


def test_needs_login_details() -> None:
    assert outcome("api_401").assistant_error == "authentication_failed"
    not_logged_in = outcome("not_logged_in")
    assert not_logged_in.assistant_error == "authentication_failed"
    assert not_logged_in.result_text.startswith("Not logged in")
    assert not_logged_in.cost_usd == 0


def test_rate_limit_hints() -> None:
    # Retries off (our setting): nothing in the stream says how long to wait.
    plain = outcome("api_429")
    assert plain.retry_after_s is None
    assert plain.rate_limit_resets_at is None
    assert plain.wait_s(now=0.0) is None
    # One retry allowed: the api_retry event carries the retry-after header (2 s) as its delay.
    retried = outcome("api_429_retried")
    assert retried.retry_after_s == 2.0
    assert retried.wait_s(now=0.0) == 2.0
    # Subscription auth: rate_limit_event gives the reset time, which wins.
    limited = outcome("subscription_limit")
    assert limited.rate_limit_resets_at is not None
    assert limited.wait_s(now=limited.rate_limit_resets_at - 90) == 90
    assert limited.wait_s(now=limited.rate_limit_resets_at + 5) == 0
    assert limited.retry_after_s is None  # no clock given
    reset = limited.rate_limit_resets_at
    assert outcome_of_lines(lines("subscription_limit"), now=reset - 60).retry_after_s == 60
    assert outcome_of_lines(lines("api_429_retried"), now=0.0).retry_after_s == 2.0
    # A success carries no hint.
    assert outcome_of_lines(lines("text"), now=0.0).retry_after_s is None
    assert limited.model == "claude-sonnet-5"  # the subscription default differs from the API's


def test_in_stream_overload_is_retried_by_the_cli_and_billed() -> None:
    assert INDEX["api_529_in_stream"]["turn_requests"] == 4
    assert outcome("api_529_in_stream").cost_usd > 0


def test_request_timeout() -> None:
    result = outcome("request_timeout")
    assert result.result_text == "Request timed out"
    assert result.assistant_error == "server_error"


def test_max_turns() -> None:
    result = outcome("max_turns")
    assert result.subtype == "error_max_turns"
    assert result.terminal_reason == "max_turns"
    assert result.errors == ["Reached maximum number of turns (1)"]
    assert result.result_text == "Reached maximum number of turns (1)"
    assert result.tool_calls == ["mcp__echo__record"]
    assert result.cost_usd > 0


def test_resume_of_unknown_session_is_marked() -> None:
    result = outcome("resume_unknown")
    assert result.session_missing
    assert result.subtype == "error_during_execution"
    assert result.num_turns == 0
    assert "No conversation found with session ID" in result.result_text
    # Only a result line: no init, so no model and no MCP servers.
    assert len(lines("resume_unknown")) == 1
    assert result.model is None
    # And nothing was written: the next turn starts the session with --session-id.
    assert INDEX["resume_unknown"]["session_files"] == []
    assert not outcome("max_turns").session_missing


def test_killed_process() -> None:
    result = outcome("killed")
    assert not result.got_result
    assert result.error_class == TurnErrorClass.CRASHED
    assert result.tool_calls == ["mcp__echo__record"]
    assert result.model is not None
    # A turn killed mid-request leaves its session file: the retry must --resume.
    assert len(INDEX["killed"]["session_files"]) == 1


def test_truncated_mid_line_is_crashed_with_noise() -> None:
    whole = lines("tool_call")
    cut = whole[-1][: len(whole[-1]) // 2]
    result = outcome_of_lines([*whole[:-1], cut])
    assert result.error_class == TurnErrorClass.CRASHED
    assert not result.got_result
    assert result.tool_calls == ["mcp__echo__record"]
    assert result.noise == [cut[:500]]


def test_outcome_at_any_point() -> None:
    acc = TurnAccumulator()
    assert acc.outcome().error_class == TurnErrorClass.CRASHED
    assert acc.outcome().session_id is None
    for line in lines("tool_call")[:-1]:
        acc.feed_line(line)
    assert acc.outcome().error_class == TurnErrorClass.CRASHED
    acc.feed_line(lines("tool_call")[-1])
    assert acc.outcome().error_class == TurnErrorClass.NONE


def test_outcome_serializes() -> None:
    result = outcome("permission_denied")
    assert TurnOutcome.model_validate_json(result.model_dump_json()) == result


# -- classification edge cases not recorded ---------------------------------------------------


def result_line(**fields: object) -> str:
    base: dict[str, object] = {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "api_error_status": None,
        "result": "x",
        "session_id": "s",
    }
    return json.dumps({**base, **fields})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"is_error": False, "subtype": "error_max_turns"}, TurnErrorClass.NONE),
        ({"api_error_status": 400}, TurnErrorClass.API_ERROR),
        ({"api_error_status": 503}, TurnErrorClass.API_ERROR),
        ({"api_error_status": 529, "subtype": "error_max_turns"}, TurnErrorClass.OVERLOADED),
        ({"result": "API Error: overloaded_error"}, TurnErrorClass.OVERLOADED),
        ({"result": "Not logged in · Please run /login"}, TurnErrorClass.NEEDS_LOGIN),
        ({"result": "Request timed out"}, TurnErrorClass.API_ERROR),
        ({"subtype": "error_max_turns", "result": None}, TurnErrorClass.MAX_TURNS),
        ({"api_error_status": "weird"}, TurnErrorClass.API_ERROR),
    ],
)
def test_classification_edges(fields: dict[str, object], expected: TurnErrorClass) -> None:
    assert outcome_of_lines([result_line(**fields)]).error_class == expected


def test_synthetic_assistant_error_classifies_null_status() -> None:
    assistant = json.dumps(
        {
            "type": "assistant",
            "error": "rate_limit",
            "message": {"content": [{"type": "text", "text": "limited"}]},
        }
    )
    result = outcome_of_lines([assistant, result_line(result="limited")])
    assert result.error_class == TurnErrorClass.RATE_LIMITED


def test_retry_after_from_text() -> None:
    assert retry_after_from_text("Please retry after 30 seconds") == 30
    assert retry_after_from_text("retry-after: 12") == 12
    assert retry_after_from_text("Retry after 1500ms") == 1.5
    assert retry_after_from_text("try again in a moment") is None
    assert retry_after_from_text("") is None
    result = outcome_of_lines([result_line(api_error_status=429, result="retry after 7s")])
    assert result.retry_after_s == 7


def test_noise_is_kept_clipped_and_bounded() -> None:
    acc = TurnAccumulator()
    acc.feed_line("")  # blank lines are not kept
    for i in range(15):
        acc.feed_line(f"stray {i} " + "x" * 1000)
    noise = acc.outcome().noise
    assert len(noise) == 10
    assert noise[0].startswith("stray 5 ")
    assert all(len(n) == 500 for n in noise)
