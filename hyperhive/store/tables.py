"""The store's rows: SQLModel table models for agents, messages, approvals, turns and their events.

These models never cross into Temporal workflows (workflows exchange small pydantic models from
`hyperhive.domain` and their own packages); they are what the store reads and writes.

Conventions, so that one schema works on SQLite and PostgreSQL alike:
- enums are stored as their plain string values (VARCHAR), never as native enum types;
- timestamps are timezone-aware UTC datetimes (`UTCDateTime`): naive datetimes are refused on
  write, and values read back always carry `tzinfo=UTC` (SQLite keeps them as UTC text);
- every index and constraint has an explicit name, so later migrations can refer to it.

A change to any model here needs a new migration in `hyperhive.store.migrations`:
tests/unit/store/test_migrations.py compares the migrated schema with these models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Index, String, Text, UniqueConstraint, false
from sqlalchemy.engine import Dialect
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import Field, SQLModel

from hyperhive.domain import AgentState, ApprovalKind, ApprovalStatus, TurnErrorClass

__all__ = [
    "AgentRow",
    "ApprovalRow",
    "HostRow",
    "MessageRow",
    "StrEnumType",
    "TurnEventRow",
    "TurnRecordRow",
    "UTCDateTime",
    "metadata",
    "utcnow",
]

E = TypeVar("E", bound=StrEnum)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC: the only kind of datetime the store accepts."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL: TIMESTAMP WITH TIME ZONE. SQLite: DATETIME text, always written in UTC (so that
    text order is time order) and given `tzinfo=UTC` again when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} given to the store: timestamps must be "
                "timezone-aware (use hyperhive.store.tables.utcnow() or datetime.now(UTC))"
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - drivers return datetimes
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class StrEnumType(TypeDecorator[E]):
    """A `StrEnum` stored as its plain string value (VARCHAR, no native enum type).

    Writes accept a member or its value and refuse anything else. Reads return the member; a value
    this code does not know (written by a newer hyperhive) is returned as the plain string rather
    than making the whole row unreadable.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum_cls: type[E]) -> None:
        super().__init__()
        self.enum_cls = enum_cls

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        try:
            return self.enum_cls(value).value
        except ValueError:
            allowed = ", ".join(member.value for member in self.enum_cls)
            raise ValueError(
                f"{value!r} is not a valid {self.enum_cls.__name__}: expected one of {allowed}"
            ) from None

    def process_result_value(self, value: Any | None, dialect: Dialect) -> E | None:
        if value is None:
            return None
        try:
            return self.enum_cls(value)
        except ValueError:
            return value  # type: ignore[no-any-return]  # unknown (newer) value: keep the string


def _created_at() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class AgentRow(SQLModel, table=True):
    """One agent: its lifecycle state, where it runs, what is deployed, what it has spent."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("agent_port", name="uq_agents_agent_port"),)

    name: str = Field(primary_key=True)
    state: AgentState = Field(default=AgentState.IDLE, sa_type=StrEnumType(AgentState))
    host_id: str
    container_status: str = "absent"
    deployed_sha: str | None = None
    hyperhive_rev: str | None = None
    session_id: str | None = None
    status_text: str = ""
    spend_total_usd: float = 0.0
    agent_port: int | None = None
    # A wake-up (notify signal) is outstanding: set by the send that needs one, cleared by the
    # turn loop's claim in the same transaction as it pops (see store.messages.claim_for_turn).
    wake_pending: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    created_at: datetime = _created_at()
    updated_at: datetime = Field(
        default_factory=utcnow,
        sa_type=UTCDateTime,
        nullable=False,
        sa_column_kwargs={"onupdate": utcnow},
    )
    last_activity_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class MessageRow(SQLModel, table=True):
    """One message between agents (or to/from the operator). Delivered exactly once."""

    __tablename__ = "messages"
    # Serves "oldest undelivered message for X" and, by its leading column, any lookup by
    # recipient. AUTOINCREMENT on SQLite: ids are never reused, so they are a stable cursor.
    __table_args__ = (
        Index("ix_messages_inbox", "recipient", "delivered_at", "id"),
        Index("ix_messages_turn_id", "turn_id"),
        Index("ux_messages_send_key", "send_key", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    sender: str
    recipient: str
    body: str = Field(sa_type=Text)
    created_at: datetime = _created_at()
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The agent turn that claimed it (None when popped by recv, or not delivered yet).
    turn_id: str | None = Field(default=None, sa_type=String(64))
    # A send made inside a turn: its key (hyperhive.turn_sends), so a retried turn's repeat of
    # the same call finds this message instead of storing another.
    send_key: str | None = Field(default=None, sa_type=String(64))


class ApprovalRow(SQLModel, table=True):
    """One approval request (spawn or apply_commit), listed on the dashboard and decided there."""

    __tablename__ = "approvals"
    __table_args__ = (
        Index("ix_approvals_workflow_id", "workflow_id"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: ApprovalKind = Field(sa_type=StrEnumType(ApprovalKind))
    status: ApprovalStatus = Field(
        default=ApprovalStatus.PENDING, sa_type=StrEnumType(ApprovalStatus)
    )
    agent: str
    requester: str
    description: str
    diff: str = Field(default="", sa_type=Text)
    workflow_id: str
    created_at: datetime = _created_at()
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decided_by: str | None = None
    note: str = ""
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class TurnRecordRow(SQLModel, table=True):
    """One finished turn of an agent: timing, cost, tokens and how it ended."""

    __tablename__ = "turn_records"
    __table_args__ = (
        Index("ix_turn_records_agent", "agent"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    agent: str
    message_id: int | None = None
    session_id: str = ""
    started_at: datetime = _created_at()
    ended_at: datetime = _created_at()
    duration_ms: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    error_class: TurnErrorClass = Field(
        default=TurnErrorClass.NONE, sa_type=StrEnumType(TurnErrorClass)
    )
    error_message: str = ""


class TurnEventRow(SQLModel, table=True):
    """One event of an agent turn: a claude stream-json event (`kind` = its "type"), or one of
    hive's own notes (`kind` = "hive"). `seq` numbers the events within a turn; a retried turn
    re-appending the same (turn_id, seq) is ignored."""

    __tablename__ = "turn_events"
    # (agent, id): an agent's event stream, paged by id (AUTOINCREMENT: a stable cursor).
    __table_args__ = (
        UniqueConstraint("turn_id", "seq", name="uq_turn_events_turn_seq"),
        Index("ix_turn_events_agent", "agent", "id"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    agent: str
    turn_id: str = Field(sa_type=String(64))
    seq: int
    kind: str
    payload: str = Field(default="{}", sa_type=Text)  # JSON object
    created_at: datetime = _created_at()


metadata = SQLModel.metadata


class HostRow(SQLModel, table=True):
    """One hive-c0re host: when it started, when it was last heard of, when it stopped.

    A host is up while it beats (hyperhive.store.hosts) and has not said it stopped; its agents
    (agents.host_id) run their turns and containers only there."""

    __tablename__ = "hosts"

    id: str = Field(primary_key=True)
    version: str = ""
    dashboard_url: str = ""
    started_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    heartbeat_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
