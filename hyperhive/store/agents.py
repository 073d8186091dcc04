"""Store operations on agents, their turn events and turn records.

Synchronous, one short transaction each (callers in async code use `asyncio.to_thread`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from hyperhive.domain import MANAGER_NAME, AgentState, TurnErrorClass, check_agent_name
from hyperhive.models import AgentInfo
from hyperhive.store.db import begin
from hyperhive.store.tables import metadata, utcnow

__all__ = [
    "MAX_EVENT_TEXT",
    "NoSuchAgent",
    "TurnEvent",
    "add_spend",
    "append_turn_events",
    "clip_texts",
    "get_agent",
    "last_session_id",
    "list_agents",
    "record_session_reset",
    "record_turn",
    "register_agent",
    "set_agent_state",
    "set_status_text",
    "touch_activity",
    "turn_events",
]

# Core views of the models' tables (AgentRow, MessageRow, TurnEventRow, TurnRecordRow).
AGENTS = metadata.tables["agents"]
MESSAGES = metadata.tables["messages"]
TURN_EVENTS = metadata.tables["turn_events"]
TURN_RECORDS = metadata.tables["turn_records"]

# Rows per INSERT statement when appending turn events (SQLite caps bound parameters).
_EVENT_CHUNK = 500
# A stored turn event is what the agent page and `hive logs` show, not the transcript (claude's
# session file keeps that whole): a text longer than this is kept cut, so that one Read of a
# large file cannot make every open page stream replay megabytes.
MAX_EVENT_TEXT = 16 * 1024


class NoSuchAgent(LookupError):
    """No agent of that name is registered in the store."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no agent named {name!r} is registered")


class TurnEvent(BaseModel):
    """One stored turn event (see `TurnEventRow`), payload decoded."""

    id: int
    agent: str
    turn_id: str
    seq: int
    kind: str
    payload: dict[str, Any]
    created_at: datetime


# ---------------------------------------------------------------------------------------------
# agents


def _pending_subquery() -> sa.ScalarSelect[int]:
    return (
        sa.select(sa.func.count())
        .select_from(MESSAGES)
        .where(MESSAGES.c.recipient == AGENTS.c.name, MESSAGES.c.delivered_at.is_(None))
        .scalar_subquery()
    )


def _agent_query() -> sa.Select[Any]:
    return sa.select(
        AGENTS.c.name,
        AGENTS.c.state,
        AGENTS.c.status_text,
        AGENTS.c.container_status,
        AGENTS.c.deployed_sha,
        AGENTS.c.hyperhive_rev,
        AGENTS.c.host_id,
        _pending_subquery().label("pending"),
    )


def _info(row: sa.Row[Any]) -> AgentInfo:
    return AgentInfo(
        name=row.name,
        state=str(row.state),
        status_text=row.status_text,
        pending=int(row.pending),
        is_manager=row.name == MANAGER_NAME,
        container_status=row.container_status,
        deployed_sha=row.deployed_sha,
        hyperhive_rev=row.hyperhive_rev,
        host_id=row.host_id,
    )


def register_agent(engine: Engine, name: str, host_id: str) -> AgentInfo:
    """Register `name` (state idle) on `host_id`; an agent already registered is left as it is.

    Raises `hyperhive.domain.InvalidName` for a name that cannot be an agent's.
    """
    check_agent_name(name)
    with begin(engine, write=True) as conn:
        _insert_ignoring_duplicates(
            conn,
            AGENTS,
            [
                {
                    "name": name,
                    "state": AgentState.IDLE,
                    "host_id": host_id,
                    "container_status": "absent",
                    "status_text": "",
                    "spend_total_usd": 0.0,
                    "wake_pending": False,
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                }
            ],
            key=("name",),
        )
        row = conn.execute(_agent_query().where(AGENTS.c.name == name)).one()
    return _info(row)


def get_agent(engine: Engine, name: str) -> AgentInfo | None:
    with begin(engine) as conn:
        row = conn.execute(_agent_query().where(AGENTS.c.name == name)).first()
    return _info(row) if row is not None else None


