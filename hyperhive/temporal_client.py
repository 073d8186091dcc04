"""One way to connect to Temporal: pydantic payloads, the configured namespace, clear errors."""

from __future__ import annotations

import asyncio

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from hyperhive.errors import StartupError
from hyperhive.settings import HiveSettings


async def connect(settings: HiveSettings, *, wait_s: float = 30.0) -> Client:
    """Connect, retrying for up to `wait_s` (a cluster may still be starting)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = 0.1
    while True:
        try:
            return await Client.connect(
                settings.temporal_target,
                namespace=settings.temporal_namespace,
                data_converter=pydantic_data_converter,
            )
        except (RuntimeError, RPCError) as exc:
            if loop.time() + delay > deadline:
                where = "HIVE_TEMPORAL_ADDRESS" if settings.temporal_address else "embedded"
                raise StartupError(
                    f"cannot reach Temporal at {settings.temporal_target} ({where}): {exc}",
                    "check the server is running and the address is right; unset "
                    "HIVE_TEMPORAL_ADDRESS to use the embedded server",
                ) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
