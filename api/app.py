"""The FastAPI app hive-c0re serves on the dashboard port."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from api import agent_pages, broker, dashboard, dashboard_stream, health
from api import metrics as metrics_api
from api.csrf import CsrfGuard, load_or_create_secret
from api.operator_guards import guard_operator_app
from api.stream_slots import StreamSlots
from hyperhive import __version__
from hyperhive.operator import OperatorService
from hyperhive.runtime import CoreRuntime
from hyperhive.store.db import StoreError, explain_store_failure

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


def csrf_guard(runtime: CoreRuntime) -> CsrfGuard:
    return CsrfGuard(load_or_create_secret(runtime.settings.state_path / "secrets" / "csrf.key"))


def create_app(
    runtime: CoreRuntime,
    *,
    operator: OperatorService | None = None,
    guard: CsrfGuard | None = None,
    stream_slots: StreamSlots | None = None,
) -> FastAPI:
    """`operator`, `guard` and `stream_slots` are passed when the agent pages share them
    (hive-c0re)."""
    app = FastAPI(title="hive-c0re", version=__version__)
    guard = guard or csrf_guard(runtime)
    guard_operator_app(app, runtime, operator or OperatorService(runtime), guard, stream_slots)
    app.state.broker = runtime.broker
    app.state.metrics = runtime.metrics
    app.include_router(health.router)
    app.include_router(broker.router)
    app.include_router(dashboard.router)
    app.include_router(dashboard_stream.router)
    app.include_router(metrics_api.router)
    app.include_router(agent_pages.agent_router(), prefix="/agents/{name}")

    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.InternalError)
    @app.exception_handler(StoreError)
    async def store_failed(request: Request, exc: Exception) -> JSONResponse:
        failure = explain_store_failure(exc)
        assert failure is not None
        log.warning("%s %s: %s", request.method, request.url.path, failure.what)
        return JSONResponse(
            {
                "ok": False,
                "error": "store_unavailable",
                "message": failure.what,
                "hint": failure.hint,
            },
            status_code=503,
        )

    @app.get("/api/csrf", tags=["dashboard"])
    async def csrf_token(request: Request) -> dict[str, str]:
        """The token unsafe requests must carry (X-Hive-CSRF). Same-origin pages only can read
        it: the API sends no CORS headers."""
        token: str = request.app.state.csrf.token
        return {"token": token}

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
