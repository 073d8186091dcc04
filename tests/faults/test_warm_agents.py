"""Faults around warm agents: a warm claude killed mid-turn, hive-c0re killed with warm claudes
(idle, and one mid-turn), and a config commit applied while an agent is warm.

Each case ends the way a user checks it: every message answered once (one turn record and one
answer in the store per message) and no process of any agent left behind, after the fault and
after hive-c0re stops.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from hyperhive.store import agents as agent_store
from tests.fakes.anthropic_api import FakeAnthropic, Gate, Step, Text
from tests.integration.test_warm_agents import (
    answering,
    assert_answered_once,
    claude_pids,
    held,
    no_claude_of,
    the_claude_of,
    turn_done,
    wake_request,
    warm_flags,
    work_dir,
)
from tests.rig.agent_scripts import Wake, hive_responder
from tests.rig.c0re import RunningC0re, StartC0re
from tests.rig.hive_process import pids_with_cwd, wait_gone
from tests.rig.mcp_client import text_of, uds_client
from tests.rig.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.faults]


class Hangs:
    """The agents answer every operator message; the first attempt at a message in `hang`
    holds its model request until `gate` opens (the fake model lets it go when it stops)."""

    def __init__(self, *hang: str) -> None:
        self.hang = set(hang)
        self.gate = Gate()
        self.attempts: Counter[str] = Counter()

    def behaviour(self, wake: Wake) -> Step | None:
        if wake.sender == "operator":
            self.attempts[wake.body] += 1
            if wake.body in self.hang and self.attempts[wake.body] == 1:
                return Text("thinking it over", hang=self.gate)
        return answering(wake)


def processes_of(hive: RunningC0re, *agents: str) -> list[int]:
    return [pid for agent in agents for pid in pids_with_cwd(work_dir(hive, agent))]


async def all_gone(pids: list[int], timeout: float = 30) -> None:
    assert await asyncio.to_thread(wait_gone, pids, timeout) == [], "processes left behind"


async def stop_and_check_nothing_is_left(hive: RunningC0re, *agents: str) -> None:
    """Ctrl-C hive-c0re: it lets its warm claudes go; none of the agents' processes stays."""
    assert await asyncio.to_thread(hive.process.interrupt) == 0, hive.process.output()[-3000:]
    for agent in agents:
        await no_claude_of(hive, agent, timeout=15)


async def test_a_warm_claude_killed_mid_turn_is_replaced_and_the_message_answered_once(
    start_c0re: StartC0re, fake_model: FakeAnthropic
) -> None:
    script = Hangs("the job")
    fake_model.responder = hive_responder(script.behaviour)
    hive = await start_c0re(agents=["a"])
    work = work_dir(hive, "a")
    await hive.send("a", "warm up")
    await turn_done(hive, "a", 1)
    warm = await the_claude_of(hive, "a")

    await hive.send("a", "the job")
    await held(fake_model, "a", "the job")
    assert claude_pids(work) == [warm], "the warm claude runs the turn"
    running = pids_with_cwd(work)
    os.killpg(warm, signal.SIGKILL)  # its process group: claude and its MCP bridge
    await all_gone(running)
    await turn_done(hive, "a", 2)

    assert script.attempts == {"warm up": 1, "the job": 2}
    # The warm attempt died; the retry started a fresh claude that resumed the session.
    assert warm_flags(hive, "a") == [False, True, False]
    retry = wake_request(fake_model, "a", "the job")
    assert "warm up" in retry.messages_text
    first = wake_request(fake_model, "a", "warm up")
    assert retry.headers["x-claude-code-session-id"] == first.headers["x-claude-code-session-id"]
    assert await the_claude_of(hive, "a") != warm
    assert_answered_once(hive, {"a": ["warm up", "the job"]})
    await stop_and_check_nothing_is_left(hive, "a")


