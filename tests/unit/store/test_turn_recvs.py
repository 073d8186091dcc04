"""Messages an agent pops with `recv` during a turn belong to that turn's attempt: a retry or a
release of an attempt that did not finish puts them back in the inbox; a finished attempt keeps
them. On SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from hyperhive.domain import OPERATOR_NAME
from hyperhive.store.agents import MESSAGES, record_turn, register_agent
from hyperhive.store.db import begin
from hyperhive.store.messages import (
    agents_with_pending,
    claim_for_turn,
    insert_message,
    pending_count,
    pop_message,
    recv_tag,
    release_turn_message,
    undeliver_message,
)

TURN = "0b3c6f3e-6a8e-4f55-9d3a-8e1f0b6f7a21"  # turn ids are uuid4 strings
RETRY_TURN = "5d1f0a9c-2b7e-4c1d-8f3a-6e2b9c0d4f15"


@pytest.fixture
def engine(migrated_engine):
    for name in ("alice", "bob", "carol"):
        register_agent(migrated_engine, name, "local")
    return migrated_engine


def _row(engine: sa.Engine, message_id: int) -> sa.Row[Any, Any]:
    with begin(engine) as conn:
        return conn.execute(
            sa.select(MESSAGES.c.delivered_at, MESSAGES.c.turn_id).where(
                MESSAGES.c.id == message_id
            )
        ).one()


def _wake_pending(engine: sa.Engine, agent: str) -> bool:
    with begin(engine) as conn:
        return bool(
            conn.execute(
                sa.text("SELECT wake_pending FROM agents WHERE name = :n"), {"n": agent}
            ).scalar_one()
        )


def _send(engine: sa.Engine, n: int, to: str = "bob") -> list[int]:
    return [insert_message(engine, "alice", to, f"m{i}")[0].id for i in range(n)]


def _finish(engine: sa.Engine, agent: str, message_id: int) -> None:
    """What run_turn does at the end of an attempt that got a result from claude."""
    record_turn(engine, agent=agent, message_id=message_id, duration_ms=5)


def test_the_recv_tag_fits_the_turn_id_column():
    assert len(recv_tag(TURN)) <= 64


def test_recv_outside_a_turn_is_untagged(engine):
    ids = _send(engine, 2)
    got = pop_message(engine, "bob")
    assert got is not None and got.id == ids[0]
    assert _row(engine, ids[0]).turn_id is None
    # the operator has no turns
    op, _ = insert_message(engine, "alice", OPERATOR_NAME, "hi")
    assert pop_message(engine, OPERATOR_NAME) is not None
    assert _row(engine, op.id).turn_id is None


def test_recv_during_a_turn_is_tagged_with_it(engine):
    wake, r1, r2 = _send(engine, 3)
    claimed = claim_for_turn(engine, "bob", TURN)
    assert claimed is not None and claimed.id == wake
    assert [pop_message(engine, "bob").id for _ in range(2)] == [r1, r2]  # type: ignore[union-attr]
    assert pop_message(engine, "bob") is None
    assert _row(engine, r1).turn_id == recv_tag(TURN)
    assert _row(engine, r2).turn_id == recv_tag(TURN)
    assert _row(engine, wake).turn_id == TURN
    # another agent's turn does not tag carol's recvs
    (c,) = _send(engine, 1, to="carol")
    assert pop_message(engine, "carol") is not None
    assert _row(engine, c).turn_id is None


def test_a_retry_puts_back_what_the_killed_attempt_recvd(engine):
    wake, r1, r2, later = _send(engine, 4)
    assert claim_for_turn(engine, "bob", TURN) is not None
    pop_message(engine, "bob")
    pop_message(engine, "bob")
    assert pending_count(engine, "bob") == 1
    again = claim_for_turn(engine, "bob", TURN)  # the retried activity
    assert again is not None and again.id == wake and again.body == "m0"
    assert pending_count(engine, "bob") == 3
    for message_id in (r1, r2):
        row = _row(engine, message_id)
        assert row.delivered_at is None and row.turn_id is None
    assert agents_with_pending(engine) == ["bob"]
    # the retried claude recvs them again, in order, tagged again
    assert [pop_message(engine, "bob").id for _ in range(3)] == [r1, r2, later]  # type: ignore[union-attr]
    assert all(_row(engine, m).turn_id == recv_tag(TURN) for m in (r1, r2, later))
    # a second crash: all three go back again
    assert claim_for_turn(engine, "bob", TURN) is not None
    assert pending_count(engine, "bob") == 3


def test_what_a_retry_leaves_unrecvd_gets_a_turn_of_its_own(engine):
    wake, r1 = _send(engine, 2)
    claim_for_turn(engine, "bob", TURN)
    pop_message(engine, "bob")
    assert claim_for_turn(engine, "bob", TURN) is not None  # retry; r1 back in the inbox
    # the claim cleared the wake flag: a new send asks for a wake-up (so does the turn loop,
    # which looks at the inbox after every turn)
    assert _wake_pending(engine, "bob") is False
    _finish(engine, "bob", wake)
    nxt = claim_for_turn(engine, "bob", RETRY_TURN)
    assert nxt is not None and nxt.id == r1
    assert _row(engine, r1).turn_id == RETRY_TURN
    assert pending_count(engine, "bob") == 0


def test_release_puts_back_the_claim_and_what_its_attempt_recvd(engine):
    wake, r1, r2 = _send(engine, 3)
    claim_for_turn(engine, "bob", TURN)
    pop_message(engine, "bob")
    assert release_turn_message(engine, TURN) is True
    assert pending_count(engine, "bob") == 3
    for message_id in (wake, r1):
        row = _row(engine, message_id)
        assert row.delivered_at is None and row.turn_id is None
    assert release_turn_message(engine, TURN) is False
    # nothing in flight any more: a recv now is untagged
    got = pop_message(engine, "bob")
    assert got is not None and got.id == wake and _row(engine, wake).turn_id is None
    assert _row(engine, r2).delivered_at is None


def test_a_finished_turn_keeps_its_recvs(engine):
    wake, r1, r2, r3 = _send(engine, 4)
    claim_for_turn(engine, "bob", TURN)
    pop_message(engine, "bob")
    _finish(engine, "bob", wake)
    # no turn in flight: untagged, as outside a turn
    got = pop_message(engine, "bob")
    assert got is not None and got.id == r2 and _row(engine, r2).turn_id is None
    assert release_turn_message(engine, TURN) is True  # (the loop never does this; still safe)
    assert _row(engine, r1).delivered_at is not None
    assert _row(engine, r1).turn_id == recv_tag(TURN)
    # the next turn's recvs are its own
    claim_for_turn(engine, "bob", RETRY_TURN)  # claims the released wake message again
    got = pop_message(engine, "bob")
    assert got is not None and got.id == r3 and _row(engine, r3).turn_id == recv_tag(RETRY_TURN)
    assert claim_for_turn(engine, "bob", RETRY_TURN) is not None  # a crash of that attempt
    assert _row(engine, r3).delivered_at is None
    assert _row(engine, r1).delivered_at is not None


def test_a_rerun_after_a_finished_attempt_keeps_its_recvs_and_tags_the_new_ones(engine):
    """A rate limit or a login error ends the attempt with a turn record, and the workflow
    reruns the same turn id: what the finished attempt recv'd is in claude's session."""
    wake, r1, r2 = _send(engine, 3)
    first = claim_for_turn(engine, "bob", TURN)
    assert first is not None
    pop_message(engine, "bob")
    _finish(engine, "bob", wake)  # rate limited
    rerun = claim_for_turn(engine, "bob", TURN)
    assert rerun is not None and rerun.id == wake
    assert rerun.delivered_at is not None and first.delivered_at is not None
    assert rerun.delivered_at > first.delivered_at  # the new attempt's start
    assert _row(engine, r1).delivered_at is not None  # kept
    got = pop_message(engine, "bob")
    assert got is not None and got.id == r2 and _row(engine, r2).turn_id == recv_tag(TURN)
    # the rerun is killed: only its own recv goes back
    assert claim_for_turn(engine, "bob", TURN) is not None
    assert _row(engine, r2).delivered_at is None
    assert _row(engine, r1).delivered_at is not None
    assert pending_count(engine, "bob") == 1


def test_undeliver_gives_back_a_tagged_recv_pop(engine):
    _wake, r1 = _send(engine, 2)
    claim_for_turn(engine, "bob", TURN)
    assert pop_message(engine, "bob") is not None
    assert undeliver_message(engine, r1) is True
    row = _row(engine, r1)
    assert row.delivered_at is None and row.turn_id is None
    assert undeliver_message(engine, r1) is False


def test_recvs_racing_retries_lose_nothing(engine):
    """Concurrent recv pops and retry claims of the same turn: every message ends up either
    handed to the current attempt (tagged and delivered) or back in the inbox; none is left
    delivered outside the attempt."""
    _wake, *rest = _send(engine, 41)
    claim_for_turn(engine, "bob", TURN)
    stop = threading.Event()
    errors: list[BaseException] = []

    def popper() -> None:
        try:
            while not stop.is_set():
                pop_message(engine, "bob")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=popper) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            assert claim_for_turn(engine, "bob", TURN) is not None
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    # one last retry: whatever the poppers took goes back, all of it
    claim_for_turn(engine, "bob", TURN)
    assert pending_count(engine, "bob") == len(rest)
