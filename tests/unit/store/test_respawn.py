"""What re-spawning an agent needs from the store: its last claude session (forgotten by a fresh
re-spawn) and dropping its inbox while keeping the rows. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from hyperhive.store.agents import (
    last_session_id,
    record_session_reset,
    record_turn,
    register_agent,
    turn_events,
)
from hyperhive.store.messages import (
    claim_for_turn,
    discard_undelivered,
    insert_message,
    pending_count,
    recent_messages,
)
from hyperhive.store.tables import utcnow


@pytest.fixture
def engine(migrated_engine):
    register_agent(migrated_engine, "bob", "h")
    register_agent(migrated_engine, "eve", "h")
    return migrated_engine


def test_last_session_is_that_of_the_latest_turn_since_the_last_reset(engine):
    assert last_session_id(engine, "bob") == ""
    first, second, third = (str(uuid.uuid4()) for _ in range(3))
    earlier = utcnow() - timedelta(hours=1)
    record_turn(engine, agent="bob", session_id=first, ended_at=earlier)
    record_turn(engine, agent="bob", session_id=second, ended_at=earlier)
    record_turn(engine, agent="bob", session_id="", ended_at=earlier)  # none reported
    record_turn(engine, agent="eve", session_id=third, ended_at=earlier)
    assert last_session_id(engine, "bob") == second
    assert last_session_id(engine, "eve") == third

    record_session_reset(engine, "bob", "run-1", "fresh re-spawn", discarded_messages=[4])
    record_session_reset(engine, "bob", "run-1", "retried: ignored")  # idempotent
    assert last_session_id(engine, "bob") == "", "a fresh re-spawn starts a new session"
    assert last_session_id(engine, "eve") == third
    [note] = turn_events(engine, "bob")
    assert note.kind == "hive" and note.payload["text"] == "fresh re-spawn"
    assert note.payload["discarded_messages"] == [4]

    record_turn(engine, agent="bob", session_id=third, ended_at=utcnow() + timedelta(seconds=1))
    assert last_session_id(engine, "bob") == third


def test_discard_undelivered_drops_the_inbox_and_keeps_the_rows(engine):
    delivered, _ = insert_message(engine, "operator", "bob", "already read")
    assert claim_for_turn(engine, "bob", "turn-1") is not None
    first, wake = insert_message(engine, "operator", "bob", "one")
    second, _ = insert_message(engine, "eve", "bob", "two")
    insert_message(engine, "operator", "eve", "for eve")
    assert wake and pending_count(engine, "bob") == 2

    assert discard_undelivered(engine, "bob") == [first.id, second.id]
    assert pending_count(engine, "bob") == 0 and pending_count(engine, "eve") == 1
    rows = {m.id: m for m in recent_messages(engine, agent="bob")}
    assert set(rows) == {delivered.id, first.id, second.id}, "the rows stay"
    assert rows[first.id].delivered_at is not None and rows[second.id].delivered_at is not None
    assert discard_undelivered(engine, "bob") == []

    # The wake-up flag went with the inbox: the next message wakes the agent and is its next.
    fresh, wake = insert_message(engine, "operator", "bob", "after")
    assert wake
    claimed = claim_for_turn(engine, "bob", "turn-2")
    assert claimed is not None and claimed.id == fresh.id
