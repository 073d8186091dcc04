"""Agent, turn-event and turn-record store operations on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from hyperhive.domain import MANAGER_NAME, OPERATOR_NAME, AgentState, InvalidName, TurnErrorClass
from hyperhive.store.agents import (
    MAX_EVENT_TEXT,
    NoSuchAgent,
    add_spend,
    append_turn_events,
    get_agent,
    list_agents,
    record_turn,
    register_agent,
    set_agent_state,
    set_status_text,
    touch_activity,
    turn_events,
)
from hyperhive.store.db import session
from hyperhive.store.messages import insert_message, pop_message
from hyperhive.store.tables import AgentRow, TurnRecordRow, utcnow


@pytest.fixture
def engine(migrated_engine):
    return migrated_engine


def _row(engine: sa.Engine, name: str) -> AgentRow:
    with session(engine) as s:
        row = s.get(AgentRow, name)
        assert row is not None
        return row


def test_register_is_idempotent_and_validates_the_name(engine):
    info = register_agent(engine, "alice", "local")
    assert (info.name, info.state, info.status_text, info.pending) == ("alice", "idle", "", 0)
    assert not info.is_manager
    set_status_text(engine, "alice", "busy")
    again = register_agent(engine, "alice", "elsewhere")
    assert again.status_text == "busy"
    assert _row(engine, "alice").host_id == "local"
    assert register_agent(engine, MANAGER_NAME, "local").is_manager
    for bad in ("", "Alice", "waytoolongname", OPERATOR_NAME):
        with pytest.raises(InvalidName):
            register_agent(engine, bad, "local")
    assert [a.name for a in list_agents(engine)] == ["alice", MANAGER_NAME]


def test_concurrent_registration_of_one_name_makes_one_agent(engine):
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def register() -> None:
        try:
            barrier.wait()
            register_agent(engine, "bob", "local")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=register) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert [a.name for a in list_agents(engine)] == ["bob"]


def test_get_and_list_show_state_status_and_pending(engine):
    register_agent(engine, "alice", "local")
    register_agent(engine, "bob", "local")
    assert get_agent(engine, "nobody") is None
    insert_message(engine, "alice", "bob", "one")
    insert_message(engine, "alice", "bob", "two")
    insert_message(engine, "bob", "alice", "three")
    pop_message(engine, "alice")
    set_agent_state(engine, "bob", AgentState.RUNNING, status_text="on it")
    bob = get_agent(engine, "bob")
    assert bob is not None
    assert (bob.state, bob.status_text, bob.pending) == ("running", "on it", 2)
    listed = {a.name: a for a in list_agents(engine)}
    assert listed["bob"] == bob
    assert listed["alice"].pending == 0


def test_updates_of_an_unknown_agent_raise(engine):
    with pytest.raises(NoSuchAgent):
        set_agent_state(engine, "ghost", AgentState.PAUSED)
    with pytest.raises(NoSuchAgent):
        set_status_text(engine, "ghost", "x")
    with pytest.raises(NoSuchAgent):
        touch_activity(engine, "ghost")
    with pytest.raises(NoSuchAgent):
        add_spend(engine, "ghost", 1.0)


def test_set_state_keeps_status_text_unless_given(engine):
    register_agent(engine, "alice", "local")
    set_status_text(engine, "alice", "reading")
    set_agent_state(engine, "alice", AgentState.PAUSED)
    row = _row(engine, "alice")
    assert (row.state, row.status_text) == (AgentState.PAUSED, "reading")
    with pytest.raises(ValueError):
        set_agent_state(engine, "alice", "sleepy")  # type: ignore[arg-type]


def test_touch_activity_and_concurrent_spend(engine):
    register_agent(engine, "alice", "local")
    assert _row(engine, "alice").last_activity_at is None
    before = utcnow()
    touch_activity(engine, "alice")
    touched = _row(engine, "alice").last_activity_at
    assert touched is not None and before - timedelta(seconds=1) <= touched

    def spend() -> None:
        for _ in range(25):
            add_spend(engine, "alice", 0.5)

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert _row(engine, "alice").spend_total_usd == pytest.approx(50.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            add_spend(engine, "alice", bad)


def test_turn_events_are_idempotent_per_turn_and_seq(engine):
    events: list[tuple[int, str, dict[str, Any]]] = [
        (0, "system", {"subtype": "init", "session_id": "s1"}),
        (1, "assistant", {"message": {"content": [{"type": "text", "text": "héllo ◆ \x00"}]}}),
        (2, "hive", {"note": "turn started"}),
    ]
    assert append_turn_events(engine, "alice", "t1", events) == 3
    # a retried turn re-appends the same seqs (and one more): only the new one is stored
    retried: list[tuple[int, str, dict[str, Any]]] = [
        (1, "assistant", {"other": True}),
        (3, "result", {"total_cost_usd": 0.01}),
    ]
    assert append_turn_events(engine, "alice", "t1", retried) == 1
    assert append_turn_events(engine, "alice", "t1", []) == 0
    append_turn_events(engine, "bob", "t2", [(0, "system", {})])

    got = turn_events(engine, "alice")
    assert [(e.seq, e.kind) for e in got] == [
        (0, "system"),
        (1, "assistant"),
        (2, "hive"),
        (3, "result"),
    ]
    assert got[1].payload == events[1][2]  # the first copy stays
    assert all(e.agent == "alice" and e.turn_id == "t1" for e in got)
    assert [e.id for e in got] == sorted(e.id for e in got)
    page = turn_events(engine, "alice", after_id=got[1].id, limit=1)
    assert [e.seq for e in page] == [2]
    assert turn_events(engine, "alice", after_id=got[-1].id) == []


def test_many_turn_events_in_one_append(engine):
    events = [(i, "stream_event", {"i": i}) for i in range(1200)]
    assert append_turn_events(engine, "alice", "big", events) == 1200
    assert append_turn_events(engine, "alice", "big", events) == 0
    assert len(turn_events(engine, "alice", limit=5000)) == 1200


def test_a_huge_text_in_an_event_is_kept_cut_and_says_so(engine):
    # A Read of a large file: the stored event is what the page shows, not the transcript.
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "z" * 100_000}
    payload = {"type": "user", "session_id": "s1", "message": {"content": [result]}}
    append_turn_events(engine, "alice", "t1", [(0, "user", payload)])
    (event,) = turn_events(engine, "alice")
    (kept,) = event.payload["message"]["content"]
    assert kept["content"].startswith("z" * MAX_EVENT_TEXT)
    assert kept["content"].endswith(f"[{100_000 - MAX_EVENT_TEXT} more characters not kept]")
    assert kept["tool_use_id"] == "t1" and event.payload["session_id"] == "s1"


def test_record_turn(engine):
    started = utcnow()
    record_id = record_turn(
        engine,
        agent="alice",
        message_id=7,
        session_id="s1",
        started_at=started,
        ended_at=started + timedelta(seconds=3),
        duration_ms=3000,
        cost_usd=0.25,
        input_tokens=10,
        output_tokens=20,
        error_class=TurnErrorClass.HUNG,
        error_message="no output for 600 s",
    )
    with session(engine) as s:
        row = s.get(TurnRecordRow, record_id)
    assert row is not None
    assert (row.agent, row.message_id, row.cost_usd, row.error_class) == (
        "alice",
        7,
        0.25,
        TurnErrorClass.HUNG,
    )
    assert row.ended_at - row.started_at == timedelta(seconds=3)
