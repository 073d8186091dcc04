"""Message store operations on SQLite and on a throwaway PostgreSQL: order, exactly-once
delivery under concurrency, turn claims, and the coalesced wake-up flag."""

from __future__ import annotations

import queue
import random
import threading
import uuid

import pytest
import sqlalchemy as sa

from hyperhive.domain import OPERATOR_NAME, AgentState
from hyperhive.models import Message
from hyperhive.store.agents import NoSuchAgent, register_agent, set_agent_state
from hyperhive.store.db import begin
from hyperhive.store.messages import (
    agents_with_pending,
    claim_for_turn,
    clear_wake,
    insert_message,
    insert_message_counted,
    pending_count,
    pop_message,
    recent_messages,
    release_turn_message,
    undeliver_message,
)
from hyperhive.turn_sends import send_key


@pytest.fixture
def engine(migrated_engine):
    for name in ("alice", "bob", "carol"):
        register_agent(migrated_engine, name, "local")
    return migrated_engine


def _wake_pending(engine: sa.Engine, agent: str) -> bool:
    with begin(engine) as conn:
        return bool(
            conn.execute(
                sa.text("SELECT wake_pending FROM agents WHERE name = :n"), {"n": agent}
            ).scalar_one()
        )


def _message_count(engine: sa.Engine) -> int:
    with begin(engine) as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one())


# ---------------------------------------------------------------------------------------------
# insert and pop


def test_pop_hands_out_oldest_first_and_marks_delivered(engine):
    first, _ = insert_message(engine, "alice", "bob", "one")
    second, _ = insert_message(engine, "carol", "bob", "two ◆")
    insert_message(engine, "alice", "carol", "not for bob")
    assert pending_count(engine, "bob") == 2

    got = pop_message(engine, "bob")
    assert got is not None
    assert (got.id, got.sender, got.body) == (first.id, "alice", "one")
    assert got.delivered_at is not None and got.delivered_at >= got.created_at
    got2 = pop_message(engine, "bob")
    assert got2 is not None and (got2.id, got2.body) == (second.id, "two ◆")
    assert pop_message(engine, "bob") is None
    assert pending_count(engine, "bob") == 0
    assert pending_count(engine, "carol") == 1


def test_each_senders_messages_arrive_in_the_order_sent(engine):
    sent: dict[str, list[str]] = {"alice": [], "carol": []}
    rng = random.Random(7)
    for i in range(60):
        sender = rng.choice(["alice", "carol"])
        body = f"{sender}-{i}"
        insert_message(engine, sender, "bob", body)
        sent[sender].append(body)
    got: dict[str, list[str]] = {"alice": [], "carol": []}
    while (m := pop_message(engine, "bob")) is not None:
        got[m.sender].append(m.body)
    assert got == sent


def test_operator_is_a_sender_and_a_recipient_and_never_woken(engine):
    m, wake = insert_message(engine, OPERATOR_NAME, "bob", "from the human")
    assert wake is True
    m2, wake2 = insert_message(engine, "bob", OPERATOR_NAME, "to the human")
    assert wake2 is False
    popped = pop_message(engine, OPERATOR_NAME)
    assert popped is not None and popped.id == m2.id and popped.sender == "bob"
    assert m.recipient == "bob"


def test_unknown_sender_or_recipient_stores_nothing(engine):
    with pytest.raises(NoSuchAgent) as info:
        insert_message(engine, "alice", "nobody", "x")
    assert info.value.name == "nobody"
    with pytest.raises(NoSuchAgent) as info:
        insert_message(engine, "ghost", "bob", "x")
    assert info.value.name == "ghost"
    assert _message_count(engine) == 0
    assert not _wake_pending(engine, "bob")


