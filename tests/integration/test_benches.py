"""`make bench` keeps working: each benchmark runs end to end at a tiny size and yields its rows.

The figures themselves are not asserted (they move with the machine's load); what is asserted is
that every bench finishes and measures something. A bench that stopped matching the code (a fake
claude the turn activity now refuses, an activity missing from a bench's worker) fails here
instead of in the next `make bench`.
"""

from __future__ import annotations

import re

import pytest

from bench import (
    agent_task,
    cold_start,
    cross_host,
    dashboard_update,
    history_length,
    idle_agents,
    recv_wake,
    send_to_turn,
    warm_agents,
)
from bench.common import Row

pytestmark = pytest.mark.integration

NUMBER = re.compile(r"\d")


def assert_measured(rows: list[Row], expected: int) -> None:
    assert len(rows) == expected
    for row in rows:
        assert row.command.startswith(".venv/bin/python -m bench."), row.command
        assert NUMBER.search(row.result), row.result


async def test_send_to_turn_measures_hive_and_its_baseline() -> None:
    assert_measured(await send_to_turn.run(sends=3), 2)


async def test_cross_host_measures_a_remote_agent_and_a_local_one() -> None:
    assert_measured(await cross_host.run(sends=4), 2)


async def test_agent_task_runs_the_real_claude_through_hive_and_bare() -> None:
    assert_measured(await agent_task.run(1), 2)


async def test_warm_agents_measures_warm_and_cold_hives() -> None:
    rows = await warm_agents.run(samples=2, cold_samples=1, agents=2, hops=2)
    assert_measured(rows, 6)
    assert "2 of 2 turns ran warm" in rows[0].result, rows[0].result
    assert "0 of 1 turns ran warm" in rows[2].result, rows[2].result


async def test_recv_wake_measures() -> None:
    assert_measured(await recv_wake.run(20), 2)


async def test_idle_agents_measures_a_few_agents() -> None:
    assert_measured(await idle_agents.run(3, window_s=1.0), 2)


async def test_dashboard_update_measures_many_tabs_and_one() -> None:
    assert_measured(await dashboard_update.run(2), 2)


async def test_history_length_continues_as_new() -> None:
    rows = await history_length.run(20, turns_per_run=5)
    assert_measured(rows, 2)
    # 20 turns at 5 per run: four full runs and the one waiting for the next message.
    assert rows[0].result.startswith("5 runs"), rows[0].result


def test_cold_start_reaches_health() -> None:
    assert cold_start.one_run() > 0