async def test_warm_claudes_die_with_hive_c0re_idle_or_mid_turn_and_the_next_turns_resume(
    start_c0re: StartC0re, fake_model: FakeAnthropic
) -> None:
    script = Hangs("note b3")
    fake_model.responder = hive_responder(script.behaviour)
    hive = await start_c0re(agents=["a", "b"], turn_heartbeat_timeout_s="3")

    # Both warm and idle: SIGKILL hive-c0re (only it; its children die by their parent-death
    # signal).
    for agent in ("a", "b"):
        await hive.send(agent, f"note {agent}1")
    for agent in ("a", "b"):
        await turn_done(hive, agent, 1)
        await the_claude_of(hive, agent)
    running = processes_of(hive, "a", "b")
    hive.process.kill()
    await all_gone(running)
    await asyncio.to_thread(hive.restart)

    # Again, with a warm and idle, and b mid-turn on its warm claude.
    for agent in ("a", "b"):
        await hive.send(agent, f"note {agent}2")
    for agent in ("a", "b"):
        await turn_done(hive, agent, 2)
    await hive.send("b", "note b3")
    await held(fake_model, "b", "note b3")
    await the_claude_of(hive, "a")
    running = processes_of(hive, "a", "b")
    hive.process.kill()
    await all_gone(running)
    script.gate.open()
    await asyncio.to_thread(hive.restart)

    await hive.send("a", "note a3")
    await turn_done(hive, "a", 3)
    await turn_done(hive, "b", 3)

    # Every turn after a restart started claude afresh; b's warm attempt at b3 was retried.
    assert warm_flags(hive, "a") == [False, False, False]
    assert warm_flags(hive, "b") == [False, False, True, False]
    asked = {agent: [f"note {agent}{n}" for n in (1, 2, 3)] for agent in ("a", "b")}
    assert script.attempts == {body: 1 for bodies in asked.values() for body in bodies} | {
        "note b3": 2
    }
    # Each resumed its session: the model still sees the earlier turns.
    assert "note a1" in wake_request(fake_model, "a", "note a2").messages_text
    assert "note a2" in wake_request(fake_model, "a", "note a3").messages_text
    b3 = wake_request(fake_model, "b", "note b3").messages_text
    assert "note b1" in b3 and "note b2" in b3
    assert_answered_once(hive, asked)
    await stop_and_check_nothing_is_left(hive, "a", "b")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=hm1nd", "-c", "user.email=hm1nd@hive", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


async def test_a_config_commit_applied_while_warm_starts_a_fresh_claude_with_it(
    start_c0re: StartC0re, fake_model: FakeAnthropic
) -> None:
    marker = "MARKER-w4rm: answer in haiku."
    fake_model.responder = hive_responder(answering)  # hm1nd's notices: nothing to do
    hive = await start_c0re(agents=["hm1nd"])
    await hive.spawn_approved("a", "replies to the operator")
    await hive.send("a", "before the commit")
    await turn_done(hive, "a", 1)
    warm = await the_claude_of(hive, "a")

    # hm1nd commits a new CLAUDE.md for a and asks for it; the operator approves.
    proposed = hive.env.state_dir / "proposed" / "a"
    instructions = proposed / "CLAUDE.md"
    instructions.write_text(f"{instructions.read_text()}\n{marker}\n")
    _git(proposed, "commit", "-qam", "a: haiku")
    sha = _git(proposed, "rev-parse", "HEAD")
    async with uds_client(hive.run_dir / "agents" / "hm1nd" / "mcp.sock") as client:
        asked = await client.call_tool(
            "request_apply_commit", {"name": "a", "sha": sha, "description": "haiku"}
        )
    assert "apply requested" in text_of(asked)
    await hive.notice(f"apply commit {sha[:12]} to a")
    approval = hive.pending_approval("apply_commit")
    approved = await asyncio.to_thread(hive.hive, "approve", str(approval.id))
    assert approved.returncode == 0, approved.stdout + approved.stderr

    def deployed() -> bool:
        engine = hive.engine()
        try:
            agent = agent_store.get_agent(engine, "a")
        finally:
            engine.dispose()
        return agent is not None and agent.deployed_sha == sha

    await eventually(
        lambda: asyncio.to_thread(deployed),
        what=f"commit {sha[:12]} deployed to a",
        timeout=60,
        interval=0.1,
    )

    await hive.send("a", "after the commit")
    await turn_done(hive, "a", 2)
    before = wake_request(fake_model, "a", "before the commit")
    after = wake_request(fake_model, "a", "after the commit")
    assert marker not in before.system_text
    assert marker in after.system_text, "the new CLAUDE.md reached the model"
    assert "before the commit" in after.messages_text, "the fresh claude resumed the session"
    # The changed config made the turn cold: a fresh claude, the old one gone.
    assert warm_flags(hive, "a") == [False, False]
    assert await asyncio.to_thread(wait_gone, [warm], 10) == []
    assert await the_claude_of(hive, "a") != warm
    assert_answered_once(hive, {"a": ["before the commit", "after the commit"]})
    await stop_and_check_nothing_is_left(hive, "a", "hm1nd")
