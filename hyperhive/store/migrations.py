"""Schema migrations of the store: an append-only list, applied in order by `db.migrate`.

Rules:
- Append only. Never edit or reorder a migration that has shipped: databases out there have
  applied it. A fix is a new migration.
- Each migration is frozen: it spells out its own tables and columns with SQLAlchemy Core and
  never imports the live models (`hyperhive.store.tables`), so a later model change cannot
  change what an old migration does.
- Dialect-neutral: generic SQLAlchemy types only (String, Text, Integer, Float,
  DateTime(timezone=True)); enums are plain strings. SQLite and PostgreSQL must both work.
- Each migration runs in its own transaction together with its `schema_version` row (DDL is
  transactional on both SQLite and PostgreSQL), so a failure leaves the previous version intact.
- After changing a model in `tables.py`, add a migration here; the unit test that compares the
  migrated schema with the models fails until you do.

Ours rather than Alembic's, on purpose: Alembic reads a store's version once and takes no lock,
so keeping what `db.migrate` guarantees (one revision per transaction under a lock, the version
re-read inside it, so two hive-c0re processes on one PostgreSQL never both migrate) meant driving
Alembic from the same loop, plus a hand-over for stores made before it. Tried (issue 16): the
migration code grew from 440 to 556 lines for the same behaviour. Worth revisiting with the first
column change SQLite cannot do in place, where Alembic's batch mode would save a table copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "SCHEMA_VERSION_TABLE",
    "Migration",
    "check_migrations",
]


@dataclass(frozen=True)
class Migration:
    """One schema step: `apply(conn)` runs inside the transaction that records `version`."""

    version: int
    description: str
    apply: Callable[[Connection], None]


# Records which migrations have been applied. Its own MetaData: it is not a model, and it must
# never change shape (old and new hyperhive versions both read it to decide what to do).
_version_metadata = sa.MetaData()
SCHEMA_VERSION_TABLE = sa.Table(
    "schema_version",
    _version_metadata,
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


def _v1_initial_schema(conn: Connection) -> None:
    """v1: agents, messages, approvals, turn_records (frozen copy of the first models)."""
    md = sa.MetaData()

    def ts(name: str, *, nullable: bool) -> sa.Column[object]:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)

    sa.Table(
        "agents",
        md,
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("host_id", sa.String(), nullable=False),
        sa.Column("container_status", sa.String(), nullable=False),
        sa.Column("deployed_sha", sa.String(), nullable=True),
        sa.Column("hyperhive_rev", sa.String(), nullable=True),
        sa.Column("session_id", sa.String(), nullable=True),
        sa.Column("status_text", sa.String(), nullable=False),
        sa.Column("spend_total_usd", sa.Float(), nullable=False),
        sa.Column("agent_port", sa.Integer(), nullable=True),
        ts("created_at", nullable=False),
        ts("updated_at", nullable=False),
        ts("last_activity_at", nullable=True),
        sa.UniqueConstraint("agent_port", name="uq_agents_agent_port"),
    )
    sa.Table(
        "messages",
        md,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sender", sa.String(), nullable=False),
        sa.Column("recipient", sa.String(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        ts("created_at", nullable=False),
        ts("delivered_at", nullable=True),
        sa.Index("ix_messages_inbox", "recipient", "delivered_at", "id"),
        sqlite_autoincrement=True,
    )
    sa.Table(
        "approvals",
        md,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("requester", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("diff", sa.Text(), nullable=False),
        sa.Column("workflow_id", sa.String(), nullable=False),
        ts("created_at", nullable=False),
        ts("decided_at", nullable=True),
        sa.Column("decided_by", sa.String(), nullable=True),
        sa.Column("note", sa.String(), nullable=False),
        ts("expires_at", nullable=True),
        sa.Index("ix_approvals_workflow_id", "workflow_id"),
        sqlite_autoincrement=True,
    )
    sa.Table(
        "turn_records",
        md,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("session_id", sa.String(), nullable=False),
        ts("started_at", nullable=False),
        ts("ended_at", nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_read_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_creation_tokens", sa.Integer(), nullable=False),
        sa.Column("error_class", sa.String(), nullable=False),
        sa.Column("error_message", sa.String(), nullable=False),
        sa.Index("ix_turn_records_agent", "agent"),
        sqlite_autoincrement=True,
    )
    md.create_all(conn, checkfirst=False)


def _v2_broker(conn: Connection) -> None:
    """v2: messages.turn_id, agents.wake_pending, turn_events (frozen; see the v2 models)."""
    md = sa.MetaData()
    # Partial copies of the v1 tables: only what this migration adds, to render the DDL.
    agents = sa.Table(
        "agents",
        md,
        sa.Column("wake_pending", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    messages = sa.Table(
        "messages",
        md,
        sa.Column("turn_id", sa.String(64), nullable=True),
    )
    for table in (agents, messages):
        for column in table.columns:
            ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))
    sa.Index("ix_messages_turn_id", messages.c.turn_id).create(conn)

    sa.Table(
        "turn_events",
        md,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("turn_id", "seq", name="uq_turn_events_turn_seq"),
        sa.Index("ix_turn_events_agent", "agent", "id"),
        sqlite_autoincrement=True,
    ).create(conn, checkfirst=False)


def _v3_send_keys(conn: Connection) -> None:
    """v3: messages.send_key, unique (see hyperhive.turn_sends)."""
    md = sa.MetaData()
    messages = sa.Table("messages", md, sa.Column("send_key", sa.String(64), nullable=True))
    ddl = sa.schema.CreateColumn(messages.c.send_key).compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE messages ADD COLUMN {ddl}"))
    # NULLs are distinct in a unique index on both engines: messages sent outside a turn.
    sa.Index("ux_messages_send_key", messages.c.send_key, unique=True).create(conn)


def _v4_hosts(conn: Connection) -> None:
    """v4: hosts (one row per hive-c0re host, its heartbeat)."""
    md = sa.MetaData()
    sa.Table(
        "hosts",
        md,
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("dashboard_url", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
    ).create(conn, checkfirst=False)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema: agents, messages, approvals, turn_records", _v1_initial_schema),
    Migration(
        2,
        "broker: messages.turn_id, agents.wake_pending, turn_events",
        _v2_broker,
    ),
    Migration(3, "sends once: messages.send_key", _v3_send_keys),
    Migration(4, "hosts: one row per hive-c0re host, its heartbeat", _v4_hosts),
)


def check_migrations(migrations: Sequence[Migration]) -> None:
    """Raise ValueError unless versions are 1, 2, 3, … in order with non-empty descriptions."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(
                f"migration #{expected} has version {migration.version}: versions must be "
                "1, 2, 3, … in list order (append new migrations at the end)"
            )
        if not migration.description.strip():
            raise ValueError(f"migration {migration.version} has no description")


LATEST_VERSION: int = MIGRATIONS[-1].version
