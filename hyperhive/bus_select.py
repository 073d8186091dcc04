"""Which bus a hive-c0re uses: the one its store can carry.

A PostgreSQL store is shared by the hive-c0re processes of several hosts, so their events go
through PostgreSQL too (`PgBus`); any other store (SQLite) belongs to one process, whose
in-process `EventBus` is all there is to hear.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hyperhive.bus import Bus, EventBus
from hyperhive.pg_bus import PgBus

__all__ = ["is_postgres_url", "open_bus"]


def is_postgres_url(database_url: str) -> bool:
    try:
        return make_url(database_url).get_backend_name() == "postgresql"
    except ArgumentError:
        return False  # make_engine reports the bad URL; nothing to listen on here


@asynccontextmanager
async def open_bus(database_url: str) -> AsyncIterator[Bus]:
    """The bus for the store at `database_url`, open until the block ends: a started `PgBus`
    for PostgreSQL (StartupError when it cannot connect), else an `EventBus`."""
    if not is_postgres_url(database_url):
        yield EventBus()
        return
    async with PgBus(database_url) as bus:
        yield bus
