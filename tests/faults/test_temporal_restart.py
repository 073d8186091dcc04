"""Kill and restart the Temporal server under a running hive-c0re.

The session's dev server is in memory and shared, so this test runs its own: the same
`temporal server start-dev` command hive's embedded server uses, with its history in a SQLite
file, so the workflows survive the restart. It overrides the `dev_server` fixture, which
`start_c0re` points hive-c0re at.

Messages go to two agents before, during and after the outage. While Temporal is down the
operator's send still stores the message and answers 201 (the store is the record; the wake-up
signal is retried by the client for about 10 s and then given up, logged). What must hold:
every message is delivered exactly once after Temporal is back, without a hive-c0re restart;
and a message sent during the outage must not need a later send to be woken for (the broker
retries failed wake-ups by itself).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from hyperhive.embedded_temporal import EmbeddedTemporal
from hyperhive.settings import HiveSettings
from tests.fakes.anthropic_api import FakeAnthropic, Text
from tests.faults import stored_rows
from tests.rig.agent_scripts import wake_of
from tests.rig.hive_process import wait_gone
from tests.rig.polling import eventually
from tests.rig.ports import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.faults]

AGENTS = ["a", "b"]


@pytest.fixture
def temporal_settings(tmp_path: Path, temporal_bin: str) -> HiveSettings:
    port, ui_port = free_ports(2)
    return HiveSettings(
        state_dir=tmp_path / "temporal",
        temporal_port=port,
        temporal_ui_port=ui_port,
        temporal_bin=temporal_bin,
    )


@pytest.fixture
async def dev_server(temporal_settings: HiveSettings) -> AsyncIterator[WorkflowEnvironment]:
    """This test's own dev server (history on disk); `temporal_settings` restarts it."""
    server = EmbeddedTemporal(temporal_settings)
    await server.start()
    client = await Client.connect(
        temporal_settings.temporal_target, data_converter=pydantic_data_converter
    )
    try:
        yield WorkflowEnvironment.from_client(client)
    finally:
        # Whichever server runs now (the test restarts it): stop it by its port's owner.
        for pid in _servers_of(temporal_settings):
            os.kill(pid, signal.SIGTERM)
        await server.stop()


def _servers_of(settings: HiveSettings) -> list[int]:
    db = str(settings.temporal_db_path)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "start-dev" in cmdline and db in cmdline:
            found.append(int(entry.name))
    return found


class Outage:
    """Two agents with a message handled each, Temporal SIGKILLed, a message sent to each while
    it is down, Temporal started again on the same history."""

    def __init__(self, settings: HiveSettings, fake: FakeAnthropic) -> None:
        self.settings = settings
        self.seen: list[tuple[str, str]] = []
        fake.responder = self.respond

    def respond(self, request):
        if (wake := wake_of(request)) is not None:
            self.seen.append((wake.agent, wake.body))
        return Text("noted")

    async def run(self, hive) -> None:
        for agent in AGENTS:
            await hive.send(agent, f"before {agent}")
        for agent in AGENTS:
            await hive.wait_status(agent, lambda s: s.turns_total == 1 and s.state == "idle")
        # Down, hard: no chance to flush anything.
        [pid] = _servers_of(self.settings)
        os.kill(pid, signal.SIGKILL)
        assert wait_gone([pid]) == []
        started = time.monotonic()
        results = await asyncio.gather(*(hive.send(a, f"during {a}") for a in AGENTS))
        # Stored (201) even so; the wake-up signal is retried by the client, then given up.
        print(f"sends during the outage answered in {time.monotonic() - started:.1f} s: {results}")
        assert {r["recipient"] for r in results} == set(AGENTS)
        assert hive.process.proc.poll() is None, "hive-c0re died with Temporal"
        await EmbeddedTemporal(self.settings).start()


async def test_messages_before_during_and_after_a_temporal_restart_arrive_once(
    temporal_settings: HiveSettings, start_c0re, fake_model: FakeAnthropic
):
    outage = Outage(temporal_settings, fake_model)
    hive = await start_c0re(agents=AGENTS)
    await outage.run(hive)
    for agent in AGENTS:
        await hive.send(agent, f"after {agent}")

    expected = {
        (agent, f"{when} {agent}") for agent in AGENTS for when in ("before", "during", "after")
    }

    def all_delivered():
        rows = stored_rows(hive)
        return len(rows) == len(expected) and all(r.delivered_at for r in rows)

    try:
        await eventually(
            lambda: asyncio.to_thread(all_delivered),
            what="every message delivered after the restart",
            timeout=120,
            interval=0.5,
        )
    except AssertionError as exc:
        waiting = [(r.recipient, r.body) for r in stored_rows(hive) if not r.delivered_at]
        raise AssertionError(f"{exc}; still undelivered: {waiting}") from None
    for agent in AGENTS:
        await hive.wait_status(agent, lambda s: s.state == "idle", timeout=60)
    rows = stored_rows(hive)
    assert {(r.recipient, r.body) for r in rows} == expected
    assert len(rows) == len(expected), "no message stored twice"
    assert all(r.turn_id for r in rows), "each claimed by a turn"
    assert len({r.turn_id for r in rows}) == len(rows), "one turn per message"
    assert set(outage.seen) == expected, "each reached the model"


async def test_a_message_sent_while_temporal_is_down_is_delivered_once_it_is_back(
    temporal_settings: HiveSettings, start_c0re, fake_model: FakeAnthropic
):
    outage = Outage(temporal_settings, fake_model)
    hive = await start_c0re(agents=AGENTS)
    await outage.run(hive)

    # Nothing else is sent: only hive-c0re itself can wake the agents for these.
    def during_delivered():
        rows = [r for r in stored_rows(hive) if r.body.startswith("during")]
        return len(rows) == len(AGENTS) and all(r.delivered_at for r in rows)

    await eventually(
        lambda: asyncio.to_thread(during_delivered),
        what="the outage's messages delivered",
        timeout=60,
        interval=0.5,
    )
