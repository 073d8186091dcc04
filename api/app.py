"""The FastAPI app hive-c0re serves on the dashboard port."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api import agent_pages, broker, dashboard, dashboard_stream, health
from api import metrics as metrics_api
from api.csrf import CsrfGuard, load_or_create_secret
from api.deps import Csrf
from api.operator_guards import guard_operator_app
from api.stream_slots import StreamSlots
from control.operator import OperatorService
from control.runtime import CoreRuntime
from hyperhive import __version__

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

    @app.get("/api/csrf", tags=["dashboard"])
    async def csrf_token(csrf: Csrf) -> dict[str, str]:
        """The token unsafe requests must carry (X-Hive-CSRF). Same-origin pages only can read
        it: the API sends no CORS headers."""
        return {"token": csrf.token}

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
