"""Activities that touch the SQL store."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine
from temporalio import activity

from hyperhive.models import StoreHealth
from hyperhive.store.db import schema_version


class StoreActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn(name="check_store")
    async def check_store(self) -> StoreHealth:
        try:
            version = await asyncio.to_thread(schema_version, self._engine)
        except Exception as exc:  # the health check reports any failure rather than raising
            return StoreHealth(ok=False, detail=f"{type(exc).__name__}: {exc}")
        return StoreHealth(ok=True, schema_version=version)
