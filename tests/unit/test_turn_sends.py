"""The keys of the sends made inside a turn (hyperhive/turn_sends.py): the same call of a
retried attempt gets the same key, anything else a different one, and a send outside a turn none.
"""

from __future__ import annotations

import re

from hyperhive.turn_sends import TurnSends, send_key


def test_a_send_key_is_64_hex_digits_and_the_same_for_the_same_call() -> None:
    key = send_key("turn-1", 0, "bob", "hi bob")
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert send_key("turn-1", 0, "bob", "hi bob") == key


def test_keys_differ_by_turn_position_recipient_and_body() -> None:
    base = ("turn-1", 0, "bob", "hi bob")
    others = [
        ("turn-2", 0, "bob", "hi bob"),
        ("turn-1", 1, "bob", "hi bob"),
        ("turn-1", 0, "carol", "hi bob"),
        ("turn-1", 0, "bob", "hi bob!"),
        # Length-prefixed parts: moving text from one part to the next is another call.
        ("turn-1", 0, "bo", "bhi bob"),
        ("turn-10", 0, "bob", "hi bob"),
    ]
    keys = {send_key(*call) for call in [base, *others]}
    assert len(keys) == len(others) + 1


def test_no_key_outside_a_turn() -> None:
    sends = TurnSends()
    assert sends.current_turn("alice") is None
    assert sends.next_key("alice", "bob", "hi") is None
    assert sends.next_key("alice", "bob", "hi") is None
    sends.begin("alice", "turn-1")
    sends.end("alice", "turn-1")
    assert sends.current_turn("alice") is None
    assert sends.next_key("alice", "bob", "hi") is None


def test_positions_count_the_attempts_sends_from_the_first() -> None:
    sends = TurnSends()
    sends.begin("alice", "turn-1")
    assert sends.current_turn("alice") == "turn-1"
    first = sends.next_key("alice", "bob", "hi")
    second = sends.next_key("alice", "bob", "hi")
    third = sends.next_key("alice", "carol", "done")
    assert first == send_key("turn-1", 0, "bob", "hi")
    assert second == send_key("turn-1", 1, "bob", "hi")  # the same words again: a new send
    assert third == send_key("turn-1", 2, "carol", "done")


def test_a_new_begin_restarts_counting_so_a_retry_repeats_the_keys() -> None:
    sends = TurnSends()
    sends.begin("alice", "turn-1")
    attempt_1 = [sends.next_key("alice", "bob", "hi"), sends.next_key("alice", "bob", "more")]
    # The attempt died; Temporal retries the same turn: the same calls get the same keys.
    sends.begin("alice", "turn-1")
    attempt_2 = [sends.next_key("alice", "bob", "hi"), sends.next_key("alice", "bob", "more")]
    assert attempt_2 == attempt_1
    # A retry that does something else at a position sends anew.
    sends.begin("alice", "turn-1")
    assert sends.next_key("alice", "bob", "hello instead") not in attempt_1
    # The next turn's first send is another message, whatever it says.
    sends.begin("alice", "turn-2")
    assert sends.next_key("alice", "bob", "hi") == send_key("turn-2", 0, "bob", "hi")
    assert send_key("turn-2", 0, "bob", "hi") not in attempt_1


def test_agents_count_apart() -> None:
    sends = TurnSends()
    sends.begin("alice", "turn-a")
    sends.begin("bob", "turn-b")
    assert sends.next_key("alice", "carol", "x") == send_key("turn-a", 0, "carol", "x")
    assert sends.next_key("bob", "carol", "x") == send_key("turn-b", 0, "carol", "x")
    assert sends.next_key("alice", "carol", "x") == send_key("turn-a", 1, "carol", "x")
    sends.end("alice", "turn-a")
    assert sends.current_turn("bob") == "turn-b"


def test_the_end_of_a_stale_turn_does_not_clear_the_current_one() -> None:
    sends = TurnSends()
    sends.begin("alice", "turn-1")
    sends.begin("alice", "turn-2")  # turn-1's attempt was abandoned; turn-2 runs
    sends.next_key("alice", "bob", "hi")
    sends.end("alice", "turn-1")  # turn-1's late clean-up
    assert sends.current_turn("alice") == "turn-2"
    # turn-2's count went on: its next send is its second.
    assert sends.next_key("alice", "bob", "hi") == send_key("turn-2", 1, "bob", "hi")
    sends.end("alice", "turn-2")
    assert sends.current_turn("alice") is None
    sends.end("alice", "turn-2")  # ending twice is harmless
