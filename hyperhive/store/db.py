"""Engine, migrations runner and session helpers of the SQL store.

SQLite (the default, `<state_dir>/hive.db`) runs in WAL mode with a busy timeout; any other
SQLAlchemy URL (e.g. `postgresql+psycopg://…`) is passed through. Nothing here does I/O at import.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlmodel import Session

from hyperhive.private_files import create_private_sqlite
from hyperhive.store.migrations import MIGRATIONS, SCHEMA_VERSION_TABLE, Migration

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS",
    "StoreError",
    "begin",
    "make_engine",
    "migrate",
    "schema_version",
    "session",
]

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 10_000

# Execution option: on SQLite, open the transaction with BEGIN IMMEDIATE (take the write lock up
# front). Needed for read-then-write transactions: in WAL mode a deferred transaction that read a
# snapshot and then tries to write after another writer committed fails at once with
# SQLITE_BUSY, whatever the busy timeout.
_BEGIN_IMMEDIATE = "hyperhive_begin_immediate"

# Serialises migrate() across processes on PostgreSQL (transaction-scoped advisory lock).
_PG_MIGRATE_LOCK_KEY = 0x6879766D69677261  # "hyvmigra"

# Tables of the first schema: if they exist without a schema_version table, the database was not
# made by migrate() and we refuse to guess.
_V1_TABLES = ("agents", "messages", "approvals", "turn_records")

_SETTINGS_HINT = (
    "The store is set by HIVE_DB_URL; when that is empty it is SQLite at <HIVE_STATE_DIR>/hive.db "
    "(HIVE_STATE_DIR defaults to ./.hive)."
)


class StoreError(RuntimeError):
    """The store cannot be used; the message says what happened and what to do about it."""


class StoreWriteError(StoreError):
    """A read or write the database refused (disk full, locked too long, read-only, …)."""

    def __init__(self, what: str, hint: str) -> None:
        self.what = what
        self.hint = hint
        super().__init__(f"{what}\n  → {hint}")


def explain_store_failure(exc: BaseException) -> StoreWriteError | None:
    """What an operator should read for a database error, or None when it is not one."""
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InternalError | StoreError):
        return None
    if isinstance(exc, StoreWriteError):
        return exc
    text = str(getattr(exc, "orig", None) or exc)
    lowered = text.lower()
    if "disk is full" in lowered or "no space left" in lowered or "disk full" in lowered:
        return StoreWriteError(
            "the store cannot write: the disk holding it is full; nothing was changed",
            "free space on the file system of HIVE_STATE_DIR (or of the database server), "
            "then try again",
        )
    if "locked" in lowered:
        return StoreWriteError(
            "the store is busy (locked by another writer) and the request gave up; nothing "
            "was changed",
            "try again; if it persists, check for another process holding hive.db",
        )
    if "readonly" in lowered or "read-only" in lowered:
        return StoreWriteError(
            "the store is read-only; nothing was changed",
            "check the permissions and mount of HIVE_STATE_DIR",
        )
    return StoreWriteError(
        f"the store failed: {text.splitlines()[0] if text else type(exc).__name__}",
        "see hive-c0re's log; check HIVE_DB_URL / HIVE_STATE_DIR",
    )


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


# ---------------------------------------------------------------------------------------------
# engine


def make_engine(url: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Engine:
    """An Engine for the store at `url` (see `HiveSettings.database_url`).

    SQLite files: the parent directory is created, and every connection gets
    `journal_mode=WAL`, `busy_timeout`, `foreign_keys=ON`, `synchronous=NORMAL`, and real
    transactions (SQLAlchemy emits BEGIN, so DDL is transactional too). Other URLs are passed
    through to SQLAlchemy with `pool_pre_ping`.
    Raises StoreError when the URL is invalid, its driver is missing, or the SQLite path cannot
    be used (a directory, a file in the way, not writable).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise StoreError(
            f"the store URL {url!r} is not a valid SQLAlchemy URL ({e}). "
            "Set HIVE_DB_URL to e.g. sqlite:////var/lib/hyperhive/hive.db or "
            "postgresql+psycopg://user:password@host/dbname, or leave it empty for SQLite "
            "under HIVE_STATE_DIR."
        ) from e

    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_path(parsed)
        if path is not None:
            _prepare_sqlite_path(path)
        engine = _create_engine(parsed)
        _install_sqlite_hooks(engine, busy_timeout_ms, file_backed=path is not None)
        return engine
    return _create_engine(parsed, pool_pre_ping=True)


