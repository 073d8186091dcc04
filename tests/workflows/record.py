"""Record workflow histories for the replay tests from real runs on a dev server.

    .venv/bin/python -m tests.workflows.record

Each scenario runs the real workflow code (activities replaced by name, as in the workflow tests)
and writes tests/workflows/histories/<name>.json. Re-record only for a deliberate, compatible
change; keep old histories so live runs of older code keep replaying.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from hyperhive.models import HealthCheckInput, StoreHealth
from workflows.health_check import HealthCheckWorkflow

OUT = Path(__file__).parent / "histories"


@activity.defn(name="check_store")
async def check_store() -> StoreHealth:
    return StoreHealth(ok=True, schema_version=1)


async def record() -> None:
    temporal = str(Path(sys.executable).parent / "temporal")
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, dev_server_existing_path=temporal
    )
    try:
        async with (
            Worker(env.client, task_queue="hive-core", workflows=[HealthCheckWorkflow]),
            Worker(env.client, task_queue="hive-host-local", activities=[check_store]),
        ):
            handle = await env.client.start_workflow(
                HealthCheckWorkflow.run,
                HealthCheckInput(host_task_queue="hive-host-local"),
                id="hive-health-recorded",
                task_queue="hive-core",
            )
            await handle.result()
            history = await handle.fetch_history()
        OUT.mkdir(exist_ok=True)
        target = OUT / "health_check.json"
        target.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
        print(f"wrote {target}")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record())
