"""Replay recorded histories against today's workflow code: a non-deterministic change fails here.

Histories are recorded from real runs on the dev server with `python -m tests.workflows.record`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from workflows.registry import ALL_WORKFLOWS

HISTORY_DIR = Path(__file__).parent / "histories"
HISTORIES = sorted(HISTORY_DIR.glob("*.json"))

# spawn_approved.json with one edit: the build's ActivityTaskScheduled names `container_build`,
# as if recorded by code that called its build activity so. Today's code schedules
# `container_create` at that point, so the history is not one this code could have made.
RENAMED_BUILD = HISTORY_DIR / "nondeterministic" / "spawn_container_build.json"


def replayer() -> Replayer:
    return Replayer(workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter)


def test_there_are_recorded_histories() -> None:
    assert HISTORIES, "no recorded histories: run python -m tests.workflows.record"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    # Raises the replay failure (a NondeterminismError) when the code no longer matches.
    await replayer().replay_workflow(history)


async def test_a_history_the_code_no_longer_matches_is_rejected() -> None:
    recorded = (HISTORY_DIR / "spawn_approved.json").read_text()
    edited = RENAMED_BUILD.read_text()
    # Only the one edit: it, not some other damage, is what replay must catch.
    assert edited == recorded.replace('"name": "container_create"', '"name": "container_build"')
    assert edited != recorded

    result = await replayer().replay_workflow(
        WorkflowHistory.from_json(RENAMED_BUILD.stem, edited), raise_on_replay_failure=False
    )
    assert isinstance(result.replay_failure, NondeterminismError)
    assert "'container_build' does not match" in str(result.replay_failure)
