"""Store operations on messages: the inbox of every agent and of the operator.

Synchronous, one short transaction each (callers in async code use `asyncio.to_thread`).
Transactions that read and then write use `begin(write=True)` (SQLite: BEGIN IMMEDIATE, so
they are serialised; PostgreSQL: row locks as commented below).

Delivery is exactly once: a message is handed out by the transaction that sets its
`delivered_at` (`pop_message` for `recv`, `claim_for_turn` for an agent turn), and only one
transaction can do that for a given row.

A turn attempt is a unit. Messages the agent pops with `recv` while one of its turns is in flight
are tagged with that turn (`turn_id = "<turn id>/recv"`). If the attempt dies before it finishes
(hive-c0re killed, claude hung or crashed: the tool results may never have reached the model nor
claude's session), the turn's retry (`claim_for_turn` with the same turn id) or its release
(cancel, give up) puts them back in the inbox with the wake message's claim. So inside a crashed
attempt delivery is at least once, like the wake message itself: the retried claude may see a
message its killed predecessor had already shown the model. A finished attempt (a
`turn_records` row for its wake message, written by `record_turn`) keeps them delivered.

Wake-ups are coalesced with `agents.wake_pending`: `insert_message` reports that a wake-up is
needed only when it flips the flag from false to true, and the turn loop's `claim_for_turn`
clears it in the same transaction as it pops. See `claim_for_turn` for why that is race-free.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hyperhive.domain import OPERATOR_NAME, SYSTEM_SENDER, AgentState
from hyperhive.models import Message
from hyperhive.store.agents import AGENTS, MESSAGES, TURN_RECORDS, NoSuchAgent
from hyperhive.store.db import begin
from hyperhive.store.tables import utcnow

__all__ = [
    "NoSuchAgent",
    "agents_with_pending",
    "claim_for_turn",
    "clear_wake",
    "discard_undelivered",
    "insert_message",
    "insert_message_counted",
    "pending_count",
    "pop_message",
    "recent_messages",
    "recv_tag",
    "release_turn_message",
    "sent_with_key",
    "undeliver_message",
]


def _message(row: sa.Row[Any], **override: Any) -> Message:
    fields = {
        "id": row.id,
        "sender": row.sender,
        "recipient": row.recipient,
        "body": row.body,
        "created_at": row.created_at,
        "delivered_at": row.delivered_at,
    }
    fields.update(override)
    return Message(**fields)


# Prebuilt statements of the hot paths (a send is a handful of them; building expressions per
# call costs more than SQLite takes to run them).
_SENDER_EXISTS = sa.select(AGENTS.c.name).where(AGENTS.c.name == sa.bindparam("sender"))
# FOR UPDATE: see insert_message. SQLite ignores it (the transaction holds the write lock).
_LOCK_RECIPIENT = (
    sa.select(AGENTS.c.wake_pending, AGENTS.c.state)
    .where(AGENTS.c.name == sa.bindparam("recipient"))
    .with_for_update()
)
_INSERT = sa.insert(MESSAGES)
_SET_WAKE = (
    sa.update(AGENTS)
    .where(AGENTS.c.name == sa.bindparam("recipient"), AGENTS.c.wake_pending.is_(False))
    .values(wake_pending=True)
)
_PENDING = (
    sa.select(sa.func.count())
    .select_from(MESSAGES)
    .where(MESSAGES.c.recipient == sa.bindparam("recipient"), MESSAGES.c.delivered_at.is_(None))
)


def insert_message(engine: Engine, sender: str, recipient: str, body: str) -> tuple[Message, bool]:
    """Store a message; return it and whether the recipient's turn loop must be woken.

    The bool is True only for the send that flips the recipient's `wake_pending` from false to
    true (never for the operator, nor for a stopped agent): at most one wake-up is outstanding
    per agent. Raises `NoSuchAgent` (storing nothing) when the sender or the recipient is neither
    the operator nor a registered agent.
    """
    with begin(engine, write=True) as conn:
        return _insert(conn, sender, recipient, body)


def insert_message_counted(
    engine: Engine, sender: str, recipient: str, body: str, *, send_key: str | None = None
) -> tuple[Message, bool, int, bool]:
    """`insert_message`, plus how many messages now wait for the recipient (this one included),
    counted in the same transaction, and whether the message was stored before.

    `send_key` (hyperhive.turn_sends): when a message with this key is stored already (the same
    call of an earlier attempt of the same turn), nothing is stored and that message is returned,
    with no wake-up (its own send woke the recipient).
    """
    with begin(engine, write=True) as conn:
        if send_key is not None:
            row = conn.execute(_BY_SEND_KEY, {"send_key": send_key}).first()
            if row is not None:
                pending = conn.execute(_PENDING, {"recipient": row.recipient}).scalar()
                return _message(row), False, int(pending or 0), True
        message, wake = _insert(conn, sender, recipient, body, send_key)
        pending = conn.execute(_PENDING, {"recipient": recipient}).scalar()
    return message, wake, int(pending or 0), False


_BY_SEND_KEY = sa.select(MESSAGES).where(MESSAGES.c.send_key == sa.bindparam("send_key"))


def sent_with_key(engine: Engine, send_key: str) -> tuple[Message, int] | None:
    """The message stored under `send_key` and its recipient's pending count, or None."""
    with begin(engine) as conn:
        row = conn.execute(_BY_SEND_KEY, {"send_key": send_key}).first()
        if row is None:
            return None
        pending = conn.execute(_PENDING, {"recipient": row.recipient}).scalar()
    return _message(row), int(pending or 0)


