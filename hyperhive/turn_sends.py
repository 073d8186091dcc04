"""Which turn each agent is in, so that a retried turn's `send` calls are not applied twice.

A turn attempt that dies after its claude called `send` (hive-c0re killed, claude hung or
crashed) is retried by Temporal: the retry runs claude again on the same message, and a model
that does what it did the first time sends the same message again. Each `send` made inside a turn
therefore carries a key derived from the turn id, the call's position among the attempt's sends
and what it sends. The store keeps the key with the message, and a second message with a key
already stored is not stored again: its caller gets the first one back. So a retried attempt
that makes the same calls in the same order gets the original messages, and one that does
something else (another recipient, other words) sends anew.

hive-c0re runs an agent's turns and serves its MCP socket in the same process, and an agent's
turns run one at a time, so "the agent's current turn attempt" is an in-memory fact; an attempt
never outlives the process (claude dies with hive-c0re), and the next attempt starts counting at
the first call again, as the retried claude does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass
class _Attempt:
    turn_id: str
    sends: int = 0


class TurnSends:
    """Per agent: the turn attempt running now and how many sends it has made."""

    def __init__(self) -> None:
        self._attempts: dict[str, _Attempt] = {}

    def begin(self, agent: str, turn_id: str) -> None:
        """A turn attempt starts: its sends are counted from the first again."""
        self._attempts[agent] = _Attempt(turn_id)

    def end(self, agent: str, turn_id: str) -> None:
        attempt = self._attempts.get(agent)
        if attempt is not None and attempt.turn_id == turn_id:
            del self._attempts[agent]

    def current_turn(self, agent: str) -> str | None:
        attempt = self._attempts.get(agent)
        return attempt.turn_id if attempt is not None else None

    def next_key(self, agent: str, recipient: str, body: str) -> str | None:
        """The idempotency key of `agent`'s next send, or None outside a turn (nothing to
        repeat: each such send is new)."""
        attempt = self._attempts.get(agent)
        if attempt is None:
            return None
        position = attempt.sends
        attempt.sends += 1
        return send_key(attempt.turn_id, position, recipient, body)


def send_key(turn_id: str, position: int, recipient: str, body: str) -> str:
    """64 hex digits naming one send call of a turn (the messages.send_key column)."""
    digest = hashlib.sha256()
    for part in (turn_id, str(position), recipient, body):
        data = part.encode("utf-8", "surrogatepass")
        # Length-prefixed, so that no two different calls hash the same bytes.
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()
