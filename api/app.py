"""The FastAPI app hive-c0re serves on the dashboard port."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api import broker, dashboard, health
from hyperhive import __version__
from hyperhive.runtime import CoreRuntime


def create_app(runtime: CoreRuntime) -> FastAPI:
    app = FastAPI(title="hive-c0re", version=__version__)
    app.state.runtime = runtime
    app.state.broker = runtime.broker
    app.include_router(health.router)
    app.include_router(broker.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app