def list_agents(engine: Engine) -> list[AgentInfo]:
    """Every registered agent (stopped ones included), by name."""
    with begin(engine) as conn:
        rows = conn.execute(_agent_query().order_by(AGENTS.c.name)).all()
    return [_info(row) for row in rows]


def _update_agent(engine: Engine, name: str, **values: Any) -> None:
    with begin(engine, write=True) as conn:
        result = conn.execute(sa.update(AGENTS).where(AGENTS.c.name == name).values(**values))
        if result.rowcount != 1:
            raise NoSuchAgent(name)


def set_agent_state(
    engine: Engine, name: str, state: AgentState, status_text: str | None = None
) -> None:
    """Set the agent's lifecycle state (and its status text when given).

    Stopping an agent also clears its `wake_pending` flag: a stopped agent has no turn loop that
    could consume an outstanding wake-up, and a flag left set would swallow the next wake-up
    after it is started again.
    """
    values: dict[str, Any] = {"state": AgentState(state), "updated_at": utcnow()}
    if status_text is not None:
        values["status_text"] = status_text
    if state == AgentState.STOPPED:
        values["wake_pending"] = False
    _update_agent(engine, name, **values)


def set_container_status(engine: Engine, name: str, status: str) -> None:
    _update_agent(engine, name, container_status=status)


def set_deployed(
    engine: Engine, name: str, *, sha: str | None = None, hyperhive_rev: str | None = None
) -> None:
    """Record what the container now runs: its applied config sha and/or hyperhive revision."""
    values: dict[str, Any] = {}
    if sha is not None:
        values["deployed_sha"] = sha
    if hyperhive_rev is not None:
        values["hyperhive_rev"] = hyperhive_rev
    if values:
        _update_agent(engine, name, **values)


def set_status_text(engine: Engine, name: str, text: str) -> None:
    _update_agent(engine, name, status_text=text, updated_at=utcnow())


def touch_activity(engine: Engine, name: str) -> None:
    """Record that the agent did something just now (`last_activity_at`)."""
    now = utcnow()
    _update_agent(engine, name, last_activity_at=now, updated_at=now)


def add_spend(engine: Engine, name: str, usd: float) -> None:
    """Add `usd` (finite, ≥ 0) to the agent's total spend, atomically (`x = x + usd`)."""
    if not math.isfinite(usd) or usd < 0:
        raise ValueError(f"spend must be a finite amount ≥ 0 USD, got {usd!r}")
    _update_agent(
        engine,
        name,
        spend_total_usd=AGENTS.c.spend_total_usd + usd,
        updated_at=utcnow(),
    )


# ---------------------------------------------------------------------------------------------
# turn events and records


def append_turn_events(
    engine: Engine,
    agent: str,
    turn_id: str,
    events: Sequence[tuple[int, str, Mapping[str, Any]]],
) -> int:
    """Store a turn's events `(seq, kind, payload)`; return how many were new.

    Idempotent on (turn_id, seq): a retried turn that appends an event again is ignored (the
    first copy stays), so an activity may re-append after a retry without duplicating anything.
    """
    if not events:
        return 0
    now = utcnow()
    rows = [
        {
            "agent": agent,
            "turn_id": turn_id,
            "seq": int(seq),
            "kind": kind,
            "payload": json.dumps(clip_texts(dict(payload)), ensure_ascii=False, default=str),
            "created_at": now,
        }
        for seq, kind, payload in events
    ]
    inserted = 0
    with begin(engine, write=True) as conn:
        for start in range(0, len(rows), _EVENT_CHUNK):
            inserted += _insert_ignoring_duplicates(
                conn, TURN_EVENTS, rows[start : start + _EVENT_CHUNK], key=("turn_id", "seq")
            )
    return inserted


