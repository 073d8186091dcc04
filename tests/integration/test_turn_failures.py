"""How a turn fails, for real: crash of hive-c0re, login, rate limits, hangs, cancel.

Real hive-c0re (`hive c0re` subprocess), real dev server, real claude CLI; only the model is fake.
The waits themselves (rate-limit sleeps, login waits) are covered on the time-skipping server in
tests/workflows/test_agent_workflow.py.
"""

from __future__ import annotations

import asyncio

import pytest

from hyperhive.store import messages as message_store
from tests.fakes.anthropic_api import ApiError, FakeAnthropic, Gate, RecordedRequest, Text
from tests.rig.agent_scripts import wake_of
from tests.rig.hive_process import pids_with_cwd, wait_gone

pytestmark = pytest.mark.integration


def _wakes(fake: FakeAnthropic, agent: str, body: str) -> list[RecordedRequest]:
    return [
        r
        for r in fake.turn_requests()
        if (w := wake_of(r)) is not None and w.agent == agent and w.body == body
    ]


def _pending(hive, agent: str) -> int:
    engine = hive.engine()
    try:
        return message_store.pending_count(engine, agent)
    finally:
        engine.dispose()


async def test_sigkill_mid_turn_retries_the_turn_without_losing_or_doubling(
    start_c0re, fake_model: FakeAnthropic
):
    gate = Gate()
    calls: dict[str, int] = {}

    def respond(request):
        wake = wake_of(request)
        if wake is None:
            return Text("done")
        calls[wake.body] = calls.get(wake.body, 0) + 1
        if wake.body == "slow job" and calls[wake.body] == 1:
            return Text("never arrives", hang=gate)
        return Text(f"handled {wake.body}")

    fake_model.responder = respond
    hive = await start_c0re(agents=["a"], turn_heartbeat_timeout_s="3")
    await hive.send("a", "slow job")
    await fake_model.wait_for_async(
        lambda r: (w := wake_of(r)) is not None and w.body == "slow job"
    )
    await hive.send("a", "second job")  # waits in the inbox behind the running turn
    work = hive.env.state_dir / "agents" / "a" / "work"
    turn_pids = pids_with_cwd(work)
    assert turn_pids, "claude should be running the turn"

    hive.process.kill()  # SIGKILL: no chance to clean up
    assert wait_gone(turn_pids) == [], "the turn's processes die with hive-c0re"
    gate.open()
    hive.restart()

    await hive.wait_status("a", lambda s: s.turns_total == 2 and s.state == "idle", timeout=120)
    assert calls == {"slow job": 2, "second job": 1}
    retried = _wakes(fake_model, "a", "slow job")
    assert len({r.headers["x-claude-code-session-id"] for r in retried}) == 1, "same session"
    assert _pending(hive, "a") == 0
    stored = [m.body for m in hive.messages("a")]
    assert sorted(stored) == ["second job", "slow job"]


async def test_401_means_needs_login_without_a_retry_storm(start_c0re, fake_model):
    logged_in = asyncio.Event()

    def respond(request):
        if not logged_in.is_set():
            return ApiError.unauthorized()
        return Text("done")

    fake_model.responder = respond
    hive = await start_c0re(agents=["a"])
    await hive.send("a", "do something")
    status = await hive.wait_status("a", lambda s: s.state == "needs_login")
    assert status.last_error_class == "needs_login"
    notice = await hive.operator_recv(wait_seconds=60)
    assert notice is not None and notice.sender == "hive-c0re"  # about a, not written by it
    assert "not logged in" in notice.body
    assert len(_wakes(fake_model, "a", "do something")) == 1, "no retries while logged out"

    logged_in.set()
    await hive.workflow("a").signal("credentials_updated")
    status = await hive.wait_status("a", lambda s: s.turns_total == 1 and s.state == "idle")
    assert len(_wakes(fake_model, "a", "do something")) == 2
    assert _pending(hive, "a") == 0


@pytest.mark.parametrize(
    ("error", "error_class"),
    [
        pytest.param(ApiError.rate_limited(retry_after_s=30), "rate_limited", id="429"),
        pytest.param(ApiError.overloaded(), "overloaded", id="529"),
    ],
)
async def test_429_and_529_put_the_agent_to_a_durable_sleep(
    start_c0re, fake_model, error, error_class
):
    fake_model.responder = lambda request: error
    hive = await start_c0re(agents=["a"])
    await hive.send("a", "hello")
    status = await hive.wait_status("a", lambda s: s.state == "rate_limited")
    assert status.last_error_class == error_class
    assert status.rate_limited_until is not None
    assert status.turns_total == 0
    # The message stays with the turn that will be retried after the sleep.
    assert _pending(hive, "a") == 0
    assert len(_wakes(fake_model, "a", "hello")) == 1


async def test_a_hung_claude_is_killed_and_its_turn_retried_in_the_same_session(
    start_c0re, fake_model
):
    gate = Gate()
    attempts: list[str] = []

    def respond(request):
        wake = wake_of(request)
        if wake is None:
            return Text("done")
        attempts.append(request.headers["x-claude-code-session-id"])
        if len(attempts) == 1:
            return Text("silence", hang=gate)
        return Text("answered")

    fake_model.responder = respond
    # Long enough for claude to start and print its init on a loaded machine (in CI a 3 s
    # budget killed every attempt before claude reached the model).
    hive = await start_c0re(agents=["a"], turn_idle_timeout_s="15")
    await hive.send("a", "are you there")
    await fake_model.wait_for_async(lambda r: wake_of(r) is not None)
    work = hive.env.state_dir / "agents" / "a" / "work"
    hung = pids_with_cwd(work)
    assert hung
    assert wait_gone(hung, timeout=60) == [], "the idle timeout kills the process group"
    await hive.wait_status("a", lambda s: s.turns_total == 1 and s.state == "idle", timeout=90)
    assert len(attempts) == 2 and attempts[0] == attempts[1]
    gate.open()


async def test_operator_cancel_kills_the_turn_and_keeps_the_message(start_c0re, fake_model):
    gate = Gate()
    count = 0

    def respond(request):
        nonlocal count
        if wake_of(request) is None:
            return Text("done")
        count += 1
        return Text("slow", hang=gate) if count == 1 else Text("finished")

    fake_model.responder = respond
    hive = await start_c0re(agents=["a"])
    await hive.send("a", "long task")
    await fake_model.wait_for_async(lambda r: wake_of(r) is not None)
    work = hive.env.state_dir / "agents" / "a" / "work"
    running = pids_with_cwd(work)
    assert running

    await hive.workflow("a").signal("cancel_turn")
    status = await hive.wait_status("a", lambda s: s.state == "paused")
    assert "cancelled" in status.pause_reason
    assert wait_gone(running) == []
    assert _pending(hive, "a") == 1, "the message is back in the inbox"

    await hive.workflow("a").signal("resume")
    await hive.wait_status("a", lambda s: s.turns_total == 1 and s.state == "idle")
    assert _pending(hive, "a") == 0
    assert count == 2
    gate.open()
