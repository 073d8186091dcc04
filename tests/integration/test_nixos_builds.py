"""Container builds as long activities, end to end: the real hive-c0re on the real Temporal dev
server, with the nixos backend driving the fake `nixos-container` (tests/fakes/nixos_container.py,
through tests/fakes/nixos_hive.py), whose builds take FAKE_NIXOS_BUILD_SECONDS and fail with
FAKE_NIXOS_BUILD_FAILURE the way nix and the real CLI do.

- A spawn whose build takes 3 minutes completes with the default HIVE_BUILD_TIMEOUT_S, in one
  attempt: the build heartbeats, so neither its 60 s heartbeat timeout nor the 60 s that host
  activities get ends it. (Marked `slow`: it runs in `make test`; `-m "not slow"` skips it.)
- A spawn whose build fails is not retried (one `create`), and what nix said at the end reaches
  the operator: in the failed approval's note and in the operator's inbox.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

import tests.rig.hive_process
from tests.fakes.nixos_container import FakeInstall
from tests.fakes.nixos_hive import nixos_hive_command
from tests.rig.c0re import RunningC0re, StartC0re

pytestmark = pytest.mark.integration

BUILD_S = 180  # three times the heartbeat timeout, and the old 60 s limit
REAL_ERROR = "error: attribute 'hive-agent' missing, at /nix/store/x-source/agent.nix:3:5"
BUILDER_LOG = "\n".join(f"compiling part {i}" for i in range(1, 41)) + f"\n{REAL_ERROR}"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeInstall:
    """The fake on hive-c0re's PATH, and `hive` started as tests/fakes/nixos_hive.py."""
    install = FakeInstall(tmp_path / "fake")
    install.apply(monkeypatch)
    hive = nixos_hive_command(tmp_path / "hive-bin")
    monkeypatch.setattr(tests.rig.hive_process, "HIVE", str(hive))
    return install


async def request_and_approve(hive: RunningC0re, name: str) -> int:
    requested = hive.hive("spawn", name, "--purpose", "builds slowly")
    assert requested.returncode == 0, requested.stdout + requested.stderr
    await hive.notice(f"asks to spawn {name}")
    approval = hive.pending_approval("spawn")
    approved = hive.hive("approve", str(approval.id))
    assert approved.returncode == 0, approved.stdout + approved.stderr
    return approval.id


# Each activity task event after the scheduling one, by the field holding its attributes.
AFTER_SCHEDULED = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED: "activity_task_started_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
}


async def create_activity_events(hive: RunningC0re, name: str) -> list[HistoryEvent]:
    """The spawn workflow's history events of its container_create activity. (Temporal records
    one STARTED, of the last attempt, with that attempt's number.)"""
    history = await hive.client.get_workflow_handle(f"hive-spawn-{name}").fetch_history()
    scheduled: set[int] = set()
    events = []
    for e in history.events:
        if (
            e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == "container_create"
        ):
            scheduled.add(e.event_id)
            events.append(e)
        elif (
            e.event_type in AFTER_SCHEDULED
            and getattr(e, AFTER_SCHEDULED[e.event_type]).scheduled_event_id in scheduled
        ):
            events.append(e)
    return events


def kinds(events: list[HistoryEvent]) -> list[str]:
    return [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_ACTIVITY_TASK_") for e in events]


def creates(fake: FakeInstall) -> list[list[str]]:
    return [argv for argv in fake.argvs() if argv[0] == "create"]


@pytest.mark.slow
async def test_a_three_minute_build_completes_a_spawn(
    start_c0re: StartC0re, fake: FakeInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NIXOS_BUILD_SECONDS", str(BUILD_S))
    hive = await start_c0re(agents=[], container_backend="nixos")  # HIVE_BUILD_TIMEOUT_S: default

    await request_and_approve(hive, "bob")
    approved = asyncio.get_running_loop().time()
    await hive.notice("bob is up", timeout=BUILD_S + 120)
    took = asyncio.get_running_loop().time() - approved

    assert took >= BUILD_S, f"the build took {took:.0f} s: did the fake build at all?"
    assert len(creates(fake)) == 1, fake.argvs()
    [scheduled, started, completed] = await create_activity_events(hive, "bob")
    assert kinds([scheduled, started, completed]) == ["SCHEDULED", "STARTED", "COMPLETED"]
    attributes = scheduled.activity_task_scheduled_event_attributes
    assert attributes.heartbeat_timeout.ToTimedelta() == timedelta(seconds=60)
    assert attributes.start_to_close_timeout.ToTimedelta() == timedelta(seconds=1800)
    assert started.activity_task_started_event_attributes.attempt == 1
    [agent] = [a for a in json.loads(hive.hive("list", "--json").stdout) if a["name"] == "bob"]
    assert agent["container_status"] == "up", agent
    [approval] = hive.approvals()
    assert approval.status == "approved"


async def test_a_failed_build_is_tried_once_and_the_operator_reads_why(
    start_c0re: StartC0re, fake: FakeInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NIXOS_BUILD_SECONDS", "2")  # nix's progress lines come first
    monkeypatch.setenv("FAKE_NIXOS_BUILD_FAILURE", BUILDER_LOG)
    hive = await start_c0re(agents=[], container_backend="nixos")

    approval_id = await request_and_approve(hive, "bob")
    notice = await hive.notice("the spawn of bob failed")

    # Tried once: a second build of the same flake would fail the same way.
    assert len(creates(fake)) == 1, fake.argvs()
    events = await create_activity_events(hive, "bob")
    assert kinds(events) == ["SCHEDULED", "STARTED", "FAILED"]
    assert events[1].activity_task_started_event_attributes.attempt == 1
    failure = events[-1].activity_task_failed_event_attributes.failure
    assert failure.application_failure_info.type == "BackendError:permanent"
    assert failure.application_failure_info.non_retryable
    # Nothing half-made is left: the backend removed what the failed create made.
    assert not fake.conf("h-bob").exists()

    # The operator reads what failed, nix's last lines and what to do, in the failed
    # approval's note (dashboard, `hive approvals --json`) and in the inbox.
    [approval] = json.loads(hive.hive("approvals", "--json").stdout)
    assert approval["id"] == approval_id and approval["status"] == "failed", approval
    for text in (approval["note"], notice.body):
        assert_says_why(text)
    assert notice.body.startswith("the spawn of bob failed: building container h-bob from its")


def assert_says_why(text: str) -> None:
    assert "building container h-bob from its flake failed (`nixos-container create h-bob" in text
    assert "error: builder for '/nix/store/" in text  # which derivation failed
    assert f"> {REAL_ERROR}" in text  # the builder's last lines, up to the real error
    assert "failed to build container from flake" in text  # the CLI's own last word
    assert "compiling part 1\n" not in text and "building '/nix/store/" not in text
    hint = text.rsplit("\n  → ", 1)[1]
    assert "fix what nix's error above points at" in hint and "agent.nix" in hint, hint
    assert "spawn the agent again" in hint, hint
