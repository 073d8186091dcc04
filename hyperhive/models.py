"""Workflow and activity I/O types: small pydantic models with defaults so they can grow."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class HealthCheckInput(BaseModel):
    host_task_queue: str = "hive-host-local"


class StoreHealth(BaseModel):
    ok: bool = False
    schema_version: int = 0
    detail: str = ""


class HealthCheckResult(BaseModel):
    """One round trip: Temporal → hive-core workflow → host activity → store, and back."""

    store: StoreHealth = StoreHealth()
    checked_at: datetime | None = None
