"""The fault suite: kill, restart and starve hive-c0re's pieces, then check no message is lost
or delivered twice and the store is intact.

Every module is marked `faults` (and `integration`: they run the real hive-c0re, dev server and
claude CLI), so `pytest -m faults` runs the suite alone. They run in the default `pytest` too;
the big SIGKILL run (1,000 messages) is sized by `HIVE_FAULTS_QUICK` / `HIVE_FAULTS_MESSAGES` (see
test_c0re_kill.py).

Shared helpers for the suite live here; tests/rig/polling.py waits for what only the store knows
(e.g. "every message delivered": nothing outside hive-c0re announces it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hyperhive.store.agents import MESSAGES


@dataclass(frozen=True)
class StoredMessage:
    """One messages row, with the claim columns the public Message model leaves out."""

    id: int
    sender: str
    recipient: str
    body: str
    delivered_at: datetime | None
    turn_id: str | None


def stored_messages(engine: Any) -> list[StoredMessage]:
    """Every row of the messages table, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(MESSAGES).order_by(MESSAGES.c.id)).all()
    return [
        StoredMessage(r.id, r.sender, r.recipient, r.body, r.delivered_at, r.turn_id) for r in rows
    ]


def stored_rows(hive: Any) -> list[StoredMessage]:
    """Every message row of a running hive (see tests/rig/c0re.py), oldest first."""
    engine = hive.engine()
    try:
        return stored_messages(engine)
    finally:
        engine.dispose()
