"""``session_exists`` against where the real claude CLI files its sessions, and ``--resume``.

The harness picks ``--session-id`` or ``--resume`` by whether the session file exists, so the path
must match the CLI's exactly: cwds with dots, underscores, spaces, non-ASCII, over 200 characters,
and reached through a symlink.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from activities.claude_command import (
    claude_argv,
    claude_env,
    session_exists,
    session_file,
)
from hyperhive.claude_stream.outcome import TurnAccumulator, TurnOutcome
from hyperhive.domain import TurnErrorClass
from tests.fakes.anthropic_api import FakeAnthropic, Gate, Text, ToolUse
from tests.fakes.fixtures import clean_claude_env, echo_mcp_config

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


def start_turn(
    claude_bin: Path, env: dict[str, str], home: Path, cwd: Path, sid: str, prompt: str, log: Path
) -> tuple[subprocess.Popen[str], bool]:
    resume = session_exists(home, cwd, sid)
    argv = claude_argv(
        claude_bin,
        session_id=sid,
        resume=resume,
        mcp_config=echo_mcp_config(log),
        allowed_tools=("mcp__echo",),
    )
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
    assert proc.stdin is not None
    proc.stdin.write(prompt)
    proc.stdin.close()
    return proc, resume


def finish(proc: subprocess.Popen[str]) -> tuple[int, TurnOutcome, str]:
    assert proc.stdout is not None and proc.stderr is not None
    acc = TurnAccumulator()
    for line in proc.stdout:  # line by line, as the harness reads it
        acc.feed_line(line)
    stderr = proc.stderr.read()
    return proc.wait(TIMEOUT), acc.outcome(), stderr


def turn(
    claude_bin: Path, env: dict[str, str], home: Path, cwd: Path, sid: str, prompt: str, log: Path
) -> tuple[int, TurnOutcome, bool, str]:
    proc, resume = start_turn(claude_bin, env, home, cwd, sid, prompt, log)
    try:
        rc, outcome, stderr = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return rc, outcome, resume, stderr


@pytest.fixture
def env(fake_model: FakeAnthropic, claude_home: Path) -> dict[str, str]:
    return claude_env(clean_claude_env(fake_model.base_url, claude_home), home=str(claude_home))


CWDS = {
    "plain": "work",
    "dots-underscores-spaces": "my.proj_dir/a b",
    "non-ascii": "ünï cödé~@+",
    "long": "x" * 120 + "/" + "y_z." * 30,
}


@pytest.mark.parametrize("cwd_name", list(CWDS), ids=list(CWDS))
def test_session_file_and_resume_keep_the_session(
    claude_bin: Path,
    env: dict[str, str],
    claude_home: Path,
    fake_model: FakeAnthropic,
    tmp_path: Path,
    cwd_name: str,
) -> None:
    cwd = tmp_path / CWDS[cwd_name]
    cwd.mkdir(parents=True)
    sid = str(uuid.uuid4())
    log = tmp_path / "echo.jsonl"
    fake_model.script(Text("first answer"), Text("second answer"))

    rc, first, resumed, stderr = turn(claude_bin, env, claude_home, cwd, sid, "first question", log)
    assert rc == 0, (first, stderr)
    assert not resumed  # no file yet: --session-id
    assert first.error_class == TurnErrorClass.NONE
    assert first.session_id == sid
    # Exactly where we compute it, and nowhere else.
    written = list((claude_home / ".claude" / "projects").glob("*/*.jsonl"))
    assert written == [session_file(claude_home, cwd, sid)]
    assert session_exists(claude_home, cwd, sid)

    rc, second, resumed, stderr = turn(claude_bin, env, claude_home, cwd, sid, "second q", log)
    assert rc == 0, (second, stderr)
    assert resumed  # the file exists: --resume
    assert second.session_id == sid
    assert second.result_text == "second answer"
    # The resumed request carries the first exchange.
    body = fake_model.turn_requests()[-1].body
    assert body is not None
    texts = str(body["messages"])
    assert "first question" in texts and "first answer" in texts
    assert list((claude_home / ".claude" / "projects").glob("*/*.jsonl")) == written


def test_symlinked_cwd_uses_the_physical_path(
    claude_bin: Path,
    env: dict[str, str],
    claude_home: Path,
    fake_model: FakeAnthropic,
    tmp_path: Path,
) -> None:
    real = tmp_path / "real.dir"
    real.mkdir()
    link = tmp_path / "link_dir"
    link.symlink_to(real)
    sid = str(uuid.uuid4())
    fake_model.script(Text("ok"))
    rc, outcome, _, stderr = turn(
        claude_bin, {**env, "PWD": str(link)}, claude_home, link, sid, "hi", tmp_path / "log"
    )
    assert rc == 0, (outcome, stderr)
    assert session_file(claude_home, real, sid).is_file()
    assert session_exists(claude_home, link, sid)


def test_other_cwd_does_not_see_the_session(
    claude_bin: Path,
    env: dict[str, str],
    claude_home: Path,
    fake_model: FakeAnthropic,
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    sid = str(uuid.uuid4())
    fake_model.script(Text("ok"))
    rc, _, _, stderr = turn(claude_bin, env, claude_home, a, sid, "hi", tmp_path / "log")
    assert rc == 0, stderr
    assert not session_exists(claude_home, b, sid)
    # Forcing --resume there fails the way the parser marks as session_missing.
    argv = claude_argv(claude_bin, session_id=sid, resume=True, mcp_config={"mcpServers": {}})
    proc = subprocess.run(
        argv, input="hi", capture_output=True, text=True, env=env, cwd=b, timeout=TIMEOUT
    )
    acc = TurnAccumulator()
    for line in proc.stdout.splitlines():
        acc.feed_line(line)
    outcome = acc.outcome()
    assert proc.returncode == 1
    assert outcome.session_missing
    assert outcome.session_id == sid


@pytest.mark.parametrize("kill_after_s", [0.0, 1.0], ids=["at-once", "after-1s"])
def test_retry_after_a_kill_keeps_the_session(
    claude_bin: Path,
    env: dict[str, str],
    claude_home: Path,
    claude_cwd: Path,
    fake_model: FakeAnthropic,
    tmp_path: Path,
    kill_after_s: float,
) -> None:
    """Killed while the model request after a tool call hangs, then retried with the same id.

    claude writes the session file ~0.1 s behind (observed: a kill right when a request arrives
    can leave no file at all, even after a tool call; 0.1 s later the file holds everything so
    far). Either way ``session_exists`` picks the flag that works.
    """
    sid = str(uuid.uuid4())
    log = tmp_path / "echo.jsonl"
    fake_model.script(ToolUse("mcp__echo__record", {"text": "x"}), Text("never", hang=Gate()))
    proc, resumed = start_turn(claude_bin, env, claude_home, claude_cwd, sid, "first", log)
    try:
        fake_model.wait_for_requests(2, timeout=TIMEOUT)
        if kill_after_s:
            time.sleep(kill_after_s)  # the kill's timing is the parameter: give claude that long
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    _, killed, _ = finish(proc)
    assert not resumed
    assert killed.error_class == TurnErrorClass.CRASHED
    assert killed.tool_calls == ["mcp__echo__record"]
    existed = session_exists(claude_home, claude_cwd, sid)
    if kill_after_s:
        assert existed

    fake_model.script(Text("back"))
    rc, outcome, resumed, stderr = turn(claude_bin, env, claude_home, claude_cwd, sid, "again", log)
    assert rc == 0, (outcome, stderr)
    assert resumed == existed
    assert outcome.session_id == sid
    assert outcome.result_text == "back"
    assert session_exists(claude_home, claude_cwd, sid)
