"""This host's auto-update schedule, `hive-auto-update-<host id>`: each host updates the
containers of its own agents (activities/lifecycle.py `stale_agents` lists only those)."""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from hyperhive.models import AutoUpdateRequest
from hyperhive.settings import HiveSettings
from hyperhive.temporal_ids import LEGACY_AUTO_UPDATE_SCHEDULE_ID, auto_update_schedule_id
from workflows.auto_update import AutoUpdateWorkflow

log = logging.getLogger(__name__)


async def ensure_auto_update(client: Client, settings: HiveSettings) -> None:
    """The schedule is created once, brought in line with the settings at every start-up
    (interval, queues, build timeout; a pause set in the Temporal UI stays), and triggered."""
    await _drop_legacy_schedule(client)
    schedule_id = auto_update_schedule_id(settings.host_id)
    every = timedelta(seconds=settings.auto_update_interval_s)
    action = ScheduleActionStartWorkflow(
        AutoUpdateWorkflow.run,
        AutoUpdateRequest(
            host_task_queue=settings.host_task_queue,
            build_timeout_s=settings.build_timeout_s,
        ),
        id=schedule_id,
        task_queue=settings.core_task_queue,
    )
    spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)])
    try:
        handle = await client.create_schedule(
            schedule_id,
            Schedule(
                action=action,
                spec=spec,
                policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            ),
        )
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(schedule_id)

        def follow_settings(current: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule = current.description.schedule
            schedule.action = action
            schedule.spec = spec
            return ScheduleUpdate(schedule=schedule)

        await handle.update(follow_settings)
    await handle.trigger(overlap=ScheduleOverlapPolicy.SKIP)


async def _drop_legacy_schedule(client: Client) -> None:
    """The one schedule of a hive before hosts had their own would update this host's agents a
    second time, on one host's queue."""
    with contextlib.suppress(RPCError):
        await client.get_schedule_handle(LEGACY_AUTO_UPDATE_SCHEDULE_ID).describe()
        try:
            await client.get_schedule_handle(LEGACY_AUTO_UPDATE_SCHEDULE_ID).delete()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        log.info(
            "deleted the schedule %s: each host has its own now (hive-auto-update-<host id>)",
            LEGACY_AUTO_UPDATE_SCHEDULE_ID,
        )