def _insert(
    conn: Connection, sender: str, recipient: str, body: str, send_key: str | None = None
) -> tuple[Message, bool]:
    now = utcnow()
    if sender not in (OPERATOR_NAME, SYSTEM_SENDER) and (
        conn.execute(_SENDER_EXISTS, {"sender": sender}).first() is None
    ):
        raise NoSuchAgent(sender)
    wake = False
    if recipient != OPERATOR_NAME:
        # Lock the recipient's row (PostgreSQL; SQLite holds the database write lock already)
        # before looking at the flag, and keep it until our message is committed: a concurrent
        # claim_for_turn clears the flag under the same lock, so either it runs first and we
        # see the flag cleared (and wake), or it runs after our commit and its pop sees this
        # message. Only this one row is locked, so sends cannot deadlock each other.
        agent = conn.execute(_LOCK_RECIPIENT, {"recipient": recipient}).first()
        if agent is None:
            raise NoSuchAgent(recipient)
        if not agent.wake_pending and agent.state != AgentState.STOPPED:
            wake = conn.execute(_SET_WAKE, {"recipient": recipient}).rowcount == 1
    result = conn.execute(
        _INSERT,
        {
            "sender": sender,
            "recipient": recipient,
            "body": body,
            "created_at": now,
            "send_key": send_key,
        },
    )
    key = result.inserted_primary_key
    assert key is not None
    message = Message(id=int(key[0]), sender=sender, recipient=recipient, body=body, created_at=now)
    return message, wake


# PostgreSQL: FOR UPDATE SKIP LOCKED, so that concurrent pops take different rows instead of
# queueing on the head row (and, under READ COMMITTED, finding it delivered once they get it and
# returning nothing). SQLite ignores the clause: BEGIN IMMEDIATE serialises pops.
_OLDEST_UNDELIVERED = (
    sa.select(MESSAGES)
    .where(MESSAGES.c.recipient == sa.bindparam("recipient"), MESSAGES.c.delivered_at.is_(None))
    .order_by(MESSAGES.c.id)
    .limit(1)
    .with_for_update(skip_locked=True)
)
_MARK_DELIVERED = (
    sa.update(MESSAGES)
    .where(MESSAGES.c.id == sa.bindparam("message_id"), MESSAGES.c.delivered_at.is_(None))
    .values(delivered_at=sa.bindparam("now"), turn_id=sa.bindparam("turn_id"))
)


def _pop(conn: Connection, recipient: str, *, turn_id: str | None = None) -> Message | None:
    """Mark the recipient's oldest undelivered message delivered (claimed by `turn_id`)."""
    row = conn.execute(_OLDEST_UNDELIVERED, {"recipient": recipient}).first()
    if row is None:
        return None
    now = utcnow()
    updated = conn.execute(_MARK_DELIVERED, {"message_id": row.id, "now": now, "turn_id": turn_id})
    if updated.rowcount != 1:  # pragma: no cover - the row is locked (or the db serialised)
        raise RuntimeError(f"message {row.id} was delivered by someone else while locked")
    return _message(row, delivered_at=now)