def _create_engine(url: URL, **kwargs: Any) -> Engine:
    try:
        return sa.create_engine(url, **kwargs)
    except NoSuchModuleError as e:
        raise StoreError(
            f"the store URL {_shown(url)} names a database SQLAlchemy does not know ({e}). "
            "Use sqlite:///… or postgresql+psycopg://… in HIVE_DB_URL."
        ) from e
    except ImportError as e:
        raise StoreError(
            f"the database driver for {_shown(url)} is not installed ({e}). For PostgreSQL "
            "install psycopg (pip install 'psycopg[binary]') and use a postgresql+psycopg:// "
            "URL in HIVE_DB_URL."
        ) from e


def _sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL, or None for an in-memory database or a `file:` URI."""
    database = url.database
    if not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None  # sqlite URI (uri=true): its own options, passed through as is
    return Path(database).expanduser()


def _prepare_sqlite_path(path: Path) -> None:
    if path.is_dir():
        raise StoreError(
            f"the SQLite store path {path} is a directory, not a database file. "
            f"{_SETTINGS_HINT} Point HIVE_DB_URL at a file (sqlite:////abs/path/hive.db) or "
            "HIVE_STATE_DIR at the directory that should hold hive.db."
        )
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise StoreError(
            f"cannot create the store's directory {parent}: {e.filename or parent} exists and "
            f"is not a directory. {_SETTINGS_HINT} Set HIVE_STATE_DIR (or HIVE_DB_URL) to a "
            "directory path, or move that file away."
        ) from e
    except OSError as e:
        raise StoreError(
            f"cannot create the store's directory {parent}: {e.strerror or e}. {_SETTINGS_HINT} "
            "Set HIVE_STATE_DIR (or HIVE_DB_URL) to a location this user can write."
        ) from e
    if not parent.is_dir():
        raise StoreError(
            f"the store's directory {parent} is not a directory. {_SETTINGS_HINT} "
            "Set HIVE_STATE_DIR (or HIVE_DB_URL) to a directory path."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(
            f"the store's directory {parent} is not writable by this user (uid {os.geteuid()}): "
            f"SQLite must create {path.name} and its -wal/-shm files there. Fix its permissions, "
            f"or set HIVE_STATE_DIR (or HIVE_DB_URL) to a writable location. {_SETTINGS_HINT}"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"the SQLite store {path} is not readable and writable by this user "
            f"(uid {os.geteuid()}). Fix its owner/permissions, or set HIVE_STATE_DIR (or "
            f"HIVE_DB_URL) to another location. {_SETTINGS_HINT}"
        )
    create_private_sqlite(path)


def _install_sqlite_hooks(engine: Engine, busy_timeout_ms: int, *, file_backed: bool) -> None:
    timeout = int(busy_timeout_ms)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (which does not BEGIN before
        # DDL or SELECT); the "begin" hook below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {timeout}")
            mode = _switch_to_wal(cursor, timeout)
            if file_backed and mode != "wal":
                log.warning(
                    "SQLite store %s: journal_mode is %r, not WAL (does its filesystem support "
                    "shared memory?); concurrent access will be slower",
                    engine.url.database,
                    mode,
                )
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_BEGIN_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _switch_to_wal(cursor: Any, timeout_ms: int) -> str:
    """`PRAGMA journal_mode = WAL`, retried while another connection holds the database.

    Switching a new database to WAL needs an exclusive lock, and SQLite reports "database is
    locked" at once for it instead of waiting for the busy timeout, so two processes opening a
    fresh store together would fail. Once the file is in WAL mode (it stays so) this is a no-op.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    delay = 0.005
    while True:
        try:
            row = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
            return str(row[0]).lower() if row else ""
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


# ---------------------------------------------------------------------------------------------
# transactions


@contextmanager
def begin(engine: Engine, *, write: bool = False) -> Iterator[Connection]:
    """A Core connection inside a transaction, committed on success, rolled back on error.

    `write=True` is for read-then-write transactions (e.g. popping a message): on SQLite it
    begins with BEGIN IMMEDIATE so the write lock is taken (waiting up to the busy timeout)
    before anything is read. On other databases it changes nothing.
    """
    with engine.connect() as conn:
        if write:
            conn = conn.execution_options(**{_BEGIN_IMMEDIATE: True})
        with conn.begin():
            yield conn


