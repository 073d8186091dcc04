"""hm1nd cannot bury the operator in approvals: 30 `request_spawn` in a row through its own MCP
tool, as fast as it can, get no more than HIVE_MAX_PENDING_APPROVALS_PER_AGENT (20) waiting; the
rest are refused saying why, and start nothing. The operator's own requests are not limited.

Runs in its own hostile world (no worker: the started workflows never store their approvals, so
this is the burst case, where requests outrun the workers).
"""

from __future__ import annotations

import pytest
from mcp import Client

from tests.hostile.conftest import World

pytestmark = pytest.mark.integration


async def test_a_burst_of_spawn_requests_stops_at_the_limit(hostile_world: World) -> None:
    world = hostile_world
    limit = world.settings.max_pending_approvals_per_agent
    before = await world.workflows()
    accepted: list[str] = []
    refusals: list[str] = []
    try:
        async with Client(world.mcp["hm1nd"]) as client:
            for i in range(30):
                result = await client.call_tool(
                    "request_spawn", {"name": f"flood{i}", "purpose": "flood the operator"}
                )
                text = result.content[0].text  # type: ignore[union-attr]
                (refusals if result.is_error else accepted).append(text)
        assert len(accepted) == limit == 20
        assert len(refusals) == 10
        assert all(
            f"hm1nd already has {limit} approvals waiting (at most {limit})" in r
            and "HIVE_MAX_PENDING_APPROVALS_PER_AGENT" in r
            for r in refusals
        ), refusals
        world.watched_ids.update(f"hive-spawn-flood{i}" for i in range(30))
        started = {wid for wid, _ in await world.workflows()} - {wid for wid, _ in before}
        assert started == {f"hive-spawn-flood{i}" for i in range(limit)}

        # The operator is not an agent: its spawn still goes through.
        world.watched_ids.add("hive-spawn-opsnew")
        workflow_id = await world.operator.spawn("opsnew", "the operator's own")
        assert workflow_id == "hive-spawn-opsnew"
    finally:
        await world.terminate_new(before, await world.workflows())