# -- turn attempts and the messages recv'd during them ------------------------------------------

RECV_SUFFIX = "/recv"
_TURN_ID_MAX = 64 - len(RECV_SUFFIX)  # messages.turn_id is String(64); turn ids are uuid4s (36)


def recv_tag(turn_id: str) -> str:
    """The `messages.turn_id` of a message recv'd during turn `turn_id`."""
    return turn_id + RECV_SUFFIX


# FOR UPDATE (PostgreSQL): recv pops, turn claims and releases of one agent are serialised on
# its row, so a put-back never misses a recv committing concurrently. SQLite ignores it.
_LOCK_AGENT = (
    sa.select(AGENTS.c.name).where(AGENTS.c.name == sa.bindparam("agent")).with_for_update()
)
# The agent's most recent turn claim or turn-tagged recv, newest delivery first: a backward walk
# of ix_messages_inbox (recipient, delivered_at, id) that stops at the first turn-tagged row
# (during a turn: the recvs since its claim, then the claim).
_LATEST_TURN_ROW = (
    sa.select(MESSAGES.c.turn_id)
    .where(
        MESSAGES.c.recipient == sa.bindparam("recipient"),
        MESSAGES.c.delivered_at.is_not(None),
        MESSAGES.c.turn_id.is_not(None),
    )
    .order_by(MESSAGES.c.delivered_at.desc(), MESSAGES.c.id.desc())
    .limit(1)
)
# The wake message a turn claimed (ix_messages_turn_id).
_CLAIMED_BY = (
    sa.select(MESSAGES)
    .where(MESSAGES.c.turn_id == sa.bindparam("turn_id"))
    .order_by(MESSAGES.c.id)
    .limit(1)
)
# The agent's latest finished turn (ix_turn_records_agent; the agent's turns run one at a time).
_LATEST_RECORD = (
    sa.select(TURN_RECORDS.c.message_id, TURN_RECORDS.c.ended_at)
    .where(TURN_RECORDS.c.agent == sa.bindparam("agent"))
    .order_by(TURN_RECORDS.c.id.desc())
    .limit(1)
)
_PUT_BACK_RECVS = (
    sa.update(MESSAGES)
    .where(
        MESSAGES.c.turn_id == sa.bindparam("tag"),
        MESSAGES.c.delivered_at >= sa.bindparam("since"),
    )
    .values(delivered_at=None, turn_id=None)
)


def _attempt_end(conn: Connection, agent: str, claim: sa.Row[Any]) -> datetime | None:
    """When the current attempt of the turn holding `claim` (its wake message) finished, or
    None while it has not.

    The claim's `delivered_at` is when the current attempt started (see `claim_for_turn`); a
    finished attempt leaves a `turn_records` row for the message, ended after that."""
    record = conn.execute(_LATEST_RECORD, {"agent": agent}).first()
    if (
        record is None
        or record.message_id != claim.id
        or claim.delivered_at is None
        or record.ended_at < claim.delivered_at
    ):
        return None
    ended: datetime = record.ended_at
    return ended


def _turn_in_flight(conn: Connection, agent: str) -> str | None:
    """The id of the agent's turn whose current attempt is running, if any: its latest claim,
    still held (not released) and not finished."""
    latest = conn.execute(_LATEST_TURN_ROW, {"recipient": agent}).first()
    if latest is None:
        return None
    turn_id = str(latest.turn_id).removesuffix(RECV_SUFFIX)
    if len(turn_id) > _TURN_ID_MAX:  # no room for the tag: recv'd untagged, as outside turns
        return None
    claim = conn.execute(_CLAIMED_BY, {"turn_id": turn_id}).first()
    if claim is None or claim.recipient != agent or claim.delivered_at is None:
        return None
    if _attempt_end(conn, agent, claim) is not None:
        return None
    return turn_id


def _put_back_attempt_recvs(conn: Connection, agent: str, turn_id: str, claim: sa.Row[Any]) -> int:
    """Undeliver what `recv` handed out during the current attempt of `turn_id` if that attempt
    did not finish (what earlier, finished attempts recv'd was recv'd before the claim's
    `delivered_at` and stays delivered). Returns how many went back."""
    if claim.delivered_at is None or _attempt_end(conn, agent, claim) is not None:
        return 0
    result = conn.execute(_PUT_BACK_RECVS, {"tag": recv_tag(turn_id), "since": claim.delivered_at})
    return int(result.rowcount)


