"""Pytest plugin: a real `Broker` on a real SQLite store, with a recording waker as its only fake.

Enabled by ``pytest_plugins = [..., "tests.rig.broker"]`` in ``tests/conftest.py``. Fixtures:

- ``hive_settings``: `HiveSettings` with the state dir under ``tmp_path`` and a short run dir
  under /tmp (unix socket paths are limited to 107 bytes, and pytest's ``tmp_path`` is long).
- ``store_engine``: a migrated SQLite store (a file in the state dir), disposed afterwards.
- ``broker_agents``: the agents registered in the store (override it in a test module to change
  them); the default is alice, bob and the manager hm1nd.
- ``waker``: a `RecordingWaker` (``waker.woken`` lists the agents woken, in order).
- ``broker``: `Broker(store_engine, EventBus(), waker, hive_settings)` with ``broker_agents``
  registered; waits for its background wake-ups at teardown.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from hyperhive.broker import Broker
from hyperhive.bus import EventBus
from hyperhive.domain import MANAGER_NAME
from hyperhive.settings import HiveSettings
from hyperhive.store.agents import register_agent
from hyperhive.store.db import make_engine, migrate


@dataclass
class RecordingWaker:
    """A `Waker` that records whom it was asked to wake; `fail` makes it raise instead."""

    woken: list[str] = field(default_factory=list)
    fail: bool = False

    async def __call__(self, agent: str) -> None:
        if self.fail:
            raise RuntimeError(f"recording waker told to fail (waking {agent})")
        self.woken.append(agent)


@pytest.fixture
def hive_run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hive-run-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hive_settings(tmp_path: Path, hive_run_dir: Path) -> HiveSettings:
    return HiveSettings(state_dir=tmp_path / "state", run_dir=hive_run_dir)


@pytest.fixture
def store_engine(hive_settings: HiveSettings) -> Iterator[Engine]:
    engine = make_engine(hive_settings.database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def broker_agents() -> tuple[str, ...]:
    return ("alice", "bob", MANAGER_NAME)


@pytest.fixture
def waker() -> RecordingWaker:
    return RecordingWaker()


@pytest.fixture
async def broker(
    store_engine: Engine,
    waker: RecordingWaker,
    hive_settings: HiveSettings,
    broker_agents: tuple[str, ...],
) -> AsyncIterator[Broker]:
    for name in broker_agents:
        register_agent(store_engine, name, hive_settings.host_id)
    broker = Broker(store_engine, EventBus(), waker, hive_settings)
    yield broker
    await broker.aclose()
