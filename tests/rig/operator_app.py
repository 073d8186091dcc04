"""The dashboard app on a real store with no Temporal behind it: for API tests of what needs
only the store (any use of Temporal fails the test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NoReturn, cast

import httpx
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from temporalio.client import Client

from control.lifecycle import Lifecycle
from control.runtime import CoreRuntime
from hyperhive.broker import Broker
from hyperhive.metrics import HiveMetrics
from hyperhive.settings import HiveSettings


class NoTemporal:
    """Stands in for the Temporal client: any use fails the test."""

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(f"reached Temporal (client.{name}) where it must not")


def runtime_without_temporal(
    settings: HiveSettings, engine: Engine, broker: Broker, *, workers_running: bool = False
) -> CoreRuntime:
    client = cast(Client, NoTemporal())
    return CoreRuntime(
        settings=settings,
        engine=engine,
        client=client,
        broker=broker,
        lifecycle=Lifecycle(client, settings, engine),
        metrics=HiveMetrics(engine),
        workers_running=workers_running,
    )


async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to `app` in process (a fixture's body: `yield from` it)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client