@contextmanager
def session(engine: Engine, *, write: bool = False) -> Iterator[Session]:
    """A SQLModel Session inside a transaction: committed on success, rolled back on error.

    Objects stay usable after the block (`expire_on_commit=False`). `write` as in `begin`.
    """
    bind = engine.execution_options(**{_BEGIN_IMMEDIATE: True}) if write else engine
    with Session(bind, expire_on_commit=False) as s, s.begin():
        yield s


# ---------------------------------------------------------------------------------------------
# migrations


def schema_version(engine: Engine) -> int:
    """The highest migration version applied to the store; 0 for a database never migrated."""
    with _explained(engine), engine.connect() as conn:
        return _current_version(conn)


def migrate(engine: Engine, *, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the pending migrations; return the schema version the store is at afterwards.

    Each migration runs in its own transaction with its `schema_version` row, under a lock
    (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), and re-reads the version first, so
    running it again is a no-op and two processes racing apply each migration once. Refuses,
    changing nothing, a store whose version is newer than this code knows.
    """
    latest = migrations[-1].version if migrations else 0
    with _explained(engine):
        while True:
            with begin(engine, write=True) as conn:
                _lock_for_migration(conn)
                current = _ensure_version_table(conn)
                if current > latest:
                    raise StoreError(
                        f"the store at {_shown(engine.url)} has schema version {current}, but "
                        f"this hyperhive only knows versions up to {latest}: a newer hyperhive "
                        "has migrated it. Upgrade hyperhive to that version (or point HIVE_DB_URL "
                        "at another store). Nothing was changed."
                    )
                pending = [m for m in migrations if m.version > current]
                if not pending:
                    return current
                step = pending[0]
                try:
                    step.apply(conn)
                except DBAPIError as e:
                    raise StoreError(
                        f"migration {step.version} ({step.description}) failed on "
                        f"{_shown(engine.url)}: {e.orig}. It was rolled back; the store is still "
                        f"at schema version {current}."
                    ) from e
                conn.execute(
                    SCHEMA_VERSION_TABLE.insert().values(
                        version=step.version,
                        description=step.description,
                        applied_at=datetime.now(UTC),
                    )
                )
            log.info(
                "store %s migrated to schema version %d (%s)",
                _shown(engine.url),
                step.version,
                step.description,
            )


def _current_version(conn: Connection) -> int:
    if not sa.inspect(conn).has_table(SCHEMA_VERSION_TABLE.name):
        return 0
    found = conn.execute(sa.select(sa.func.max(SCHEMA_VERSION_TABLE.c.version))).scalar()
    return int(found or 0)


def _lock_for_migration(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATE_LOCK_KEY)))
    # SQLite: the transaction began with BEGIN IMMEDIATE, which already holds the write lock.


def _ensure_version_table(conn: Connection) -> int:
    inspector = sa.inspect(conn)
    if inspector.has_table(SCHEMA_VERSION_TABLE.name):
        return _current_version(conn)
    existing = [name for name in _V1_TABLES if inspector.has_table(name)]
    if existing:
        raise StoreError(
            f"the store at {_shown(conn.engine.url)} already has hyperhive tables "
            f"({', '.join(existing)}) but no schema_version table, so it was not created by "
            "hyperhive's migrations and its schema is unknown. Point HIVE_DB_URL at an empty "
            "database (or move the file away) and let hyperhive create the store."
        )
    SCHEMA_VERSION_TABLE.create(conn, checkfirst=False)
    return 0


@contextmanager
def _explained(engine: Engine) -> Iterator[None]:
    """Turn driver errors (cannot open, cannot connect, not a database) into a StoreError."""
    try:
        yield
    except DBAPIError as e:
        if engine.dialect.name == "sqlite" and "locked" in str(e.orig):
            hint = (
                "Another process kept the database locked for longer than the busy timeout; "
                "retry, and check for a stuck hive process using the same store. "
                f"{_SETTINGS_HINT}"
            )
        elif engine.dialect.name == "sqlite":
            hint = (
                "Check that it is a hyperhive SQLite database and that its directory is "
                f"writable. {_SETTINGS_HINT}"
            )
        else:
            hint = (
                "Check HIVE_DB_URL (host, port, database name, user, password) and that the "
                "database server is running and reachable from this host."
            )
        raise StoreError(f"cannot use the store at {_shown(engine.url)}: {e.orig}. {hint}") from e
