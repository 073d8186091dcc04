"""The store's engine and migrations, on SQLite and on a throwaway PostgreSQL server.

`test_migrated_schema_matches_models` is the guard against a model change without a migration.
"""

from __future__ import annotations

import ast
import inspect as pyinspect
import os
import pwd
import shutil
import socket
import stat
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import select

from hyperhive.domain import AgentState, ApprovalKind, ApprovalStatus, TurnErrorClass
from hyperhive.settings import HiveSettings
from hyperhive.store import migrations as migrations_module
from hyperhive.store.agents import register_agent
from hyperhive.store.db import (
    StoreError,
    begin,
    make_engine,
    migrate,
    schema_version,
    session,
)
from hyperhive.store.messages import (
    insert_message,
    insert_message_counted,
    pending_count,
    recent_messages,
)
from hyperhive.store.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    SCHEMA_VERSION_TABLE,
    Migration,
    check_migrations,
)
from hyperhive.store.tables import (
    AgentRow,
    ApprovalRow,
    MessageRow,
    TurnRecordRow,
    UTCDateTime,
    metadata,
    utcnow,
)
from hyperhive.turn_sends import send_key

# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store: a new SQLite file, or a new database on the throwaway PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'hive.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
def engine(store_url: str):
    eng = make_engine(store_url)
    yield eng
    eng.dispose()


def _versions(engine: sa.Engine) -> list[tuple[int, str, datetime]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                SCHEMA_VERSION_TABLE.c.version,
                SCHEMA_VERSION_TABLE.c.description,
                SCHEMA_VERSION_TABLE.c.applied_at,
            ).order_by(SCHEMA_VERSION_TABLE.c.version)
        )
        return [tuple(r) for r in rows]