def pop_message(engine: Engine, recipient: str) -> Message | None:
    """Hand out the recipient's oldest undelivered message (marking it delivered), or None.

    During a turn attempt of the recipient the message is tagged with the turn (`recv_tag`), so
    that the attempt's retry or release puts it back should the attempt not finish."""
    with begin(engine, write=True) as conn:
        tag = None
        if recipient != OPERATOR_NAME:
            conn.execute(_LOCK_AGENT, {"agent": recipient})
            turn_id = _turn_in_flight(conn, recipient)
            tag = recv_tag(turn_id) if turn_id is not None else None
        return _pop(conn, recipient, turn_id=tag)


def claim_for_turn(engine: Engine, agent: str, turn_id: str) -> Message | None:
    """The message turn `turn_id` of `agent` works on: popped now, or the one it claimed before.

    Idempotent: a retried turn activity calling this again with the same `turn_id` gets the same
    message back. None means the inbox is empty: the turn loop may go idle.

    A retry starts a new attempt of the turn. If the previous attempt did not finish (no
    `turn_records` row for the message since the attempt started: killed, hung, crashed), the
    messages it popped with `recv` go back to the inbox in this transaction, so the retried
    claude can recv them again (at least once inside a crashed attempt; the model may have seen
    some of them already, as it may have seen the wake prompt). They count as pending, and the
    turn loop looks at the inbox after every turn, so whatever the retry leaves there gets a
    turn of its own. If the previous attempt finished (a rate limit or a login error reruns the
    same turn), what it recv'd reached claude's session and stays delivered; the message's
    `delivered_at` moves to now, the start of the new attempt.

    Why clearing `wake_pending` here, first, in the same transaction as the pop, makes
    coalescing race-free. The flag may be set while the inbox is empty (the agent's own `recv`
    took the message whose send set it). The clearing UPDATE takes the agent's row lock
    (PostgreSQL; on SQLite the transaction holds the database write lock) and keeps it to
    commit, and `insert_message` takes the same lock before it looks at the flag and keeps it
    until its message is committed. So for any send, either
      - it holds the lock first: this claim waits for its commit, and the pop (which reads the
        inbox after the clear, in a fresh snapshot) sees its message; or
      - this claim commits first: the send then finds the flag cleared, sets it and wakes the
        agent.
    A send can therefore never see the flag still set (and skip its wake-up) while this claim
    goes on to find the inbox empty without its message. Popping before clearing, or clearing
    in a separate transaction after the pop, opens exactly that window on PostgreSQL (READ
    COMMITTED: the pop's snapshot misses the send's uncommitted row, and the send's flag check
    saw the old value), stranding the message with no wake-up outstanding. (The same lock
    serialises the put-back with the agent's `recv` pops.)
    """
    with begin(engine, write=True) as conn:
        conn.execute(sa.update(AGENTS).where(AGENTS.c.name == agent).values(wake_pending=False))
        row = conn.execute(
            _CLAIMED_BY.where(MESSAGES.c.recipient == agent), {"turn_id": turn_id}
        ).first()
        if row is not None:
            ended = _attempt_end(conn, agent, row)
            if ended is not None:
                # Strictly after the finished attempt, even on a coarse or stepped-back clock.
                now = max(utcnow(), ended + timedelta(microseconds=1))
                conn.execute(
                    sa.update(MESSAGES).where(MESSAGES.c.id == row.id).values(delivered_at=now)
                )
                return _message(row, delivered_at=now)
            _put_back_attempt_recvs(conn, agent, turn_id, row)
            return _message(row)
        return _pop(conn, agent, turn_id=turn_id)


def release_turn_message(engine: Engine, turn_id: str) -> bool:
    """Give back the message a (cancelled) turn claimed: undelivered again, at the head of the
    inbox (messages are handed out by id). False when that turn holds no message.

    What the turn's unfinished attempt popped with `recv` goes back too (see `claim_for_turn`).
    This does not wake the agent: the caller (the turn loop) claims again when it resumes.
    """
    with begin(engine, write=True) as conn:
        row = conn.execute(_CLAIMED_BY, {"turn_id": turn_id}).first()
        if row is None:
            return False
        conn.execute(_LOCK_AGENT, {"agent": row.recipient})
        _put_back_attempt_recvs(conn, row.recipient, turn_id, row)
        result = conn.execute(
            sa.update(MESSAGES)
            .where(MESSAGES.c.turn_id == turn_id)
            .values(delivered_at=None, turn_id=None)
        )
        return bool(result.rowcount)


