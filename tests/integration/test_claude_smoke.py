"""The rig's proof: the real claude CLI, driven by the fake model, calls our MCP server.

Every later test that runs the CLI relies on what these check: the fake's SSE is accepted, a
tool_use reaches an MCP server and its result comes back, API errors surface as
``api_error_status`` at once (``CLAUDE_CODE_MAX_RETRIES=0``), and ``--resume`` keeps the session.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activities.claude_command import claude_env as turn_env
from tests.fakes.anthropic_api import ApiError, FakeAnthropic, Text, ToolUse, tool_result_text
from tests.fakes.echo_mcp_server import read_log
from tests.fakes.fixtures import echo_mcp_config, run_claude

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


def test_tool_use_reaches_mcp_server_and_result_returns(
    claude_bin: Path,
    claude_env: dict[str, str],
    claude_cwd: Path,
    fake_model: FakeAnthropic,
    tmp_path: Path,
) -> None:
    log = tmp_path / "echo.jsonl"
    # Let the CLI send its session-title side request too: it must not eat the script.
    del claude_env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"]
    fake_model.script(ToolUse("mcp__echo__record", {"text": "hello hive"}), Text("done"))

    run = run_claude(
        claude_bin,
        claude_env,
        "please record hello hive",
        [
            "--mcp-config",
            json.dumps(echo_mcp_config(log)),
            "--strict-mcp-config",
            "--allowedTools",
            "mcp__echo",
        ],
        cwd=claude_cwd,
        timeout=TIMEOUT,
    )

    assert run.returncode == 0, run.describe()
    assert {"name": "echo", "status": "connected"} in run.init["mcp_servers"], run.describe()
    assert "mcp__echo__record" in run.init["tools"]

    assert [c["arguments"] for c in read_log(log)] == [{"text": "hello hive"}]

    turns = fake_model.turn_requests()
    assert len(turns) == 2, [r.kind for r in fake_model.requests]
    assert turns[0].prompt == "please record hello hive"
    tool_use_id = turns[0].reply and turns[0].reply["content"][0]["id"]
    [tool_result] = fake_model.last_tool_results()
    assert tool_result["tool_use_id"] == tool_use_id
    assert tool_result_text(tool_result) == "recorded: hello hive"
    assert not tool_result.get("is_error")
    assert fake_model.pending_steps() == 0
    # Side requests (if the CLI sent any) were answered without touching the script.
    assert all(r.reply is not None for r in fake_model.side_requests())

    result = run.result
    assert result["is_error"] is False, run.describe()
    assert result["result"] == "done"
    assert result["num_turns"] == 2
    assert result["session_id"] == run.init["session_id"]
    assert turns[0].headers["x-claude-code-session-id"] == result["session_id"]


def test_a_slow_mcp_server_is_ready_for_the_first_request(
    claude_bin: Path,
    claude_env: dict[str, str],
    claude_cwd: Path,
    fake_model: FakeAnthropic,
    tmp_path: Path,
) -> None:
    """With the environment our turns use, claude -p waits for the hive bridge: a new agent's
    first turn has its tools even when the bridge takes seconds to start."""
    log = tmp_path / "echo.jsonl"
    config = echo_mcp_config(log)
    config["mcpServers"]["echo"]["env"]["ECHO_MCP_START_DELAY_S"] = "3"
    env = turn_env(claude_env, home=claude_env["HOME"])
    fake_model.script(ToolUse("mcp__echo__record", {"text": "first"}), Text("done"))

    run = run_claude(
        claude_bin,
        env,
        "record first",
        ["--mcp-config", json.dumps(config), "--strict-mcp-config", "--allowedTools", "mcp__echo"],
        cwd=claude_cwd,
        timeout=TIMEOUT,
    )

    assert run.returncode == 0, run.describe()
    assert {"name": "echo", "status": "connected"} in run.init["mcp_servers"], run.describe()
    assert [c["arguments"] for c in read_log(log)] == [{"text": "first"}]
    assert run.result["result"] == "done"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(ApiError.unauthorized(), 401, id="401"),
        pytest.param(ApiError.rate_limited(retry_after_s=30), 429, id="429"),
        pytest.param(ApiError.overloaded(), 529, id="529"),
    ],
)
def test_api_error_surfaces_at_once(
    claude_bin: Path,
    claude_env: dict[str, str],
    claude_cwd: Path,
    fake_model: FakeAnthropic,
    error: ApiError,
    status: int,
) -> None:
    fake_model.script(error)

    run = run_claude(claude_bin, claude_env, "hello", cwd=claude_cwd, timeout=TIMEOUT)

    assert run.returncode == 1, run.describe()
    result = run.result
    assert result["is_error"] is True
    assert result["api_error_status"] == status
    # API errors keep subtype "success": classify by is_error / api_error_status only.
    assert result["subtype"] == "success"
    # No retries with CLAUDE_CODE_MAX_RETRIES=0: one turn request, no api_retry events.
    assert len(fake_model.turn_requests()) == 1
    assert run.of_type("system", "api_retry") == []
    # A few seconds at most; retries would take minutes (a generous bound for slow CI).
    assert run.duration_s < 20, run.describe()


def test_text_reply_and_resume_keep_the_session(
    claude_bin: Path,
    claude_env: dict[str, str],
    claude_cwd: Path,
    fake_model: FakeAnthropic,
) -> None:
    fake_model.script(Text("first answer"), Text("second answer"))

    first = run_claude(claude_bin, claude_env, "first question", cwd=claude_cwd, timeout=TIMEOUT)
    assert first.returncode == 0, first.describe()
    assert first.result["is_error"] is False
    assert first.result["result"] == "first answer"
    session = first.session_id

    second = run_claude(
        claude_bin,
        claude_env,
        "second question",
        ["--resume", session],
        cwd=claude_cwd,
        timeout=TIMEOUT,
    )
    assert second.returncode == 0, second.describe()
    assert second.result["result"] == "second answer"
    assert second.session_id == session
    assert second.init["session_id"] == session

    # The resumed turn carries the earlier exchange, then the new prompt.
    resumed = fake_model.turn_requests()[-1]
    assert resumed.prompt == "second question"
    history = json.dumps((resumed.body or {})["messages"])
    assert "first question" in history
    assert "first answer" in history
