"""Heartbeats for activities that wait on something long and silent (claude thinking, a Nix
build): they keep the activity alive in Temporal's eyes and are how a cancellation (a heartbeat
timeout, a cancelled workflow) reaches it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

# Without a heartbeat timeout (a test's ActivityEnvironment) there is nothing to keep alive.
DEFAULT_INTERVAL_S = 5.0


def beat_interval(*, at_most_s: float | None = None) -> float:
    """A third of the activity's heartbeat timeout, so that one lost or late beat does not time
    it out; never under 0.5 s, nor over `at_most_s`."""
    timeout = activity.info().heartbeat_timeout
    interval = timeout.total_seconds() / 3 if timeout else DEFAULT_INTERVAL_S
    if at_most_s is not None:
        interval = min(interval, at_most_s)
    return max(0.5, interval)


async def heartbeat_every(interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        activity.heartbeat()


@contextlib.asynccontextmanager
async def heartbeating(interval_s: float) -> AsyncIterator[None]:
    """Heartbeat every `interval_s` while the body runs."""
    beat = asyncio.create_task(heartbeat_every(interval_s))
    try:
        yield
    finally:
        # Not awaited: waiting here could swallow a cancellation meant for the body's caller.
        beat.cancel()
