"""Kill the agent's claude process (not hive-c0re) mid-turn, again and again.

tests/integration/test_turn_failures.py covers one SIGKILL of hive-c0re mid-turn and one hung
claude killed by the idle timeout. What is new here: claude itself dies under a live hive-c0re
(OOM killer, a crash), on several attempts of the same turn, and on every attempt until the turn
runs out of retries. Each retry must work on the same message, the message behind it must wait,
the answer must be sent once, no process may be left behind, and a turn that cannot succeed
must park its message (not drop it) and tell the operator.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from hyperhive.models import AgentLimits
from hyperhive.store import messages as message_store
from tests.fakes.anthropic_api import FakeAnthropic, Gate, RecordedRequest, Text, ToolUse
from tests.faults import stored_rows
from tests.rig.agent_scripts import send, turn_view, wake_of
from tests.rig.hive_process import pids_with_cwd, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MAX_ATTEMPTS = AgentLimits().max_turn_attempts


def _claude_pid(work: Path) -> int:
    """The claude CLI running a turn in `work` (its MCP bridge works there too)."""
    for pid in pids_with_cwd(work):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"stream-json" in cmdline:
            return pid
    raise AssertionError(f"no claude process works in {work}: {pids_with_cwd(work)}")


class Flaky:
    """The model's side: each attempt at `job` hangs (so the test can kill it) while `broken`.

    The hung requests of killed attempts are let go when the fake model stops."""

    def __init__(self) -> None:
        self.broken = True
        self.attempts: dict[str, int] = {}

    def respond(self, request):
        view = turn_view(request)
        if view is None:
            return Text("(not a wake prompt)")
        if not view.results:
            self.attempts[view.wake.body] = self.attempts.get(view.wake.body, 0) + 1
        if view.wake.body != "job":
            return Text(f"handled {view.wake.body}")
        if self.broken:
            return Text("thinking", hang=Gate())
        tools = {tool["name"] for tool in (request.body or {}).get("tools", [])}
        if "mcp__hive__send" not in tools:
            # claude -p connects MCP servers in the background; a real model waits for them.
            return ToolUse("WaitForMcpServers", {"servers": ["hive"]})
        if all(result.startswith("ready:") for result in view.results):
            return send("operator", "job done")
        return Text("done")


async def _kill_attempt(fake: FakeAnthropic, flaky: Flaky, work: Path, attempt: int) -> None:
    """Wait for attempt `attempt` at `job` to reach the model, then SIGKILL its claude."""
    await fake.wait_for_async(lambda r: len(_job_wakes(fake)) >= attempt, timeout=120)
    before = pids_with_cwd(work)
    os.kill(_claude_pid(work), signal.SIGKILL)
    # The activity reaps claude and kills its process group: the MCP bridge goes too.
    assert wait_gone(before, timeout=30) == [], f"attempt {attempt}: processes left behind"


def _only_the_warm_claude_is_left(work: Path) -> None:
    """Nothing of the killed attempts is left: what still runs in the agent's work dir is one
    process group, the claude its last turn kept warm (with its sandbox and MCP bridge)."""
    groups = set()
    for pid in pids_with_cwd(work):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    assert len(groups) <= 1, f"processes of {len(groups)} turns are left in {work}"


def _job_wakes(fake: FakeAnthropic) -> list[RecordedRequest]:
    return [r for r in fake.turn_requests() if (w := wake_of(r)) is not None and w.body == "job"]


def _pending(hive, agent: str) -> int:
    engine = hive.engine()
    try:
        return message_store.pending_count(engine, agent)
    finally:
        engine.dispose()


async def test_claude_killed_on_three_attempts_answers_once_on_the_fourth(
    start_c0re, fake_model: FakeAnthropic
):
    flaky = Flaky()
    fake_model.responder = flaky.respond
    hive = await start_c0re(agents=["a"])
    work = hive.env.state_dir / "agents" / "a" / "work"
    await hive.send("a", "job")
    await fake_model.wait_for_async(lambda r: len(_job_wakes(fake_model)) >= 1)
    await hive.send("a", "next")  # waits behind the turn that keeps dying

    for attempt in (1, 2, 3):
        await _kill_attempt(fake_model, flaky, work, attempt)
        if attempt == 3:
            flaky.broken = False
    await hive.wait_status("a", lambda s: s.turns_total == 2 and s.state == "idle", timeout=120)

    assert flaky.attempts == {"job": 4, "next": 1}, "each retry on the same message, once more"
    done = await hive.operator_recv(wait_seconds=30)
    assert done is not None and done.body == "job done"
    assert _pending(hive, "operator") == 0, "the answer was sent once"
    assert _pending(hive, "a") == 0
    rows = {r.body: r for r in stored_rows(hive) if r.recipient == "a"}
    assert rows["job"].turn_id and rows["next"].turn_id
    assert rows["job"].turn_id != rows["next"].turn_id, "one turn per message"
    _only_the_warm_claude_is_left(work)


async def test_claude_killed_on_every_attempt_parks_the_message_and_tells_the_operator(
    start_c0re, fake_model: FakeAnthropic
):
    flaky = Flaky()
    fake_model.responder = flaky.respond
    hive = await start_c0re(agents=["a"])
    work = hive.env.state_dir / "agents" / "a" / "work"
    await hive.send("a", "job")

    for attempt in range(1, MAX_ATTEMPTS + 1):
        await _kill_attempt(fake_model, flaky, work, attempt)
    status = await hive.wait_status("a", lambda s: s.state == "paused", timeout=120)
    assert "turn failed" in status.pause_reason and "without a result" in status.pause_reason
    notice = await hive.operator_recv(wait_seconds=60)
    assert notice is not None and notice.sender == "hive-c0re"  # about a, not written by it
    assert "paused" in notice.body and "back in its inbox" in notice.body
    assert _pending(hive, "a") == 1, "the message waits in the inbox, not dropped"
    assert flaky.attempts == {"job": MAX_ATTEMPTS}, "no attempt beyond the retry budget"

    flaky.broken = False
    await hive.workflow("a").signal("resume")
    await hive.wait_status("a", lambda s: s.turns_total == 1 and s.state == "idle", timeout=60)
    done = await hive.operator_recv(wait_seconds=30)
    assert done is not None and done.body == "job done"
    assert _pending(hive, "a") == 0 and _pending(hive, "operator") == 0
    assert flaky.attempts == {"job": MAX_ATTEMPTS + 1}
    [job] = [r for r in stored_rows(hive) if r.body == "job"]
    assert job.delivered_at is not None and job.turn_id
    _only_the_warm_claude_is_left(work)
