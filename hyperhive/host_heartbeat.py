"""This host's heartbeat in the store: the other hive-c0re processes sharing the store read from
it whether this host is up (hyperhive.store.hosts), so that a spawn elsewhere can pick it and
the dashboards and `hive status` everywhere show its agents as running or as on a down host.

Started before the workers (a spawn on another host may pick this host as soon as it beats) and
stopped after them: `host_stopped` says at once that the host is down on purpose, instead of the
others waiting `host_down_after_s` for beats that will not come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.engine import Engine

from hyperhive import __version__
from hyperhive.settings import HiveSettings
from hyperhive.store import hosts as host_store

log = logging.getLogger(__name__)


class HostHeartbeat:
    """`await start()` records the start and beats every `host_heartbeat_s` in a task;
    `await stop()` ends the beats and records a clean stop."""

    def __init__(self, engine: Engine, settings: HiveSettings) -> None:
        self._engine = engine
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Record that this host started (raises if the store refuses: hive-c0re cannot run
        without its store anyway), then beat in the background."""
        await asyncio.to_thread(
            host_store.host_started,
            self._engine,
            self._settings.host_id,
            version=__version__,
            dashboard_url=self._settings.dashboard_url(),
        )
        self._task = asyncio.create_task(self._beat_forever(), name="host heartbeat")

    async def _beat_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._settings.host_heartbeat_s)
            try:
                await asyncio.to_thread(host_store.beat, self._engine, self._settings.host_id)
            except Exception as e:
                # The database may be restarting: keep beating. Said once per outage, not every
                # few seconds; meanwhile the other hosts show this one as down.
                if not failing:
                    log.warning(
                        "cannot record host %s's heartbeat in the store (%s: %s); other hosts "
                        "will show it as down after %g s — retrying every %g s",
                        self._settings.host_id,
                        type(e).__name__,
                        e,
                        self._settings.host_down_after_s,
                        self._settings.host_heartbeat_s,
                    )
                failing = True
                continue
            if failing:
                log.warning("host %s's heartbeat is recorded again", self._settings.host_id)
            failing = False

    async def stop(self) -> None:
        """End the beats and record the stop; a store that refuses is logged, not raised (the
        host is stopping anyway, and the others see it down once its beats are old)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.to_thread(host_store.host_stopped, self._engine, self._settings.host_id)
        except Exception as e:
            log.warning(
                "cannot record in the store that host %s stopped (%s: %s); other hosts will "
                "show it as down after %g s",
                self._settings.host_id,
                type(e).__name__,
                e,
                self._settings.host_down_after_s,
            )


__all__ = ["HostHeartbeat"]
