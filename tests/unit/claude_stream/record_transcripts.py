"""Record claude's stream-json stdout for the tests of hyperhive.claude_stream, from the real CLI.

    .venv/bin/python -m tests.unit.claude_stream.record_transcripts [scenario ...]

Each scenario runs the pinned claude CLI (``$HIVE_TEST_CLAUDE_BIN`` or the repo's
``.cache/npm/node_modules/.bin/claude``) against the fake model API, with the argv and environment
hive's turns build (``activities.claude_command``) and a wake prompt on stdin, and writes its
stdout to ``transcripts/<scenario>.jsonl``; ``transcripts/index.json`` keeps each run's exit code,
duration and stderr. Temporary paths and the fake's port are replaced by fixed ones so re-recording
changes only what the CLI changed. Re-record when the CLI pin moves.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities.claude_command import claude_argv, claude_env, project_dir_name
from activities.wake_prompt import wake_prompt
from tests.fakes.anthropic_api import ApiError, FakeAnthropic, Gate, Reply, Text, ToolUse
from tests.fakes.fixtures import DEFAULT_CLAUDE_BIN, clean_claude_env, echo_mcp_config

OUT = Path(__file__).parent / "transcripts"
# What temporary paths and the fake's address become in the saved transcripts.
ROOT_PLACEHOLDER = "/tmp/hive-transcripts"
FAKE_ADDRESS = "127.0.0.1:8765"
TIMEOUT_S = 90.0


@dataclass
class Run:
    """What a scenario decides: script, argv options, environment changes, prompt."""

    steps: Sequence[Any] = ()
    prompt: str = field(default_factory=lambda: wake_prompt("alice", "bob", "Please say hello.", 0))
    resume: bool = False
    allowed_tools: Sequence[str] = ("mcp__echo",)
    max_turns: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    drop_env: Sequence[str] = ()
    broken_mcp: bool = False
    # Kill the process group once this many turn requests reached the fake (the last one hangs).
    kill_after_requests: int | None = None


def _hang() -> Gate:
    return Gate()  # never opened: the fake opens every gate when it stops


SCENARIOS: dict[str, Callable[[], Run]] = {
    # A text block and a call to the echo MCP server in one message, then the final text.
    "tool_call": lambda: Run(
        steps=[
            Reply(Text("I will record it."), ToolUse("mcp__echo__record", {"text": "hello hive"})),
            Text("Recorded: hello hive."),
        ],
        prompt=wake_prompt("alice", "bob", "Please record 'hello hive'.", 2),
    ),
    "text": lambda: Run(steps=[Text("Hello from the fake model.")]),
    # One MCP server that cannot start: init says "failed", the turn goes on.
    "mcp_failed": lambda: Run(steps=[Text("Working without it.")], broken_mcp=True),
    # Bash outside --allowedTools under permission mode "default": denied, not an error.
    "permission_denied": lambda: Run(
        steps=[ToolUse("Bash", {"command": "touch created-by-agent.txt"}), Text("Not allowed.")]
    ),
    "api_401": lambda: Run(steps=[ApiError.unauthorized()]),
    "api_403": lambda: Run(steps=[ApiError(403, "permission_error", "forbidden")]),
    "api_429": lambda: Run(steps=[ApiError.rate_limited(retry_after_s=30)]),
    # One retry allowed: an api_retry event carries the retry-after as retry_delay_ms.
    "api_429_retried": lambda: Run(
        steps=[ApiError.rate_limited(retry_after_s=2), ApiError.rate_limited(retry_after_s=2)],
        env={"CLAUDE_CODE_MAX_RETRIES": "1"},
    ),
    # Subscription (OAuth) auth + unified rate-limit headers: a rate_limit_event with resetsAt.
    "subscription_limit": lambda: Run(
        steps=[
            ApiError(
                429,
                "rate_limit_error",
                "usage limit reached",
                {
                    "retry-after": "3600",
                    "anthropic-ratelimit-unified-status": "rejected",
                    "anthropic-ratelimit-unified-reset": str(int(time.time()) + 3600),
                    "anthropic-ratelimit-unified-representative-claim": "five_hour",
                },
            )
        ],
        env={"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-fake"},
        drop_env=("ANTHROPIC_API_KEY",),
    ),
    "api_529": lambda: Run(steps=[ApiError.overloaded()]),
    # An overloaded error event inside a 200 stream: retried by the CLI even with retries off.
    "api_529_in_stream": lambda: Run(
        steps=[ApiError(529, "overloaded_error", "Overloaded", in_stream=True)] * 4
    ),
    "api_500": lambda: Run(steps=[ApiError(500, "api_error", "Internal server error")]),
    # No API key, no credentials, no base URL: a synthetic turn, no network.
    "not_logged_in": lambda: Run(
        drop_env=("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"), allowed_tools=()
    ),
    "max_turns": lambda: Run(
        steps=[ToolUse("mcp__echo__record", {"text": "one"}), Text("never reached")],
        max_turns=1,
    ),
    "resume_unknown": lambda: Run(resume=True),
    "request_timeout": lambda: Run(
        steps=[Text("too late", hang=_hang())], env={"API_TIMEOUT_MS": "2000"}
    ),
    # SIGKILL while the model request after a tool call hangs: no result event.
    "killed": lambda: Run(
        steps=[ToolUse("mcp__echo__record", {"text": "before the kill"}), Text("x", hang=_hang())],
        kill_after_requests=2,
    ),
}


def session_id_of(scenario: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hyperhive:transcript:{scenario}"))


def record(scenario: str, claude_bin: Path) -> dict[str, Any]:
    spec = SCENARIOS[scenario]()
    root = Path(tempfile.mkdtemp(prefix="hive-rec-"))
    try:
        home = root / "home"
        cwd = root / "work"
        home.mkdir()
        cwd.mkdir()
        with FakeAnthropic() as fake:
            fake.script(*spec.steps)
            mcp_config = echo_mcp_config(root / "echo.jsonl")
            if spec.broken_mcp:
                mcp_config["mcpServers"]["broken"] = {
                    "type": "stdio",
                    "command": str(root / "no-such-server"),
                }
            argv = claude_argv(
                claude_bin,
                session_id=session_id_of(scenario),
                resume=spec.resume,
                mcp_config=mcp_config,
                allowed_tools=spec.allowed_tools,
                max_turns=spec.max_turns,
            )
            base = clean_claude_env(fake.base_url, home)
            env = claude_env(base, home=str(home), extra=spec.env)
            for name in spec.drop_env:
                env.pop(name, None)
            started = time.monotonic()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                text=True,
                start_new_session=True,
            )
            try:
                if spec.kill_after_requests is None:
                    stdout, stderr = proc.communicate(spec.prompt, timeout=TIMEOUT_S)
                else:
                    assert proc.stdin is not None
                    proc.stdin.write(spec.prompt)
                    proc.stdin.close()
                    fake.wait_for_requests(spec.kill_after_requests, timeout=TIMEOUT_S)
                    # Let the CLI print and file what it had: it writes the session file ~0.1 s
                    # late, and a kill right at the request can leave no file at all.
                    time.sleep(0.5)
                    os.killpg(proc.pid, signal.SIGKILL)
                    assert proc.stdout is not None and proc.stderr is not None
                    # Killed: both pipes reach EOF, no deadlock reading them one after the other.
                    stdout, stderr = proc.stdout.read(), proc.stderr.read()
                    proc.wait(TIMEOUT_S)
            except BaseException:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
            duration = time.monotonic() - started
            address = fake.base_url.removeprefix("http://")
        # glob() of a missing directory yields nothing.
        session_files = sorted(
            str(p.relative_to(home)) for p in home.glob(".claude/projects/*/*.jsonl")
        )

        def scrub(text: str) -> str:
            # Paths, and the same as session directory names (memory_paths, session_files).
            for real, fixed in (
                (str(root), ROOT_PLACEHOLDER),
                (project_dir_name(root), project_dir_name(ROOT_PLACEHOLDER)),
                (address, FAKE_ADDRESS),
            ):
                text = text.replace(real, fixed)
            return text

        (OUT / f"{scenario}.jsonl").write_text(scrub(stdout))
        return {
            "returncode": proc.returncode,
            "duration_s": round(duration, 2),
            "stderr": scrub(stderr),
            "session_files": [scrub(f) for f in session_files],
            "turn_requests": len(fake.turn_requests()),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str]) -> int:
    claude_bin = Path(os.environ.get("HIVE_TEST_CLAUDE_BIN") or DEFAULT_CLAUDE_BIN)
    names = list(argv) or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    index_path = OUT / "index.json"
    index: dict[str, Any] = json.loads(index_path.read_text()) if index_path.exists() else {}
    version = subprocess.run(
        [str(claude_bin), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for name in names:
        info = record(name, claude_bin)
        index[name] = {"claude_version": version, **info}
        print(f"{name}: rc={info['returncode']} in {info['duration_s']}s")
    index_path.write_text(json.dumps(dict(sorted(index.items())), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