def _snapshot(engine: sa.Engine) -> dict[str, Any]:
    """Every table's columns, indexes and rows: to show that something changed nothing."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        for name in sorted(insp.get_table_names()):
            cols = [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(name)]
            idx = sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(name))
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            rows = sorted(conn.execute(sa.select(table)).all(), key=repr)
            out[name] = (cols, idx, rows)
    return out


# ---------------------------------------------------------------------------------------------
# the migrations list


def test_migrations_are_consecutive_and_described():
    check_migrations(MIGRATIONS)
    assert len(MIGRATIONS) == LATEST_VERSION
    with pytest.raises(ValueError, match="versions must be"):
        check_migrations([MIGRATIONS[0], Migration(3, "skips 2", lambda conn: None)])


def test_migrations_are_frozen_not_built_from_live_models():
    tree = ast.parse(pyinspect.getsource(migrations_module))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert not {m for m in imported if m.startswith(("hyperhive.store.tables", "sqlmodel"))}


# ---------------------------------------------------------------------------------------------
# migrate on both backends


def test_fresh_store_migrates_to_latest(engine):
    assert schema_version(engine) == 0
    assert migrate(engine) == LATEST_VERSION
    assert schema_version(engine) == LATEST_VERSION
    versions = _versions(engine)
    assert [v for v, _, _ in versions] == [m.version for m in MIGRATIONS]
    assert [d for _, d, _ in versions] == [m.description for m in MIGRATIONS]


def test_migrating_twice_is_a_no_op(engine):
    migrate(engine)
    before_versions = _versions(engine)
    before = _snapshot(engine)
    assert migrate(engine) == LATEST_VERSION
    assert _versions(engine) == before_versions
    assert _snapshot(engine) == before


# The messages table as v2 left it (frozen here, as the migrations are).
_V2_MESSAGES = sa.Table(
    "messages",
    sa.MetaData(),
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("sender", sa.String(), nullable=False),
    sa.Column("recipient", sa.String(), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Column("turn_id", sa.String(64), nullable=True),
)


def _v2_rows(engine: sa.Engine) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(_V2_MESSAGES).order_by(_V2_MESSAGES.c.id)).all())


def test_a_v2_store_upgrades_to_v3_keeping_its_messages(engine):
    assert migrate(engine, migrations=MIGRATIONS[:2]) == 2
    for name in ("alice", "bob"):
        register_agent(engine, name, "local")
    sent = _dt(0, 1)
    with begin(engine, write=True) as conn:
        conn.execute(
            _V2_MESSAGES.insert(),
            [
                {"sender": "alice", "recipient": "bob", "body": "read", "created_at": sent,
                 "delivered_at": sent, "turn_id": "turn-old"},
                {"sender": "alice", "recipient": "bob", "body": "waiting", "created_at": sent,
                 "delivered_at": None, "turn_id": None},
                {"sender": "bob", "recipient": "alice", "body": "also waiting",
                 "created_at": sent, "delivered_at": None, "turn_id": None},
            ],
        )  # fmt: skip
    before = _v2_rows(engine)
    assert [(r.body, r.turn_id) for r in before] == [
        ("read", "turn-old"),
        ("waiting", None),
        ("also waiting", None),
    ]

    assert migrate(engine, migrations=MIGRATIONS[:3]) == 3
    assert [(v, d) for v, d, _ in _versions(engine)][-1] == (3, "sends once: messages.send_key")
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        [column] = [c for c in insp.get_columns("messages") if c["name"] == "send_key"]
        assert column["nullable"] and _type_key(column["type"], engine.dialect.name) == (
            "string",
            64,
        )
        indexes = {i["name"]: i for i in insp.get_indexes("messages")}
        assert indexes["ux_messages_send_key"]["column_names"] == ["send_key"]
        assert indexes["ux_messages_send_key"]["unique"]
        keys = conn.execute(sa.text("SELECT send_key FROM messages")).scalars().all()
    # Every row is kept as it was, with no key (sent before keys existed), and reads as before.
    assert _v2_rows(engine) == before
    assert keys == [None, None, None]
    assert [(m.id, m.body) for m in recent_messages(engine, limit=10)] == [
        (r.id, r.body) for r in reversed(before)
    ]
    assert pending_count(engine, "bob") == 1 and pending_count(engine, "alice") == 1

    # New sends after the upgrade: unkeyed ones beside the old rows, a keyed one stored once.
    insert_message(engine, "alice", "bob", "waiting")
    key = send_key("turn-new", 0, "bob", "keyed")
    first = insert_message_counted(engine, "alice", "bob", "keyed", send_key=key)
    again = insert_message_counted(engine, "alice", "bob", "keyed", send_key=key)
    assert again[0].id == first[0].id and again[3] is True
    assert pending_count(engine, "bob") == 3
    # The database itself refuses a second row with the key, whoever writes it.
    with pytest.raises(sa.exc.IntegrityError), begin(engine, write=True) as conn:
        conn.execute(
            sa.text(
                "INSERT INTO messages (sender, recipient, body, created_at, send_key) "
                "VALUES ('alice', 'bob', 'dup', :at, :key)"
            ),
            {"at": utcnow(), "key": key},
        )


def test_sqlite_file_and_parent_dir_are_created(tmp_path):
    db_file = tmp_path / "a" / "b" / "hive.db"
    eng = make_engine(f"sqlite:///{db_file}")
    assert db_file.parent.is_dir()
    migrate(eng)
    assert db_file.is_file()
    eng.dispose()


def test_default_settings_url_works(tmp_path):
    settings = HiveSettings(state_dir=tmp_path / "state", db_url="")
    eng = make_engine(settings.database_url)
    assert migrate(eng) == LATEST_VERSION
    assert (tmp_path / "state" / "hive.db").is_file()
    eng.dispose()


def _type_key(type_: sa.types.TypeEngine[Any], dialect_name: str) -> tuple[Any, ...]:
    """What a column type means for the schema: its affinity (and length / time zone)."""
    while isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    if isinstance(type_, sa.Integer):
        return ("integer",)
    if isinstance(type_, sa.Float | sa.Numeric):
        return ("float",)
    if isinstance(type_, sa.Text):
        return ("text",)
    if isinstance(type_, sa.String):
        return ("string", type_.length)
    if isinstance(type_, sa.DateTime):
        # SQLite has no time-zone flag on DATETIME; the TypeDecorator keeps values UTC there.
        return ("datetime", type_.timezone if dialect_name != "sqlite" else None)
    if isinstance(type_, sa.Boolean):
        return ("boolean",)
    return ("other", type(type_).__name__)


def test_migrated_schema_matches_models(engine):
    """Fails when a model in tables.py changed without a migration (or a migration without the
    model): tables, columns, type affinity, nullability, keys, indexes, unique constraints."""
    migrate(engine)
    dialect = engine.dialect.name
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        db_tables = set(insp.get_table_names())
        model_tables = set(metadata.tables)
        assert db_tables == model_tables | {SCHEMA_VERSION_TABLE.name}, (
            "tables differ between the migrated store and the models: "
            f"only in store {sorted(db_tables - model_tables - {'schema_version'})}, "
            f"only in models {sorted(model_tables - db_tables)}"
        )
        problems: list[str] = []
        for name, table in sorted(metadata.tables.items()):
            reflected = {c["name"]: c for c in insp.get_columns(name)}
            for column in table.columns:
                got = reflected.pop(column.name, None)
                if got is None:
                    problems.append(f"{name}.{column.name}: in the model, not in the store")
                    continue
                want_type = _type_key(column.type, dialect)
                got_type = _type_key(got["type"], dialect)
                if want_type != got_type:
                    problems.append(f"{name}.{column.name}: type {got_type} != model {want_type}")
                if bool(got["nullable"]) != bool(column.nullable):
                    problems.append(
                        f"{name}.{column.name}: nullable {got['nullable']} != model "
                        f"{column.nullable}"
                    )
            problems += [f"{name}.{c}: in the store, not in the model" for c in reflected]

            pk = insp.get_pk_constraint(name)["constrained_columns"]
            if list(pk) != [c.name for c in table.primary_key.columns]:
                problems.append(f"{name}: primary key {pk} != model {list(table.primary_key)}")

            got_idx = {
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(name)
                if not i.get("duplicates_constraint")
            }
            want_idx = {
                (i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes
            }
            if got_idx != want_idx:
                problems.append(f"{name}: indexes {sorted(got_idx)} != model {sorted(want_idx)}")

            got_uq = {
                (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(name)
            }
            want_uq = {
                (u.name, tuple(c.name for c in u.columns))
                for u in table.constraints
                if isinstance(u, sa.UniqueConstraint)
            }
            if got_uq != want_uq:
                problems.append(f"{name}: unique {sorted(got_uq)} != model {sorted(want_uq)}")

            got_fk = {
                (tuple(f["constrained_columns"]), f["referred_table"])
                for f in insp.get_foreign_keys(name)
            }
            want_fk = {
                (tuple(c.parent.name for c in f.elements), f.referred_table.name)
                for f in table.foreign_key_constraints
            }
            if got_fk != want_fk:
                problems.append(f"{name}: foreign keys {got_fk} != model {want_fk}")

            if dialect == "sqlite":
                sql = conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (name,)
                ).scalar_one()
                want_auto = bool(table.kwargs.get("sqlite_autoincrement"))
                if ("AUTOINCREMENT" in sql.upper()) != want_auto:
                    problems.append(f"{name}: sqlite AUTOINCREMENT differs from the model")
    assert not problems, "migrated schema differs from the models:\n" + "\n".join(problems)


def test_failed_migration_is_rolled_back_ddl_included(engine):
    def broken(conn: sa.Connection) -> None:
        conn.execute(sa.text("CREATE TABLE half_done (x INTEGER)"))
        conn.execute(sa.text("SELECT * FROM no_such_table"))

    steps = (*MIGRATIONS, Migration(LATEST_VERSION + 1, "broken on purpose", broken))
    with pytest.raises(StoreError) as info:
        migrate(engine, migrations=steps)
    message = str(info.value)
    assert f"migration {LATEST_VERSION + 1} (broken on purpose) failed" in message
    assert f"still at schema version {LATEST_VERSION}" in message
    assert schema_version(engine) == LATEST_VERSION
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("half_done")


def test_two_processes_racing_apply_each_migration_once(store_url):
    applied: list[int] = []

    def slow(conn: sa.Connection) -> None:
        applied.append(LATEST_VERSION + 1)
        time.sleep(0.3)  # a slow step: the other process's migrate comes while this one runs
        conn.execute(sa.text("CREATE TABLE raced (x INTEGER)"))

    steps = (*MIGRATIONS, Migration(LATEST_VERSION + 1, "slow", slow))
    engines = [make_engine(store_url), make_engine(store_url)]
    barrier = threading.Barrier(2)
    results: list[int | BaseException] = []

    def run(eng: sa.Engine) -> None:
        barrier.wait()
        try:
            results.append(migrate(eng, migrations=steps))
        except BaseException as e:
            results.append(e)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [LATEST_VERSION + 1, LATEST_VERSION + 1]
    assert applied == [LATEST_VERSION + 1]
    assert [v for v, _, _ in _versions(engines[0])] == list(range(1, LATEST_VERSION + 2))
    for e in engines:
        e.dispose()


def test_store_from_a_newer_hyperhive_is_refused_and_left_unchanged(engine):
    migrate(engine)
    future = LATEST_VERSION + 7
    with begin(engine) as conn:
        conn.execute(
            SCHEMA_VERSION_TABLE.insert().values(
                version=future, description="from the future", applied_at=utcnow()
            )
        )
    before = _snapshot(engine)
    with pytest.raises(StoreError) as info:
        migrate(engine)
    message = str(info.value)
    assert f"schema version {future}" in message
    assert f"up to {LATEST_VERSION}" in message
    assert "Upgrade hyperhive" in message
    assert _snapshot(engine) == before
    assert schema_version(engine) == future


def test_fresh_store_stamped_with_a_future_version_gets_no_tables(engine):
    with begin(engine) as conn:
        SCHEMA_VERSION_TABLE.create(conn)
        conn.execute(
            SCHEMA_VERSION_TABLE.insert().values(
                version=LATEST_VERSION + 1, description="newer", applied_at=utcnow()
            )
        )
    before = _snapshot(engine)
    with pytest.raises(StoreError, match="Upgrade hyperhive"):
        migrate(engine)
    assert _snapshot(engine) == before
    assert set(before) == {"schema_version"}


def test_tables_without_schema_version_are_refused(engine):
    metadata.create_all(engine)
    with pytest.raises(StoreError, match="no schema_version table"):
        migrate(engine)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("schema_version")


# ---------------------------------------------------------------------------------------------
# round trips


def _dt(hours_east: int, minute: int) -> datetime:
    """A timestamp in a non-UTC zone with microseconds, to check conversion and precision."""
    return datetime(2025, 3, 4, 5, minute, 7, 123456, tzinfo=timezone(timedelta(hours=hours_east)))


def _assert_same_fields(got: Any, want: dict[str, Any]) -> None:
    for field, value in want.items():
        actual = getattr(got, field)
        assert actual == value, f"{field}: {actual!r} != {value!r}"
        if isinstance(value, datetime):
            assert actual.tzinfo is not None
            assert actual.utcoffset() == timedelta(0), f"{field} is not UTC: {actual!r}"


def test_round_trip_every_table(engine):
    migrate(engine)
    agent: dict[str, Any] = {
        "name": "worker1",
        "state": AgentState.NEEDS_LOGIN,
        "host_id": "local",
        "container_status": "running",
        "deployed_sha": "a" * 40,
        "hyperhive_rev": "b" * 40,
        "session_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "status_text": "thinking… ◆ unicode ok",
        "spend_total_usd": 1.2345,
        "agent_port": 8123,
        "created_at": _dt(2, 1),
        "updated_at": _dt(-5, 2),
        "last_activity_at": _dt(9, 3),
    }
    message: dict[str, Any] = {
        "sender": "hm1nd",
        "recipient": "worker1",
        "body": "hello\n" + "x" * 100_000,
        "created_at": _dt(0, 4),
        "delivered_at": _dt(1, 5),
    }
    approval: dict[str, Any] = {
        "kind": ApprovalKind.APPLY_COMMIT,
        "status": ApprovalStatus.APPROVED,
        "agent": "worker1",
        "requester": "hm1nd",
        "description": "give it ripgrep",
        "diff": "--- a/agent.nix\n+++ b/agent.nix\n" * 1000,
        "workflow_id": "hive-apply-worker1-0123456789ab",
        "created_at": _dt(3, 6),
        "decided_at": _dt(3, 7),
        "decided_by": "ops",
        "note": "fine",
        "expires_at": _dt(3, 8),
    }
    turn: dict[str, Any] = {
        "agent": "worker1",
        "message_id": 41,
        "session_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "started_at": _dt(-3, 9),
        "ended_at": _dt(-3, 10),
        "duration_ms": 61_000,
        "cost_usd": 0.0421,
        "input_tokens": 12,
        "output_tokens": 345,
        "cache_read_tokens": 6789,
        "cache_creation_tokens": 1011,
        "error_class": TurnErrorClass.RATE_LIMITED,
        "error_message": "429: rate limited until 12:00",
    }
    with session(engine, write=True) as s:
        s.add(AgentRow(**agent))
        m = MessageRow(**message)
        a = ApprovalRow(**approval)
        t = TurnRecordRow(**turn)
        s.add_all([m, a, t])
        s.flush()
        ids = (m.id, a.id, t.id)
    assert all(isinstance(i, int) for i in ids)

    engine.dispose()  # read back on fresh connections
    with session(engine) as s:
        got_agent = s.get(AgentRow, "worker1")
        got_msg = s.get(MessageRow, ids[0])
        got_appr = s.get(ApprovalRow, ids[1])
        got_turn = s.get(TurnRecordRow, ids[2])
    assert got_agent and got_msg and got_appr and got_turn
    _assert_same_fields(got_agent, agent)
    _assert_same_fields(got_msg, message)
    _assert_same_fields(got_appr, approval)
    _assert_same_fields(got_turn, turn)
    assert type(got_agent.state) is AgentState
    assert type(got_appr.kind) is ApprovalKind
    assert type(got_turn.error_class) is TurnErrorClass


def test_defaults_and_inbox_query(engine):
    migrate(engine)
    before = utcnow()
    with session(engine, write=True) as s:
        s.add(AgentRow(name="w2", host_id="local"))
        s.add(ApprovalRow(kind=ApprovalKind.SPAWN, agent="w2", requester="hm1nd",
                          description="a worker", workflow_id="hive-spawn-w2"))  # fmt: skip
        s.add(TurnRecordRow(agent="w2"))
        for i in range(3):
            s.add(MessageRow(sender="hm1nd", recipient="w2", body=f"m{i}"))
        s.add(MessageRow(sender="w2", recipient="operator", body="done"))
    with session(engine, write=True) as s:
        row = s.get(AgentRow, "w2")
        assert row is not None
        assert row.state is AgentState.IDLE
        assert row.container_status == "absent"
        assert row.status_text == ""
        assert row.spend_total_usd == 0.0
        assert row.created_at >= before
        assert row.created_at.tzinfo is UTC
        first_updated = row.updated_at
        row.status_text = "busy"
        s.add(row)
        appr = s.exec(select(ApprovalRow)).one()
        assert appr.status is ApprovalStatus.PENDING
        assert appr.diff == "" and appr.note == "" and appr.decided_by is None
        turn = s.exec(select(TurnRecordRow)).one()
        assert turn.error_class is TurnErrorClass.NONE
        assert turn.error_message == ""
        # oldest undelivered message for w2, then mark it delivered
        oldest = s.exec(
            select(MessageRow)
            .where(MessageRow.recipient == "w2", MessageRow.delivered_at == None)  # noqa: E711
            .order_by(MessageRow.id)  # type: ignore[arg-type]
            .limit(1)
        ).one()
        assert oldest.body == "m0"
        oldest.delivered_at = utcnow()
        s.add(oldest)
    with session(engine) as s:
        row = s.get(AgentRow, "w2")
        assert row is not None
        assert row.updated_at > first_updated  # onupdate
        pending = s.exec(
            select(MessageRow)
            .where(MessageRow.recipient == "w2", MessageRow.delivered_at == None)  # noqa: E711
            .order_by(MessageRow.id)  # type: ignore[arg-type]
        ).all()
        assert [p.body for p in pending] == ["m1", "m2"]


def test_agent_port_is_unique(engine):
    migrate(engine)
    with session(engine, write=True) as s:
        s.add(AgentRow(name="a1", host_id="local", agent_port=8100))
    with pytest.raises(sa.exc.IntegrityError), session(engine, write=True) as s:
        s.add(AgentRow(name="a2", host_id="local", agent_port=8100))


def test_naive_datetimes_and_unknown_enum_values_are_refused_on_write(engine):
    migrate(engine)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), session(engine) as s:
        s.add(MessageRow(sender="a", recipient="b", body="x", created_at=datetime(2025, 1, 1)))
    with pytest.raises(sa.exc.StatementError, match="not a valid AgentState"), session(engine) as s:
        s.add(AgentRow(name="a3", host_id="local", state="sleepy"))  # type: ignore[arg-type]


def test_unknown_enum_value_from_a_newer_version_reads_as_plain_string(engine):
    migrate(engine)
    with session(engine, write=True) as s:
        s.add(AgentRow(name="a4", host_id="local"))
    with begin(engine) as conn:
        conn.execute(sa.text("UPDATE agents SET state = 'hibernating' WHERE name = 'a4'"))
    with session(engine) as s:
        row = s.get(AgentRow, "a4")
        assert row is not None
        assert row.state == "hibernating"


# ---------------------------------------------------------------------------------------------
# SQLite specifics


def test_sqlite_pragmas_on_every_connection(tmp_path):
    db_file = tmp_path / "hive.db"
    eng = make_engine(f"sqlite:///{db_file}", busy_timeout_ms=4321)
    migrate(eng)
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 4321
    assert (tmp_path / "hive.db-wal").exists()
    eng.dispose()


def test_sqlite_in_memory_url_passes_through():
    eng = make_engine("sqlite://")
    assert migrate(eng) == LATEST_VERSION
    eng.dispose()


def _settings_hint_in(message: str) -> None:
    assert "HIVE_STATE_DIR" in message
    assert "HIVE_DB_URL" in message


def test_state_dir_that_is_a_file_is_a_clear_error(tmp_path):
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("oops")
    settings = HiveSettings(state_dir=not_a_dir, db_url="")
    with pytest.raises(StoreError) as info:
        make_engine(settings.database_url)
    message = str(info.value)
    assert str(not_a_dir) in message
    assert "not a directory" in message
    _settings_hint_in(message)
    assert not_a_dir.read_text() == "oops"


def test_db_path_that_is_a_directory_is_a_clear_error(tmp_path):
    (tmp_path / "hive.db").mkdir()
    with pytest.raises(StoreError) as info:
        make_engine(f"sqlite:///{tmp_path / 'hive.db'}")
    message = str(info.value)
    assert str(tmp_path / "hive.db") in message
    assert "is a directory" in message
    _settings_hint_in(message)


def _store_error_as_unprivileged_user(url: str) -> str:
    """make_engine + migrate as a user without write access; return the StoreError message.

    As root (who may write anywhere) this forks and drops to `nobody` in the child.
    """

    def attempt() -> str:
        try:
            migrate(make_engine(url))
        except StoreError as e:
            return str(e)
        return "no StoreError"

    if os.geteuid() != 0:
        return attempt()
    nobody = pwd.getpwnam("nobody")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            result = attempt()
        except BaseException as e:
            result = f"child failed: {e!r}"
            code = 1
        with os.fdopen(write_fd, "w") as w:
            w.write(result)
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as r:
        result = r.read()
    os.waitpid(pid, 0)
    return result


@pytest.fixture
def shared_tmp():
    """A temp dir that another user can traverse (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="hive-store-test-"))
    path.chmod(0o755)
    yield path
    for p in [path, *path.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


def test_state_dir_not_writable_is_a_clear_error(shared_tmp):
    state = shared_tmp / "state"
    state.mkdir()
    state.chmod(0o555)
    message = _store_error_as_unprivileged_user(f"sqlite:///{state / 'hive.db'}")
    assert f"directory {state} is not writable" in message
    _settings_hint_in(message)
    assert list(state.iterdir()) == []


def test_existing_db_file_not_writable_is_a_clear_error(shared_tmp):
    state = shared_tmp / "state"
    state.mkdir()
    db_file = state / "hive.db"
    eng = make_engine(f"sqlite:///{db_file}")
    migrate(eng)
    eng.dispose()
    state.chmod(0o777)
    db_file.chmod(0o444)
    for extra in state.glob("hive.db-*"):
        extra.chmod(0o444)
    mode_before = stat.S_IMODE(db_file.stat().st_mode)
    message = _store_error_as_unprivileged_user(f"sqlite:///{db_file}")
    assert f"SQLite store {db_file} is not readable and writable" in message
    _settings_hint_in(message)
    assert stat.S_IMODE(db_file.stat().st_mode) == mode_before


def test_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    junk = tmp_path / "hive.db"
    junk.write_bytes(b"this is not a sqlite database" * 100)
    eng = make_engine(f"sqlite:///{junk}")
    with pytest.raises(StoreError) as info:
        migrate(eng)
    assert str(junk) in str(info.value)
    _settings_hint_in(str(info.value))


# ---------------------------------------------------------------------------------------------
# URLs


def test_invalid_url_is_a_clear_error():
    with pytest.raises(StoreError, match="HIVE_DB_URL"):
        make_engine("this is not a url")


def test_unknown_database_kind_is_a_clear_error():
    with pytest.raises(StoreError, match="HIVE_DB_URL"):
        make_engine("nosuchdb://host/db")


def test_unreachable_postgres_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        eng = make_engine(f"postgresql+psycopg://hive:secret@127.0.0.1:{port}/hive")
        with pytest.raises(StoreError) as info:
            migrate(eng)
    message = str(info.value)
    assert "HIVE_DB_URL" in message
    assert f"127.0.0.1:{port}" in message
    assert "secret" not in message
    eng.dispose()
