"""Pytest plugin: run the real claude CLI against the fake model (``tests.fakes.anthropic_api``).

Enabled by ``pytest_plugins = ["tests.fakes.fixtures"]`` in ``tests/conftest.py``. Fixtures:

- ``claude_bin`` (session): path of the pinned CLI, ``$HIVE_TEST_CLAUDE_BIN`` or the repo's
  ``.cache/npm/node_modules/.bin/claude`` (``make test`` installs it).
- ``fake_model``: a started ``FakeAnthropic``, stopped after the test; fails the test if its
  responder raised.
- ``claude_home`` / ``claude_cwd``: an empty HOME and working dir per test, kept apart because the
  CLI files sessions under ``$HOME/.claude/projects/<cwd>``.
- ``claude_env``: an environment pointing the CLI at ``fake_model`` with nothing of the caller's
  credentials or Claude settings in it.

Helpers: ``run_claude(...)`` → ``CompletedRun``; ``echo_mcp_config(log)`` for our echo MCP server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anthropic_api import FakeAnthropic

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLAUDE_BIN = REPO_ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "claude"
ECHO_MCP_SERVER = Path(__file__).resolve().with_name("echo_mcp_server.py")

# Anything that could point the CLI at a real account, a real config or a proxy in front of the
# fake. Prefixes are matched case-sensitively; CLAUDE also covers CLAUDECODE (set when the tests
# themselves run inside Claude Code).
_STRIPPED_PREFIXES = ("ANTHROPIC_", "CLAUDE", "OTEL_", "MCP_")
_STRIPPED_NAMES = {
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
}


def clean_claude_env(base_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment minus Claude/Anthropic settings, pointed at ``base_url``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_STRIPPED_PREFIXES) and k not in _STRIPPED_NAMES
    }
    env.update(
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY="dummy",
        HOME=str(home),
        # Fail an API error at once (~0.6 s) instead of retrying for minutes (REFERENCE §1).
        CLAUDE_CODE_MAX_RETRIES="0",
        DISABLE_AUTOUPDATER="1",
        # Drops the session-title side request, so request counts are deterministic.
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        # Lets --dangerously-skip-permissions work as root.
        IS_SANDBOX="1",
        # Wait for MCP servers before the first request, and long enough on a loaded machine
        # (hive's own turns do the same: activities.claude_command.claude_env).
        MCP_CONNECTION_NONBLOCKING="0",
        MCP_CONNECT_TIMEOUT_MS="60000",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


def echo_mcp_config(log_path: Path | str, name: str = "echo") -> dict[str, Any]:
    """An ``--mcp-config`` document starting our echo server (by path, with this Python)."""
    return {
        "mcpServers": {
            name: {
                "type": "stdio",
                "command": sys.executable,
                "args": [str(ECHO_MCP_SERVER)],
                "env": {"ECHO_MCP_LOG": str(log_path)},
            }
        }
    }


@dataclass
class CompletedRun:
    """One ``claude -p --output-format stream-json`` run."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    duration_s: float = 0.0
    # stdout lines that were not JSON (should stay empty; kept for failure messages).
    stdout_other: list[str] = field(default_factory=list)

    def of_type(self, type_: str, subtype: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("type") == type_ and (subtype is None or e.get("subtype") == subtype)
        ]

    @property
    def init(self) -> dict[str, Any]:
        found = self.of_type("system", "init")
        assert found, f"no init event\n{self.describe()}"
        return found[0]

    @property
    def result(self) -> dict[str, Any]:
        found = self.of_type("result")
        assert found, f"no result event\n{self.describe()}"
        return found[-1]

    @property
    def session_id(self) -> str:
        return str(self.result["session_id"])

    def describe(self, limit: int = 4000) -> str:
        """Output for assertion messages."""
        lines = [json.dumps(e)[:500] for e in self.events] + self.stdout_other
        return (
            f"rc={self.returncode} in {self.duration_s:.2f}s\n"
            f"stdout:\n" + "\n".join(lines)[-limit:] + f"\nstderr:\n{self.stderr[-limit:]}"
        )


class ClaudeRunTimeout(AssertionError):
    """The CLI did not finish in time; the message carries what it had printed."""


def run_claude(
    claude_bin: Path | str,
    env: Mapping[str, str],
    prompt: str,
    args: Sequence[str] = (),
    cwd: Path | str | None = None,
    timeout: float = 60.0,
) -> CompletedRun:
    """Run ``claude -p --output-format stream-json --verbose *args`` with ``prompt`` on stdin.

    The prompt goes on stdin because variadic flags (``--mcp-config``, ``--allowedTools``) would
    swallow a positional one. The CLI runs in its own process group so a timeout also kills the
    MCP servers it started.
    """
    cmd = [str(claude_bin), "-p", "--output-format", "stream-json", "--verbose", *args]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(prompt, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        run = _parse(-9, stdout, stderr, time.monotonic() - started)
        raise ClaudeRunTimeout(f"claude did not finish in {timeout}s\n{run.describe()}") from None
    return _parse(proc.returncode, stdout, stderr, time.monotonic() - started)


def _parse(returncode: int, stdout: str, stderr: str, duration_s: float) -> CompletedRun:
    events: list[dict[str, Any]] = []
    other: list[str] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            other.append(line)
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            other.append(line)
    return CompletedRun(returncode, events, stderr, duration_s, other)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    path = Path(os.environ.get("HIVE_TEST_CLAUDE_BIN") or DEFAULT_CLAUDE_BIN)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"claude CLI not found at {path}: run `make test` (it installs the pinned "
            "@anthropic-ai/claude-code) or set HIVE_TEST_CLAUDE_BIN",
            pytrace=False,
        )
    return path


@pytest.fixture
def fake_model() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    with fake:
        yield fake
    if fake.errors:
        pytest.fail(
            f"fake model: a responder, step or predicate raised: {fake.errors!r}", pytrace=False
        )


@pytest.fixture
def claude_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def claude_cwd(tmp_path: Path) -> Path:
    cwd = tmp_path / "work"
    cwd.mkdir()
    return cwd


@pytest.fixture
def claude_env(fake_model: FakeAnthropic, claude_home: Path) -> dict[str, str]:
    return clean_claude_env(fake_model.base_url, claude_home)
