"""`GET /metrics`: hive-c0re's Prometheus metrics (see hyperhive/metrics.py)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import Metrics

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(hive_metrics: Metrics) -> Response:
    # A scrape reads the store (and may wait out its busy timeout): not on the event loop.
    body = await asyncio.to_thread(hive_metrics.render)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