def undeliver_message(engine: Engine, message_id: int) -> bool:
    """Put back a message popped by `pop_message` whose receiver never got it (the `recv` was
    cancelled while popping). Messages claimed by a turn are left alone (see
    `release_turn_message`). False when there was nothing to put back."""
    with begin(engine, write=True) as conn:
        result = conn.execute(
            sa.update(MESSAGES)
            .where(
                MESSAGES.c.id == message_id,
                sa.or_(MESSAGES.c.turn_id.is_(None), MESSAGES.c.turn_id.endswith(RECV_SUFFIX)),
                MESSAGES.c.delivered_at.is_not(None),
            )
            .values(delivered_at=None, turn_id=None)
        )
        return bool(result.rowcount)


def discard_undelivered(engine: Engine, recipient: str) -> list[int]:
    """Drop the recipient's inbox (a fresh re-spawn): every message waiting for it is marked
    delivered without being handed to anyone (no turn), and its wake-up flag is cleared. The rows
    stay, as the record of what was sent; returns their ids, oldest first."""
    with begin(engine, write=True) as conn:
        conn.execute(_LOCK_AGENT, {"agent": recipient})
        ids = [
            int(row.id)
            for row in conn.execute(
                sa.select(MESSAGES.c.id)
                .where(MESSAGES.c.recipient == recipient, MESSAGES.c.delivered_at.is_(None))
                .order_by(MESSAGES.c.id)
            )
        ]
        if ids:
            conn.execute(
                sa.update(MESSAGES)
                .where(MESSAGES.c.recipient == recipient, MESSAGES.c.delivered_at.is_(None))
                .values(delivered_at=utcnow(), turn_id=None)
            )
        conn.execute(sa.update(AGENTS).where(AGENTS.c.name == recipient).values(wake_pending=False))
    return ids


def clear_wake(engine: Engine, agent: str) -> None:
    """Forget the agent's outstanding wake-up (its signal failed), so the next send tries again."""
    with begin(engine, write=True) as conn:
        conn.execute(sa.update(AGENTS).where(AGENTS.c.name == agent).values(wake_pending=False))


def pending_count(engine: Engine, recipient: str) -> int:
    """How many messages wait, undelivered, for `recipient`."""
    with begin(engine) as conn:
        found = conn.execute(_PENDING, {"recipient": recipient}).scalar()
    return int(found or 0)


def agents_with_pending(engine: Engine) -> list[str]:
    """Agents (not stopped) with undelivered messages, by name: to wake after a restart."""
    with begin(engine) as conn:
        rows = conn.execute(
            sa.select(AGENTS.c.name)
            .where(
                AGENTS.c.state != AgentState.STOPPED,
                sa.exists().where(
                    MESSAGES.c.recipient == AGENTS.c.name, MESSAGES.c.delivered_at.is_(None)
                ),
            )
            .order_by(AGENTS.c.name)
        ).all()
    return [row.name for row in rows]


def recent_messages(engine: Engine, *, agent: str | None = None, limit: int = 100) -> list[Message]:
    """The newest messages first (at most `limit`), all of them or those from/to `agent`."""
    query = sa.select(MESSAGES).order_by(MESSAGES.c.id.desc()).limit(max(0, limit))
    if agent is not None:
        query = query.where(sa.or_(MESSAGES.c.sender == agent, MESSAGES.c.recipient == agent))
    with begin(engine) as conn:
        rows = conn.execute(query).all()
    return [_message(row) for row in rows]


def messages_after(engine: Engine, after_id: int, *, limit: int = 200) -> list[Message]:
    """Messages with id > `after_id`, oldest first: the dashboard's flow resumes from here."""
    query = (
        sa.select(MESSAGES)
        .where(MESSAGES.c.id > after_id)
        .order_by(MESSAGES.c.id)
        .limit(max(0, limit))
    )
    with begin(engine) as conn:
        rows = conn.execute(query).all()
    return [_message(row) for row in rows]
