"""Start HealthCheckWorkflow and wait for it: one trip through both task queues and the store."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from hyperhive.models import HealthCheckInput, HealthCheckResult
from hyperhive.settings import HiveSettings


async def run_health_check(
    client: Client, settings: HiveSettings, *, within: timedelta
) -> HealthCheckResult:
    result: HealthCheckResult = await client.execute_workflow(
        "HealthCheckWorkflow",
        HealthCheckInput(host_task_queue=settings.host_task_queue),
        id=f"hive-health-{uuid.uuid4().hex[:12]}",
        task_queue=settings.core_task_queue,
        result_type=HealthCheckResult,
        execution_timeout=within,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )
    return result
