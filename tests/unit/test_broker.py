"""The broker on a real SQLite store and the real in-process bus. The only stand-in is the
waker (it stands for the Temporal signal to the AgentWorkflow): a function that records."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hyperhive.broker import (
    MAX_STATUS_CHARS,
    BodyTooLargeError,
    Broker,
    BrokerError,
    EmptyBodyError,
    InvalidBodyError,
    InvalidNameError,
    InvalidStatusError,
    InvalidWaitError,
    RateLimitedError,
    UnknownAgentError,
)
from hyperhive.bus import EventBus
from hyperhive.domain import MANAGER_NAME, OPERATOR_NAME, AgentState
from hyperhive.settings import HiveSettings
from hyperhive.store.agents import register_agent, set_agent_state
from hyperhive.store.db import begin, make_engine, migrate
from hyperhive.store.messages import claim_for_turn, pending_count, pop_message
from hyperhive.turn_sends import send_key


class RecordingWaker:
    """Stands for Temporal's signal-with-start: records the agents woken; can be made to fail
    or to hold until released."""

    def __init__(self) -> None:
        self.woken: list[str] = []
        self.attempts: list[str] = []
        self.fail = False
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None

    async def __call__(self, agent: str) -> None:
        self.attempts.append(agent)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("temporal is unreachable")
        self.woken.append(agent)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'hive.db'}")
    migrate(eng)
    for name in (MANAGER_NAME, "alice", "bob"):
        register_agent(eng, name, "local")
    yield eng
    eng.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> HiveSettings:
    return HiveSettings(
        state_dir=tmp_path,
        max_body_bytes=1000,
        send_rate_per_minute=30,
        recv_max_wait_s=30,
    )


@pytest.fixture
def waker() -> RecordingWaker:
    return RecordingWaker()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
async def broker(engine, bus, waker, settings, clock):
    b = Broker(engine, bus, waker, settings, recheck_interval_s=60, clock=clock)
    yield b
    await b.aclose()


def _stored(engine: sa.Engine) -> int:
    with begin(engine) as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one())


def _wake_pending(engine: sa.Engine, agent: str) -> bool:
    with begin(engine) as conn:
        return bool(
            conn.execute(
                sa.text("SELECT wake_pending FROM agents WHERE name = :n"), {"n": agent}
            ).scalar_one()
        )


# ---------------------------------------------------------------------------------------------
# send


async def test_send_stores_publishes_and_wakes(broker, engine, bus, waker):
    with bus.subscribe("inbox:bob") as inbox, bus.subscribe("messages") as all_messages:
        result = await broker.send("alice", "bob", "hello bob")
        assert (result.recipient, result.pending) == ("bob", 1)
        event = inbox.get_nowait()
        assert event is not None
        assert event["id"] == result.id and event["body"] == "hello bob"
        assert all_messages.get_nowait() == event
    assert waker.woken == ["bob"]
    second = await broker.send("alice", "bob", "again")
    assert second.pending == 2 and second.id > result.id
    got = await broker.recv("bob")
    assert got is not None and (got.id, got.sender, got.body) == (result.id, "alice", "hello bob")


async def test_wake_ups_are_coalesced_until_a_claim_clears_them(broker, engine, waker, clock):
    for i in range(50):
        await broker.send(OPERATOR_NAME if i % 2 else "alice", "bob", f"m{i}")
    assert waker.woken == ["bob"]
    await broker.send("alice", "alice", "note to self")
    assert waker.woken == ["bob", "alice"]

    # the turn loop claims (clearing the flag): the next send wakes again, once
    assert claim_for_turn(engine, "bob", "turn-1") is not None
    clock.now += 60  # a fresh rate-limit bucket for alice
    for i in range(10):
        await broker.send("alice", "bob", f"n{i}")
    assert waker.woken == ["bob", "alice", "bob"]


async def test_concurrent_sends_to_an_idle_agent_wake_it_once(broker, waker, settings):
    results = await asyncio.gather(*(broker.send(OPERATOR_NAME, "bob", f"m{i}") for i in range(50)))
    assert len({r.id for r in results}) == 50
    assert waker.woken == ["bob"]


async def test_operator_sends_to_agents_and_agents_to_the_operator(broker, waker):
    await broker.send(OPERATOR_NAME, MANAGER_NAME, "spawn a helper")
    result = await broker.send(MANAGER_NAME, OPERATOR_NAME, "may I?")
    assert result.recipient == OPERATOR_NAME
    assert waker.woken == [MANAGER_NAME]  # the operator is never woken
    got = await broker.recv(OPERATOR_NAME)
    assert got is not None and got.body == "may I?" and got.sender == MANAGER_NAME


async def test_a_stopped_agent_gets_its_messages_but_no_wake(broker, engine, waker):
    set_agent_state(engine, "bob", AgentState.STOPPED)
    await broker.send("alice", "bob", "for later")
    assert waker.woken == []
    assert pending_count(engine, "bob") == 1


@pytest.mark.parametrize(
    ("sender", "to", "body", "error", "code"),
    [
        ("alice", "Bob", "hi", InvalidNameError, "invalid_name"),
        ("alice", "waytoolongname", "hi", InvalidNameError, "invalid_name"),
        ("alice", "", "hi", InvalidNameError, "invalid_name"),
        ("bad name", "bob", "hi", InvalidNameError, "invalid_name"),
        ("alice", 42, "hi", InvalidNameError, "invalid_name"),
        ("alice", "nobody", "hi", UnknownAgentError, "unknown_agent"),
        ("ghost", "bob", "hi", UnknownAgentError, "unknown_agent"),
        ("alice", "bob", "", EmptyBodyError, "empty_body"),
        ("alice", "bob", " \n\t ", EmptyBodyError, "empty_body"),
        ("alice", "bob", "x" * 1001, BodyTooLargeError, "body_too_large"),
        ("alice", "bob", "é" * 501, BodyTooLargeError, "body_too_large"),  # 1002 UTF-8 bytes
        ("alice", "bob", b"bytes", InvalidBodyError, "invalid_body"),
        ("alice", "bob", None, InvalidBodyError, "invalid_body"),
        ("alice", "bob", "nul \x00 inside", InvalidBodyError, "invalid_body"),
        ("alice", "bob", "lone \ud800 surrogate", InvalidBodyError, "invalid_body"),
    ],
)
async def test_rejected_sends_store_nothing_and_say_why(
    broker, engine, bus, waker, sender, to, body, error, code
):
    with bus.subscribe("messages") as all_messages:
        with pytest.raises(error) as info:
            await broker.send(sender, to, body)
        assert all_messages.get_nowait() is None
    assert isinstance(info.value, BrokerError)
    assert info.value.code == code
    assert info.value.what and info.value.hint
    assert _stored(engine) == 0
    assert waker.attempts == []
    assert not _wake_pending(engine, "bob")


async def test_body_limit_is_in_utf8_bytes_inclusive(broker):
    await broker.send("alice", "bob", "x" * 1000)
    await broker.send("alice", "bob", "é" * 500)
    with pytest.raises(BodyTooLargeError, match="1001 bytes"):
        await broker.send("alice", "bob", "x" * 999 + "é")


async def test_per_sender_rate_limit_is_a_token_bucket(broker, engine, clock, settings):
    for i in range(settings.send_rate_per_minute):  # the whole burst
        await broker.send("alice", "bob", f"m{i}")
    with pytest.raises(RateLimitedError) as info:
        await broker.send("alice", "bob", "one too many")
    assert info.value.code == "rate_limited"
    assert info.value.retry_after == pytest.approx(2.0)  # 30/min: one token every 2 s
    assert "30 messages per minute" in info.value.what
    assert _stored(engine) == settings.send_rate_per_minute

    # other senders have their own bucket; the operator has none
    await broker.send("bob", "alice", "unaffected")
    for i in range(100):
        await broker.send(OPERATOR_NAME, "alice", f"op{i}")

    clock.now += 2.0
    await broker.send("alice", "bob", "refilled one")
    with pytest.raises(RateLimitedError):
        await broker.send("alice", "bob", "but only one")
    clock.now += 60
    for i in range(settings.send_rate_per_minute):
        await broker.send("alice", "bob", f"again{i}")


async def test_refused_sends_do_not_use_up_the_rate(broker, settings):
    for _ in range(3 * settings.send_rate_per_minute):
        with pytest.raises(UnknownAgentError):
            await broker.send("alice", "nobody", "hi")
        with pytest.raises(EmptyBodyError):
            await broker.send("alice", "bob", "")
    for i in range(settings.send_rate_per_minute):
        await broker.send("alice", "bob", f"m{i}")


async def test_a_send_repeated_with_its_key_is_stored_and_woken_once(broker, engine, bus, waker):
    key = send_key("turn-1", 0, "bob", "hi bob")
    with bus.subscribe("messages") as all_messages:
        first = await broker.send("alice", "bob", "hi bob", send_key=key)
        published = all_messages.get_nowait()
        assert published is not None and published["id"] == first.id
        assert waker.woken == ["bob"]
        # bob's turn claims it (clearing the wake flag): a new message would wake bob again.
        assert claim_for_turn(engine, "bob", "turn-b") is not None

        # alice's turn is retried and makes the same call: the first message comes back.
        again = await broker.send("alice", "bob", "hi bob", send_key=key)
        assert all_messages.get_nowait() is None  # not published again
    assert (again.id, again.recipient) == (first.id, "bob")
    assert again.pending == 0  # bob has it already
    assert _stored(engine) == 1
    assert waker.attempts == ["bob"] and waker.woken == ["bob"]
    assert not _wake_pending(engine, "bob")

    # Another key (the retry's next call) is a new message, and wakes bob.
    other = await broker.send(
        "alice", "bob", "hi bob", send_key=send_key("turn-1", 1, "bob", "hi bob")
    )
    assert other.id != first.id and _stored(engine) == 2
    assert waker.woken == ["bob", "bob"]


async def test_a_repeated_send_gives_back_its_rate_limit_token(broker, engine, settings):
    key = send_key("turn-1", 0, "bob", "once")
    first = await broker.send("alice", "bob", "once", send_key=key)
    for _ in range(2 * settings.send_rate_per_minute):  # more repeats than the whole burst
        assert (await broker.send("alice", "bob", "once", send_key=key)).id == first.id
    # Only the stored message used a token: the rest of the burst is still there, then no more.
    for i in range(settings.send_rate_per_minute - 1):
        await broker.send("alice", "bob", f"m{i}")
    with pytest.raises(RateLimitedError):
        await broker.send("alice", "bob", "one too many")
    assert _stored(engine) == settings.send_rate_per_minute


async def test_a_failed_wake_keeps_the_message_and_the_next_send_wakes(
    broker, engine, waker, caplog
):
    waker.fail = True
    with caplog.at_level(logging.WARNING, logger="hyperhive.broker"):
        result = await broker.send("alice", "bob", "important")
    assert result.pending == 1
    assert waker.attempts == ["bob"] and waker.woken == []
    assert "could not wake agent bob" in caplog.text
    assert not _wake_pending(engine, "bob")  # cleared, so the next send tries again
    assert pending_count(engine, "bob") == 1

    waker.fail = False
    await broker.send("alice", "bob", "second")
    assert waker.woken == ["bob"]
    assert pending_count(engine, "bob") == 2


async def test_a_failed_wake_is_retried_without_another_send(broker, engine, waker):
    """A message sent while Temporal is down reaches its agent once Temporal is back."""
    waker.fail = True
    await broker.send("alice", "bob", "sent during an outage")
    assert waker.woken == []
    waker.entered.clear()
    await asyncio.wait_for(waker.entered.wait(), 10)  # the broker tries again by itself
    waker.fail = False
    while not waker.woken:
        waker.entered.clear()
        await asyncio.wait_for(waker.entered.wait(), 10)
    assert waker.woken == ["bob"]
    assert pending_count(engine, "bob") == 1


async def test_a_cancelled_send_still_finishes_its_wake_up(broker, engine, waker):
    waker.gate = asyncio.Event()
    sending = asyncio.create_task(broker.send("alice", "bob", "hi"))
    await asyncio.wait_for(waker.entered.wait(), 5)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    waker.gate.set()
    await broker.aclose()
    assert waker.woken == ["bob"]
    assert pending_count(engine, "bob") == 1 and _wake_pending(engine, "bob")


async def test_a_cancelled_send_whose_wake_fails_clears_the_flag(broker, engine, waker):
    waker.gate = asyncio.Event()
    waker.fail = True
    sending = asyncio.create_task(broker.send("alice", "bob", "hi"))
    await asyncio.wait_for(waker.entered.wait(), 5)
    sending.cancel()
    waker.gate.set()
    await broker.aclose()
    assert not _wake_pending(engine, "bob")
    assert pending_count(engine, "bob") == 1


async def test_many_sends_cost_one_wake_up(broker, waker):
    """The embedded Temporal takes ~200 signals/s: a burst must not cost a signal per message
    (throughput itself is measured in bench/, not here)."""
    for i in range(500):
        await broker.send(OPERATOR_NAME, "bob", f"m{i}")
    assert waker.woken == ["bob"]


# ---------------------------------------------------------------------------------------------
# recv


async def test_recv_pops_oldest_first_and_exactly_once(broker):
    assert await broker.recv("bob") is None
    for i in range(3):
        await broker.send("alice", "bob", f"m{i}")
    got = [await broker.recv("bob") for _ in range(4)]
    assert [m.body if m else None for m in got] == ["m0", "m1", "m2", None]


@pytest.mark.parametrize("wait", [-1, 30.5, float("nan"), float("inf"), True, "5", None])
async def test_recv_refuses_a_bad_wait(broker, wait):
    with pytest.raises(InvalidWaitError) as info:
        await broker.recv("bob", wait)
    assert info.value.code == "invalid_wait"
    assert "30" in info.value.what


async def test_recv_by_an_unknown_or_invalid_agent(broker):
    with pytest.raises(UnknownAgentError):
        await broker.recv("nobody")
    with pytest.raises(InvalidNameError):
        await broker.recv("Not A Name")


async def test_long_poll_recv_wakes_on_a_send_not_by_polling(broker):
    # recheck_interval_s=60: only the bus can end this wait early.
    waiting = asyncio.create_task(broker.recv("bob", wait_seconds=20))
    await asyncio.sleep(0.1)  # into recv's wait: nothing announces it
    assert not waiting.done()
    sent_at = time.perf_counter()
    await broker.send("alice", "bob", "wake up")
    got = await asyncio.wait_for(waiting, 5)
    assert got is not None and got.body == "wake up"
    assert time.perf_counter() - sent_at < 1.0


async def test_long_poll_times_out_with_none(broker):
    started = time.perf_counter()
    assert await broker.recv("bob", wait_seconds=0.2) is None
    assert 0.15 <= time.perf_counter() - started < 2


async def test_two_waiting_receivers_one_message(broker):
    first = asyncio.create_task(broker.recv("bob", wait_seconds=1))
    second = asyncio.create_task(broker.recv("bob", wait_seconds=1))
    await asyncio.sleep(0.05)  # both into their wait: nothing announces it
    await broker.send("alice", "bob", "only one")
    results = await asyncio.gather(first, second)
    assert sorted(m.body if m else "" for m in results) == ["", "only one"]


async def test_recv_rechecks_the_store_for_messages_without_a_bus_event(
    engine, bus, waker, settings
):
    broker = Broker(engine, bus, waker, settings, recheck_interval_s=0.05)
    waiting = asyncio.create_task(broker.recv("bob", wait_seconds=5))
    await asyncio.sleep(0.1)  # into recv's wait, past its first looks: nothing announces it
    # stored by another process (no event on this bus)
    await asyncio.to_thread(
        __import__("hyperhive.store.messages", fromlist=["x"]).insert_message,
        engine,
        "alice",
        "bob",
        "from elsewhere",
    )
    got = await asyncio.wait_for(waiting, 5)
    assert got is not None and got.body == "from elsewhere"
    await broker.aclose()


async def test_a_recv_cancelled_while_waiting_leaves_messages_alone(broker, engine):
    waiting = asyncio.create_task(broker.recv("bob", wait_seconds=20))
    await asyncio.sleep(0.05)  # cancel it in its wait, not before it starts: nothing announces it
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await broker.send("alice", "bob", "still here")
    assert pending_count(engine, "bob") == 1


async def test_a_recv_cancelled_during_its_pop_gives_the_message_back(broker, engine):
    await broker.send("alice", "bob", "do not lose me")
    # Hold the SQLite write lock so the pop's BEGIN IMMEDIATE waits, then cancel the recv.
    blocker = engine.connect().execution_options(hyperhive_begin_immediate=True)
    blocker.begin()
    try:
        receiving = asyncio.create_task(broker.recv("bob"))
        await asyncio.sleep(0.2)  # to the locked BEGIN, where it stays: nothing announces it
        assert not receiving.done()
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving
    finally:
        blocker.rollback()
        blocker.close()
    await broker.aclose()  # the pop completes in its thread; the message is put back
    assert pending_count(engine, "bob") == 1
    again = await broker.recv("bob")
    assert again is not None and again.body == "do not lose me"


# ---------------------------------------------------------------------------------------------
# whoami, set_status, drain


async def test_whoami(broker):
    await broker.send("alice", "bob", "x")
    bob = await broker.whoami("bob")
    assert (bob.name, bob.state, bob.pending, bob.is_manager) == ("bob", "idle", 1, False)
    assert (await broker.whoami(MANAGER_NAME)).is_manager
    await broker.send("alice", OPERATOR_NAME, "y")
    operator = await broker.whoami(OPERATOR_NAME)
    assert (operator.name, operator.pending) == (OPERATOR_NAME, 1)
    with pytest.raises(UnknownAgentError):
        await broker.whoami("nobody")


async def test_set_status_stores_and_publishes(broker, bus):
    with bus.subscribe("agent-events:alice") as events:
        await broker.set_status("alice", "reading the spec ◆")
        assert events.get_nowait() == {
            "kind": "status",
            "agent": "alice",
            "status_text": "reading the spec ◆",
        }
    assert (await broker.whoami("alice")).status_text == "reading the spec ◆"
    with pytest.raises(InvalidStatusError):
        await broker.set_status("alice", "x" * (MAX_STATUS_CHARS + 1))
    with pytest.raises(UnknownAgentError):
        await broker.set_status("nobody", "x")
    with pytest.raises(InvalidNameError):
        await broker.set_status(OPERATOR_NAME, "x")
    assert (await broker.whoami("alice")).status_text == "reading the spec ◆"


async def test_drain_pending_wakes_agents_with_messages(broker, engine, waker):
    for agent in ("alice", "bob", MANAGER_NAME):
        await broker.send(OPERATOR_NAME, agent, "x")
    pop_message(engine, "alice")
    set_agent_state(engine, MANAGER_NAME, AgentState.STOPPED)
    waker.woken.clear()
    # as after a restart: the flag may still say "outstanding", drain does not trust it
    assert await broker.drain_pending() == ["bob"]
    assert waker.woken == ["bob"]

    waker.fail = True
    assert await broker.drain_pending() == ["bob"]
    assert not _wake_pending(engine, "bob")


async def test_notify_operator_gets_through_whatever_the_rate_or_size(broker, engine, waker):
    for i in range(30):
        await broker.send("alice", "bob", f"m{i}")
    with pytest.raises(RateLimitedError):
        await broker.send("alice", OPERATOR_NAME, "hi")
    result = await broker.notify_operator("alice", "alice is paused: over budget")
    assert result.recipient == OPERATOR_NAME
    long = await broker.notify_operator("alice", "é" * 5000 + "\x00")
    got = [await broker.recv(OPERATOR_NAME), await broker.recv(OPERATOR_NAME)]
    # hive-c0re wrote it, not alice: the operator must not read it as the agent's own words.
    assert got[0] is not None and got[0].sender == "hive-c0re"
    assert got[0].body == "alice is paused: over budget"
    assert got[1] is not None and got[1].id == long.id
    assert got[1].body.endswith(" … (cut)") and len(got[1].body.encode()) <= 1000
    with pytest.raises(UnknownAgentError):
        await broker.notify_operator("nobody", "x")
    with pytest.raises(EmptyBodyError):
        await broker.notify_operator("alice", " ")


async def test_a_repeated_send_is_answered_even_when_its_sender_is_out_of_tokens(
    broker, engine, settings
):
    key = send_key("turn-1", 0, "bob", "before the burst")
    first = await broker.send("alice", "bob", "before the burst", send_key=key)
    for i in range(settings.send_rate_per_minute - 1):
        await broker.send("alice", "bob", f"m{i}")
    with pytest.raises(RateLimitedError):
        await broker.send("alice", "bob", "new words", send_key=send_key("t", 1, "bob", "x"))
    # The retried turn's repeat sends nothing new: it gets its message back, not "too fast".
    again = await broker.send("alice", "bob", "before the burst", send_key=key)
    assert again.id == first.id
    assert _stored(engine) == settings.send_rate_per_minute
