"""Where an agent's work goes when the hive has several hosts: what hive-c0re hands Temporal, read
back from the workflows' histories on the real dev server (no worker runs here, so the histories
hold only what was started)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from control.lifecycle import Lifecycle
from control.waker import TemporalWaker
from hyperhive.models import AgentWorkflowInput, SpawnRequest
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store import hosts as host_store
from hyperhive.store.db import make_engine, migrate
from hyperhive.temporal_ids import agent_workflow_id, spawn_workflow_id
from tests.rig.c0re import end_workflows

pytestmark = pytest.mark.integration

T = TypeVar("T", bound=BaseModel)


@pytest.fixture
async def client(dev_server: WorkflowEnvironment) -> AsyncIterator[Client]:
    yield dev_server.client
    await end_workflows(dev_server.client)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """This host alpha holds two agents, beta one, gamma none but is stopped."""
    engine = make_engine(f"sqlite:///{tmp_path / 'hive.db'}")
    migrate(engine)
    for host in ("alpha", "beta", "gamma"):
        host_store.host_started(engine, host, version="1", dashboard_url="")
    host_store.host_stopped(engine, "gamma")
    for name, host in (("a1", "alpha"), ("a2", "alpha"), ("b1", "beta")):
        agent_store.register_agent(engine, name, host)
    return engine


def settings(tmp_path: Path, **values: Any) -> HiveSettings:
    return HiveSettings(state_dir=tmp_path, host_id="alpha", **values)


async def started_with(client: Client, workflow_id: str, model: type[T]) -> T:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    payloads = history.events[0].workflow_execution_started_event_attributes.input.payloads
    [value] = await client.data_converter.decode(payloads, [model])
    assert isinstance(value, model)
    return value


def fresh(name: str) -> str:
    return f"{name}{uuid.uuid4().hex[:6]}"


async def test_a_new_agent_is_spawned_on_the_up_host_with_the_fewest_agents(
    client: Client, engine: Engine, tmp_path: Path
) -> None:
    name = fresh("n")
    await Lifecycle(client, settings(tmp_path), engine).request_spawn(
        name, "work", requester="operator"
    )
    # beta (1 agent) rather than alpha (2, the host asking) or gamma (0, but stopped).
    request = await started_with(client, spawn_workflow_id(name), SpawnRequest)
    assert request.host_task_queue == "hive-host-beta"


async def test_hive_spawn_host_pins_the_host_of_new_agents(
    client: Client, engine: Engine, tmp_path: Path
) -> None:
    name = fresh("p")
    await Lifecycle(client, settings(tmp_path, spawn_host="alpha"), engine).request_spawn(
        name, "work", requester="operator"
    )
    request = await started_with(client, spawn_workflow_id(name), SpawnRequest)
    assert request.host_task_queue == "hive-host-alpha"


async def test_an_agent_spawned_again_stays_on_its_host(
    client: Client, engine: Engine, tmp_path: Path
) -> None:
    name = fresh("r")
    agent_store.register_agent(engine, name, "gamma")  # destroyed: its container is absent
    await Lifecycle(client, settings(tmp_path), engine).request_spawn(
        name, "work", requester="operator"
    )
    request = await started_with(client, spawn_workflow_id(name), SpawnRequest)
    assert request.respawn and request.host_task_queue == "hive-host-gamma"


async def test_a_send_on_this_host_wakes_the_agent_on_its_own_host(
    client: Client, engine: Engine, tmp_path: Path
) -> None:
    name = fresh("w")
    agent_store.register_agent(engine, name, "beta")
    await TemporalWaker(client, settings(tmp_path), engine)(name)
    loop = await started_with(client, agent_workflow_id(name), AgentWorkflowInput)
    assert loop.host_task_queue == "hive-host-beta"