def clip_texts(value: Any, limit: int = MAX_EVENT_TEXT) -> Any:
    """`value` with every string longer than `limit` cut there, saying how much was left out."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return f"{value[:limit]}… [{len(value) - limit} more characters not kept]"
    if isinstance(value, Mapping):
        return {key: clip_texts(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clip_texts(item, limit) for item in value]
    return value


def turn_events(
    engine: Engine, agent: str, *, after_id: int = 0, limit: int = 500
) -> list[TurnEvent]:
    """The agent's turn events with id > `after_id`, oldest first, at most `limit`."""
    with begin(engine) as conn:
        rows = conn.execute(
            sa.select(TURN_EVENTS)
            .where(TURN_EVENTS.c.agent == agent, TURN_EVENTS.c.id > after_id)
            .order_by(TURN_EVENTS.c.id)
            .limit(max(0, limit))
        ).all()
    return [
        TurnEvent(
            id=row.id,
            agent=row.agent,
            turn_id=row.turn_id,
            seq=row.seq,
            kind=row.kind,
            payload=json.loads(row.payload),
            created_at=row.created_at,
        )
        for row in rows
    ]


def record_turn(
    engine: Engine,
    *,
    agent: str,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
    message_id: int | None = None,
    session_id: str = "",
    duration_ms: int = 0,
    cost_usd: float = 0.0,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_creation_tokens: int = 0,
    error_class: TurnErrorClass = TurnErrorClass.NONE,
    error_message: str = "",
) -> int:
    """Store one finished turn (a `turn_records` row); return its id.

    `ended_at` defaults to now, `started_at` to `ended_at` minus `duration_ms`.
    """
    ended = ended_at if ended_at is not None else utcnow()
    started = started_at if started_at is not None else ended - timedelta(milliseconds=duration_ms)
    with begin(engine, write=True) as conn:
        result = conn.execute(
            sa.insert(TURN_RECORDS).values(
                agent=agent,
                message_id=message_id,
                session_id=session_id,
                started_at=started,
                ended_at=ended,
                duration_ms=duration_ms,
                cost_usd=cost_usd,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cache_read_tokens,
                cache_creation_tokens=cache_creation_tokens,
                error_class=error_class,
                error_message=error_message,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


# The turn id of the note a fresh re-spawn leaves in the agent's turn events: turns recorded
# before it belong to a discarded claude session.
SESSION_RESET_PREFIX = "session-reset-"


def record_session_reset(
    engine: Engine, /, agent: str, reset_id: str, text: str, **extra: Any
) -> None:
    """Note (a `hive` turn event, idempotent per `reset_id`) that the agent's claude session was
    discarded: `last_session_id` looks only at turns after it."""
    payload = {"text": text, "session_reset": True, **extra}
    append_turn_events(engine, agent, f"{SESSION_RESET_PREFIX}{reset_id}", [(0, "hive", payload)])


def last_session_id(engine: Engine, agent: str) -> str:
    """The claude session of the agent's latest recorded turn since its last session reset,
    or "" when there is none (a new agent, or one re-spawned with --fresh)."""
    reset = (
        sa.select(sa.func.max(TURN_EVENTS.c.created_at))
        .where(
            TURN_EVENTS.c.agent == agent,
            TURN_EVENTS.c.turn_id.startswith(SESSION_RESET_PREFIX, autoescape=True),
        )
        .scalar_subquery()
    )
    query = (
        sa.select(TURN_RECORDS.c.session_id)
        .where(
            TURN_RECORDS.c.agent == agent,
            TURN_RECORDS.c.session_id != "",
            sa.or_(reset.is_(None), TURN_RECORDS.c.ended_at > reset),
        )
        .order_by(TURN_RECORDS.c.id.desc())
        .limit(1)
    )
    with begin(engine) as conn:
        found = conn.execute(query).scalar()
    return str(found or "")


# ---------------------------------------------------------------------------------------------
# helpers


def _insert_ignoring_duplicates(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]], *, key: tuple[str, ...]
) -> int:
    """INSERT rows, skipping those whose `key` columns already exist; return how many went in.

    SQLite and PostgreSQL: INSERT … ON CONFLICT DO NOTHING. Elsewhere: look first, then insert
    the missing ones (callers hold a write transaction).
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # psycopg reports no rowcount for a multi-row INSERT: count what RETURNING returns.
        pg_stmt = (
            postgresql.insert(table).values(rows).on_conflict_do_nothing(index_elements=list(key))
        )
        return len(conn.execute(pg_stmt.returning(table.c[key[0]])).all())
    if dialect == "sqlite":
        # No RETURNING here: it needs SQLite 3.35, and rowcount is exact on SQLite anyway.
        lite_stmt = (
            sqlite.insert(table).values(rows).on_conflict_do_nothing(index_elements=list(key))
        )
        return int(conn.execute(lite_stmt).rowcount)
    inserted = 0
    for row in rows:
        exists = conn.execute(
            sa.select(sa.literal(1))
            .select_from(table)
            .where(*(table.c[name] == row[name] for name in key))
        ).first()
        if exists is None:
            conn.execute(sa.insert(table).values(row))
            inserted += 1
    return inserted


# ---------------------------------------------------------------------------------------------
# the operator's view


class AgentOverview(BaseModel):
    """One agent as the dashboard, the admin socket and `hive status` show it."""

    name: str
    state: str
    status_text: str
    container_status: str
    deployed_sha: str | None
    hyperhive_rev: str | None
    pending: int
    spend_total_usd: float
    spend_today_usd: float
    turns_today: int
    last_activity_at: datetime | None
    agent_port: int | None
    # The host it runs on (hyperhive.host_health says whether that host is down).
    host_id: str


def agent_overviews(engine: Engine, *, since: datetime) -> list[AgentOverview]:
    """Every agent with its spend and turn count since `since` (the start of the UTC day)."""
    today = (
        sa.select(
            TURN_RECORDS.c.agent,
            sa.func.coalesce(sa.func.sum(TURN_RECORDS.c.cost_usd), 0.0).label("spend"),
            sa.func.count().label("turns"),
        )
        .where(TURN_RECORDS.c.ended_at >= since)
        .group_by(TURN_RECORDS.c.agent)
        .subquery()
    )
    query = (
        sa.select(
            AGENTS,
            _pending_subquery().label("pending"),
            sa.func.coalesce(today.c.spend, 0.0).label("spend_today"),
            sa.func.coalesce(today.c.turns, 0).label("turns_today"),
        )
        .select_from(AGENTS.outerjoin(today, today.c.agent == AGENTS.c.name))
        .order_by(AGENTS.c.name)
    )
    with begin(engine) as conn:
        rows = conn.execute(query).all()
    return [
        AgentOverview(
            name=row.name,
            state=str(row.state),
            status_text=row.status_text,
            container_status=row.container_status,
            deployed_sha=row.deployed_sha,
            hyperhive_rev=row.hyperhive_rev,
            pending=int(row.pending),
            spend_total_usd=float(row.spend_total_usd),
            spend_today_usd=float(row.spend_today),
            turns_today=int(row.turns_today),
            last_activity_at=row.last_activity_at,
            agent_port=row.agent_port,
            host_id=row.host_id,
        )
        for row in rows
    ]


class PortTaken(Exception):
    """Another agent already holds that page port."""


def agent_ports(engine: Engine) -> dict[str, int]:
    """The page port each agent was given, for those that have one."""
    with begin(engine) as conn:
        rows = conn.execute(
            sa.select(AGENTS.c.name, AGENTS.c.agent_port).where(AGENTS.c.agent_port.is_not(None))
        ).all()
    return {row.name: int(row.agent_port) for row in rows}


def set_agent_port(engine: Engine, name: str, port: int) -> None:
    """Persist the agent's page port; raises PortTaken when another agent has it."""
    try:
        _update_agent(engine, name, agent_port=port)
    except sa.exc.IntegrityError as e:
        raise PortTaken(f"port {port} is already given to another agent") from e