@pytest.mark.parametrize("threads", [8])
def test_concurrent_pops_deliver_each_message_exactly_once(engine, threads):
    total = 500
    ids = {insert_message(engine, "alice", "bob", f"m{i}")[0].id for i in range(total)}
    barrier = threading.Barrier(threads)
    got: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def popper(slot: int) -> None:
        try:
            barrier.wait()
            while (m := pop_message(engine, "bob")) is not None:
                got[slot].append(m.id)
        except BaseException as e:
            errors.append(e)

    workers = [threading.Thread(target=popper, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not errors
    delivered = [i for ids_ in got for i in ids_]
    assert len(delivered) == total, "a message was delivered twice or not at all"
    assert set(delivered) == ids
    for ids_ in got:  # each popper sees the inbox in order
        assert ids_ == sorted(ids_)
    assert pending_count(engine, "bob") == 0


# ---------------------------------------------------------------------------------------------
# send keys: the same call of a retried turn is stored once


def _send_keys(engine: sa.Engine) -> list[str | None]:
    with begin(engine) as conn:
        return list(conn.execute(sa.text("SELECT send_key FROM messages ORDER BY id")).scalars())


def test_a_repeated_send_key_stores_nothing_and_returns_the_first_message(engine):
    key = send_key("turn-1", 0, "bob", "hi bob")
    first, wake, pending, repeated = insert_message_counted(
        engine, "alice", "bob", "hi bob", send_key=key
    )
    assert (wake, pending, repeated) == (True, 1, False)

    again, wake2, pending2, repeated2 = insert_message_counted(
        engine, "alice", "bob", "hi bob", send_key=key
    )
    assert again == first  # the same id, sender, recipient, body and time
    assert (wake2, pending2, repeated2) == (False, 1, True)
    assert _message_count(engine) == 1
    assert _send_keys(engine) == [key]

    # Also after bob read it: the first is returned (delivered), and bob has nothing new.
    popped = pop_message(engine, "bob")
    assert popped is not None and popped.id == first.id
    late, wake3, pending3, repeated3 = insert_message_counted(
        engine, "alice", "bob", "hi bob", send_key=key
    )
    assert late.id == first.id and late.delivered_at is not None
    assert (wake3, pending3, repeated3) == (False, 0, True)
    assert _message_count(engine) == 1 and pending_count(engine, "bob") == 0


def test_different_send_keys_store_separately(engine):
    keys = [send_key("turn-1", n, "bob", "same words") for n in range(3)]
    ids = [
        insert_message_counted(engine, "alice", "bob", "same words", send_key=k)[0].id for k in keys
    ]
    assert len(set(ids)) == 3
    assert _send_keys(engine) == keys
    assert pending_count(engine, "bob") == 3


def test_without_a_send_key_every_send_is_stored(engine):
    results = [
        insert_message_counted(engine, "alice", "bob", "hi", send_key=None) for _ in range(3)
    ]
    assert [pending for _, _, pending, _ in results] == [1, 2, 3]
    assert [repeated for _, _, _, repeated in results] == [False, False, False]
    assert len({message.id for message, _, _, _ in results}) == 3
    insert_message(engine, "alice", "bob", "hi")  # the plain insert keeps no key either
    assert _send_keys(engine) == [None, None, None, None]


# ---------------------------------------------------------------------------------------------
# the wake-up flag and turn claims


def test_only_the_first_send_to_an_idle_agent_asks_for_a_wake(engine):
    wakes = [insert_message(engine, "alice", "bob", f"m{i}")[1] for i in range(5)]
    assert wakes == [True, False, False, False, False]
    assert _wake_pending(engine, "bob")

    assert claim_for_turn(engine, "bob", "t1") is not None
    assert not _wake_pending(engine, "bob")
    # The turn loop has not seen an empty inbox, but a send after the claim wakes again: the
    # extra wake-up is harmless (the loop claims until empty) and never one too few.
    assert insert_message(engine, "alice", "bob", "m5")[1] is True


def test_no_wake_for_a_stopped_agent_and_stopping_clears_the_flag(engine):
    assert insert_message(engine, "alice", "bob", "m")[1] is True
    set_agent_state(engine, "bob", AgentState.STOPPED)
    assert not _wake_pending(engine, "bob")
    assert insert_message(engine, "alice", "bob", "m2")[1] is False
    set_agent_state(engine, "bob", AgentState.IDLE)
    assert insert_message(engine, "alice", "bob", "m3")[1] is True


def test_clear_wake_lets_the_next_send_wake_again(engine):
    assert insert_message(engine, "alice", "bob", "a")[1] is True
    assert insert_message(engine, "alice", "bob", "b")[1] is False
    clear_wake(engine, "bob")
    assert insert_message(engine, "alice", "bob", "c")[1] is True


def test_claim_for_turn_is_idempotent_per_turn(engine):
    m1, _ = insert_message(engine, "alice", "bob", "first")
    m2, _ = insert_message(engine, "alice", "bob", "second")
    got = claim_for_turn(engine, "bob", "turn-a")
    assert got is not None and got.id == m1.id
    again = claim_for_turn(engine, "bob", "turn-a")  # a retried activity
    assert again is not None and again.id == m1.id and again.body == "first"
    assert pending_count(engine, "bob") == 1
    other = claim_for_turn(engine, "bob", "turn-b")
    assert other is not None and other.id == m2.id
    assert claim_for_turn(engine, "bob", "turn-c") is None
    # a turn id belongs to one agent only
    assert claim_for_turn(engine, "carol", "turn-a") is None


def test_release_puts_the_message_back_at_the_head(engine):
    m1, _ = insert_message(engine, "alice", "bob", "first")
    m2, _ = insert_message(engine, "alice", "bob", "second")
    assert claim_for_turn(engine, "bob", "t1") is not None
    assert release_turn_message(engine, "t1") is True
    assert release_turn_message(engine, "t1") is False
    assert release_turn_message(engine, "never") is False
    assert pending_count(engine, "bob") == 2
    again = claim_for_turn(engine, "bob", "t2")
    assert again is not None and again.id == m1.id
    popped = pop_message(engine, "bob")
    assert popped is not None and popped.id == m2.id


def test_undeliver_gives_back_a_recv_pop_but_not_a_turn_claim(engine):
    m1, _ = insert_message(engine, "alice", "bob", "first")
    insert_message(engine, "alice", "bob", "second")
    popped = pop_message(engine, "bob")
    assert popped is not None and popped.id == m1.id
    assert undeliver_message(engine, m1.id) is True
    assert undeliver_message(engine, m1.id) is False  # already undelivered
    claimed = claim_for_turn(engine, "bob", "t1")
    assert claimed is not None and claimed.id == m1.id
    assert undeliver_message(engine, m1.id) is False
    assert pending_count(engine, "bob") == 1


def test_wake_flag_property_over_random_interleavings(engine):
    """Seeded random sequences of sends, recv pops and turn-loop claims. After every step, each
    undelivered message is covered by a wake-up requested after the turn loop's last empty
    claim."""
    rng = random.Random(20240611)
    undelivered: set[int] = set()
    wake_requested_at = -1  # step of the last send that asked for a wake-up
    last_empty_claim_at = -1
    for step in range(300):
        roll = rng.random()
        if roll < 0.5:
            m, wake = insert_message(engine, rng.choice(["alice", "carol"]), "bob", f"s{step}")
            undelivered.add(m.id)
            if wake:
                wake_requested_at = step
        elif roll < 0.65:  # the agent's own recv during a turn: leaves the flag alone
            got = pop_message(engine, "bob")
            if got is not None:
                undelivered.discard(got.id)
        else:
            got = claim_for_turn(engine, "bob", f"turn-{step}")
            if got is None:
                last_empty_claim_at = step
            else:
                undelivered.discard(got.id)
        if undelivered:
            assert wake_requested_at > last_empty_claim_at, (
                f"step {step}: messages {sorted(undelivered)} wait, but no wake-up was asked "
                "for since the turn loop last found the inbox empty"
            )
        assert pending_count(engine, "bob") == len(undelivered)


def test_a_send_committing_while_the_loop_goes_idle_is_not_stranded(engine):
    """The narrow race, made deterministic. The agent's own recv took m0, so its wake-up flag
    is still set while its inbox is empty. A send has seen the flag set (so asks for no wake-up)
    and is about to commit m1 when the turn loop (handling m0's wake-up) drains the inbox and
    goes idle. Either the loop's claim waits for the send and claims m1, or the send asks for a
    wake-up; it must never be neither."""
    first, wake = insert_message(engine, "alice", "bob", "m0")
    assert wake is True
    popped = pop_message(engine, "bob")  # recv during a turn: the flag stays set
    assert popped is not None and popped.id == first.id
    assert _wake_pending(engine, "bob")

    paused = threading.Event()
    loop_idle = threading.Event()
    sender_thread: list[threading.Thread] = []
    sent: list[tuple[Message, bool]] = []

    def pause_before_commit(conn: sa.Connection) -> None:
        if sender_thread and threading.current_thread() is sender_thread[0] and not paused.is_set():
            paused.set()
            # Correct locking makes the loop's claim wait for this commit: this times out.
            loop_idle.wait(1.0)

    sa.event.listen(engine, "commit", pause_before_commit)
    try:

        def send() -> None:
            sent.append(insert_message(engine, "alice", "bob", "m1"))

        sender = threading.Thread(target=send)
        sender_thread.append(sender)
        sender.start()
        assert paused.wait(10)

        claimed: list[int] = []

        def turn_loop() -> None:
            while (m := claim_for_turn(engine, "bob", uuid.uuid4().hex)) is not None:
                claimed.append(m.id)
            loop_idle.set()

        loop = threading.Thread(target=turn_loop)
        loop.start()
        sender.join(30)
        loop.join(30)
    finally:
        sa.event.remove(engine, "commit", pause_before_commit)
    [(second, second_wake)] = sent
    assert second.id in claimed or second_wake, "m1 is stored, unclaimed, and nobody was woken"
    if second.id not in claimed:
        assert _wake_pending(engine, "bob")


@pytest.mark.parametrize("round_", range(3))
def test_no_message_is_stranded_when_sends_race_the_turn_loop(engine, round_):
    """Senders in threads race a turn loop that runs on wake-ups only (as the AgentWorkflow
    does) and claims until the inbox is empty, and the agent's recv popping now and then. When
    everything has settled, every message has been claimed: no send skipped its wake-up while
    the loop was going idle."""
    senders, per_sender = 4, 60
    wakes: queue.Queue[int | None] = queue.Queue()
    claimed: list[int] = []
    errors: list[BaseException] = []
    rng = random.Random(round_)

    def turn_loop() -> None:
        try:
            while wakes.get() is not None:
                while (m := claim_for_turn(engine, "bob", uuid.uuid4().hex)) is not None:
                    claimed.append(m.id)
                    if rng.random() < 0.1:
                        threading.Event().wait(0.001)
        except BaseException as e:
            errors.append(e)

    def sender(name: str) -> None:
        try:
            for i in range(per_sender):
                _, wake = insert_message(engine, name, "bob", f"{name}-{i}")
                if wake:
                    wakes.put(1)
        except BaseException as e:
            errors.append(e)

    senders_done = threading.Event()

    def recv_popper() -> None:  # the agent's own recv, taking messages between turns
        try:
            while not senders_done.is_set():
                if (m := pop_message(engine, "bob")) is not None:
                    claimed.append(m.id)
                threading.Event().wait(0.002)
        except BaseException as e:
            errors.append(e)

    loop = threading.Thread(target=turn_loop)
    loop.start()
    popper = threading.Thread(target=recv_popper)
    popper.start()
    threads = [
        threading.Thread(target=sender, args=(name,))
        for name in ("alice", "carol", "alice", "carol")[:senders]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    senders_done.set()
    popper.join(120)
    wakes.put(None)  # after every wake-up the senders asked for
    loop.join(120)
    assert not errors
    assert pending_count(engine, "bob") == 0, "a message was left with no wake-up outstanding"
    assert len(claimed) == len(set(claimed)) == senders * per_sender
    assert not _wake_pending(engine, "bob")


# ---------------------------------------------------------------------------------------------
# queries


def test_agents_with_pending_skips_stopped_agents_and_the_operator(engine):
    assert agents_with_pending(engine) == []
    insert_message(engine, "alice", "carol", "x")
    insert_message(engine, "alice", "bob", "y")
    insert_message(engine, "alice", OPERATOR_NAME, "z")
    assert agents_with_pending(engine) == ["bob", "carol"]
    set_agent_state(engine, "carol", AgentState.STOPPED)
    assert agents_with_pending(engine) == ["bob"]
    pop_message(engine, "bob")
    assert agents_with_pending(engine) == []


def test_recent_messages_newest_first_filtered_and_limited(engine):
    for i in range(5):
        insert_message(engine, "alice", "bob", f"ab{i}")
    insert_message(engine, "carol", OPERATOR_NAME, "co")
    pop_message(engine, "bob")
    recent = recent_messages(engine)
    assert [m.body for m in recent] == ["co", "ab4", "ab3", "ab2", "ab1", "ab0"]
    assert recent[-1].delivered_at is not None  # not consuming, but shows delivery
    assert [m.body for m in recent_messages(engine, limit=2)] == ["co", "ab4"]
    assert [m.body for m in recent_messages(engine, agent="carol")] == ["co"]
    assert [m.body for m in recent_messages(engine, agent=OPERATOR_NAME)] == ["co"]
    assert len(recent_messages(engine, agent="bob")) == 5
    assert pending_count(engine, "bob") == 4
