"""HealthCheckWorkflow on the time-skipping server, with its activity replaced by name."""

from __future__ import annotations

import uuid

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from hyperhive.models import HealthCheckInput, HealthCheckResult, StoreHealth
from workflows.health_check import HealthCheckWorkflow


@activity.defn(name="check_store")
async def healthy_store() -> StoreHealth:
    return StoreHealth(ok=True, schema_version=7)


@activity.defn(name="check_store")
async def broken_store() -> StoreHealth:
    raise RuntimeError("disk on fire")


async def _run(env: WorkflowEnvironment, task_queue: str, check_store) -> HealthCheckResult:
    host_queue = f"{task_queue}-host"
    async with (
        Worker(env.client, task_queue=task_queue, workflows=[HealthCheckWorkflow]),
        Worker(env.client, task_queue=host_queue, activities=[check_store]),
    ):
        return await env.client.execute_workflow(
            HealthCheckWorkflow.run,
            HealthCheckInput(host_task_queue=host_queue),
            id=f"hive-health-{uuid.uuid4().hex}",
            task_queue=task_queue,
        )


async def test_reports_the_store_seen_from_the_host_queue(time_skipping_server, task_queue):
    result = await _run(time_skipping_server, task_queue, healthy_store)
    assert result.store == StoreHealth(ok=True, schema_version=7)
    assert result.checked_at is not None


async def test_a_failing_store_fails_the_check_at_once(time_skipping_server, task_queue):
    with pytest.raises(WorkflowFailureError) as failure:
        await _run(time_skipping_server, task_queue, broken_store)
    cause = failure.value.cause
    assert isinstance(cause, ActivityError)
    assert "disk on fire" in str(cause.cause)
