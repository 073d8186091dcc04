"""`GET /health`: is this hive-c0re able to do its job right now?"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Runtime
from control.health_check import run_health_check
from control.runtime import CoreRuntime
from hyperhive import __version__
from hyperhive.store.db import schema_version

router = APIRouter()

DEEP_CHECK_TIMEOUT = timedelta(seconds=15)


async def _store_status(runtime: CoreRuntime) -> dict[str, Any]:
    try:
        version = await asyncio.to_thread(schema_version, runtime.engine)
    except Exception as exc:  # reported, not raised: this is the health endpoint
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "schema_version": version}


async def _temporal_status(runtime: CoreRuntime) -> dict[str, Any]:
    status: dict[str, Any] = {
        "address": runtime.settings.temporal_target,
        "namespace": runtime.settings.temporal_namespace,
        "embedded": runtime.settings.embedded_temporal,
        "ui": runtime.settings.temporal_web_ui(),
    }
    try:
        status["ok"] = await runtime.client.service_client.check_health(
            timeout=timedelta(seconds=3)
        )
    except Exception as exc:  # reported, not raised: this is the health endpoint
        status.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    return status


async def _round_trip(runtime: CoreRuntime) -> dict[str, Any]:
    """Run HealthCheckWorkflow: proves both task queues have a live worker."""
    try:
        result = await run_health_check(runtime.client, runtime.settings, within=DEEP_CHECK_TIMEOUT)
    except Exception as exc:  # reported, not raised: this is the health endpoint
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": result.store.ok, "store_schema_version": result.store.schema_version}


@router.get("/health")
async def health(runtime: Runtime, deep: bool = False) -> JSONResponse:
    checks: dict[str, Any] = {
        "store": await _store_status(runtime),
        "temporal": await _temporal_status(runtime),
        "workers": {"ok": runtime.workers_running},
    }
    if deep:
        checks["round_trip"] = await _round_trip(runtime)
    ok = all(check["ok"] for check in checks.values())
    body = {
        "status": "ok" if ok else "degraded",
        "version": __version__,
        "host_id": runtime.settings.host_id,
        "started_at": runtime.started_at.isoformat(),
        **checks,
    }
    return JSONResponse(body, status_code=200 if ok else 503)
