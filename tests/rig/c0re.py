"""Run the real `hive c0re` against the test dev server, with agents driven by the fake model.

async def test_x(start_c0re, fake_model):
    hive = await start_c0re(agents=["a", "b"])
    await hive.send("a", "hello")           # as the operator, through the HTTP API
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from hyperhive import agent_flake, config_repo
from hyperhive.models import AgentStatus, Message
from hyperhive.store import agents as agent_store
from hyperhive.store import approvals as approval_store
from hyperhive.store import messages as message_store
from hyperhive.store.db import make_engine, migrate
from tests.fakes.anthropic_api import FakeAnthropic
from tests.rig.hive_process import HiveEnv, HiveProcess, run_hive
from tests.rig.polling import eventually


@dataclass
class RunningC0re:
    env: HiveEnv
    process: HiveProcess
    client: Client
    agents: list[str]
    run_dir: Path
    host_id: str = "local"
    settings_env: dict[str, str] = field(default_factory=dict)
    # Empty: the SQLite store in its state dir (what hive-c0re uses without HIVE_DB_URL).
    store_url: str = ""

    @property
    def db_url(self) -> str:
        return self.store_url or f"sqlite:///{self.env.state_dir / 'hive.db'}"

    def engine(self) -> Any:
        return make_engine(self.db_url)

    async def csrf_headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        """What a dashboard page sends with every POST."""
        token = (await http.get(f"{self.env.dashboard}/api/csrf")).json()["token"]
        return {"X-Hive-CSRF": token}

    async def send(self, to: str, body: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(
                f"{self.env.dashboard}/api/messages",
                json={"to": to, "body": body},
                headers=await self.csrf_headers(http),
            )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def operator_recv(self, wait_seconds: float = 60) -> Message | None:
        """Pop the operator's next message, long-polling for it as the dashboard does."""
        async with httpx.AsyncClient(timeout=wait_seconds + 30) as http:
            response = await http.post(
                f"{self.env.dashboard}/api/operator/recv",
                params={"wait_seconds": wait_seconds},
                headers=await self.csrf_headers(http),
            )
        if response.status_code == 204:
            return None
        assert response.status_code == 200, response.text
        return Message.model_validate(response.json())

    def workflow(self, agent: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(f"hive-agent-{agent}")

    async def status(self, agent: str) -> AgentStatus:
        result: AgentStatus = await self.workflow(agent).query("status", result_type=AgentStatus)
        return result

    async def wait_status(
        self, agent: str, check: Callable[[AgentStatus], bool], timeout: float = 60
    ) -> AgentStatus:
        """Poll the workflow's status query until `check` holds (queries have no push form)."""
        last: AgentStatus | None = None

        async def matched() -> AgentStatus | None:
            nonlocal last
            try:
                last = await self.status(agent)
            except RPCError:
                last = None
            return last if last is not None and check(last) else None

        return await eventually(
            matched,
            timeout=timeout,
            interval=0.1,
            what=lambda: f"{agent}'s status to match; last: {last}",
        )

    def messages(self, agent: str | None = None) -> list[Message]:
        engine = self.engine()
        try:
            return message_store.recent_messages(engine, agent=agent, limit=10_000)
        finally:
            engine.dispose()

    async def notice(self, containing: str, timeout: float = 120) -> Message:
        """The operator's next message containing `containing` (earlier ones are skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            message = await self.operator_recv(wait_seconds=min(left, 60))
            if message is not None and containing in message.body:
                return message
        raise AssertionError(f"no operator message containing {containing!r} in {timeout}s")

    def hive(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The `hive` CLI as the operator runs it against this hive-c0re."""
        return run_hive(self.env, *args, timeout=timeout)

    def approvals(self) -> list[approval_store.Approval]:
        engine = self.engine()
        try:
            return approval_store.list_approvals(engine)
        finally:
            engine.dispose()

    def pending_approval(self, kind: str) -> approval_store.Approval:
        [approval] = [a for a in self.approvals() if a.status == "pending" and a.kind == kind]
        return approval

    async def spawn_approved(self, name: str, purpose: str, *, timeout: float = 300) -> None:
        """`hive spawn`, then `hive approve` once the approval is there; until it is up."""
        requested = self.hive("spawn", name, "--purpose", purpose)
        assert requested.returncode == 0, requested.stdout + requested.stderr
        await self.notice(f"spawn {name}", timeout)  # "asks to spawn" or "asks to re-spawn"
        approved = self.hive("approve", str(self.pending_approval("spawn").id))
        assert approved.returncode == 0, approved.stdout + approved.stderr
        await self.notice(f"{name} is up", timeout)

    def restart(self) -> None:
        self.process = HiveProcess(self.env, "c0re")
        self.process.wait_ready()


StartC0re = Callable[..., Awaitable[RunningC0re]]


def register_spawned(state: Path, engine: Any, name: str, host_id: str, purpose: str = "") -> None:
    """An agent as an approved spawn leaves it before its container: its config repos (whose
    applied CLAUDE.md and settings.json its turns run with) and its row in the store."""
    config_repo.init_agent_repos(
        state,
        name,
        purpose=purpose or f"test agent {name}",
        hyperhive_rev=agent_flake.hyperhive_revision(),
        hyperhive_flake_url=str(agent_flake.hyperhive_checkout() or "/nonexistent"),
    )
    agent_store.register_agent(engine, name, host_id)


@pytest.fixture
async def start_c0re(
    tmp_path: Path,
    dev_server: WorkflowEnvironment,
    fake_model: FakeAnthropic,
    claude_bin: Path,
) -> AsyncIterator[StartC0re]:
    started: list[RunningC0re] = []
    # Unix socket paths are short (107 bytes): pytest's tmp_path can be too deep.
    run_dir = Path(tempfile.mkdtemp(prefix="hive-run-", dir="/tmp"))

    async def start(
        agents: list[str],
        *,
        state: Path | None = None,
        run: Path | None = None,
        store_url: str = "",
        **settings: str,
    ) -> RunningC0re:
        """`hive c0re` with `agents` registered on its host. One of several hosts sharing a
        store passes its own `state` and `run` dirs and the store's `store_url`."""
        state = state or tmp_path / "state"
        run = run or run_dir
        engine = make_engine(store_url or f"sqlite:///{state / 'hive.db'}")
        migrate(engine)
        # Its own task queues: pollers of an earlier test's hive-c0re never take its tasks.
        host_id = settings.pop("host_id", None) or f"t{uuid.uuid4().hex[:10]}"
        for name in agents:
            register_spawned(state, engine, name, host_id)
        engine.dispose()
        env = HiveEnv.fresh(state)
        env.extra.update(
            HIVE_RUN_DIR=str(run),
            HIVE_HOST_ID=host_id,
            HIVE_TEMPORAL_ADDRESS=dev_server.client.service_client.config.target_host,
            HIVE_CLAUDE_BIN=str(claude_bin),
            HIVE_CONTAINER_BACKEND="process",
            HIVE_AGENT_EXTRA_ENV=json.dumps(
                {"ANTHROPIC_BASE_URL": fake_model.base_url, "ANTHROPIC_API_KEY": "dummy"}
            ),
            HIVE_LOG_LEVEL="info",
            HIVE_CREATE_MANAGER="false",
        )
        if store_url:
            env.extra["HIVE_DB_URL"] = store_url
        env.extra.update({f"HIVE_{k.upper()}": v for k, v in settings.items()})
        process = HiveProcess(env, "c0re")
        process.wait_ready()
        running = RunningC0re(
            env, process, dev_server.client, agents, run, host_id, store_url=store_url
        )
        started.append(running)
        return running

    yield start

    for running in started:
        running.process.kill()
        # Shown by pytest when the test failed: the daemon's own account of what happened.
        print(f"--- hive c0re output ---\n{running.process.output()[-8000:]}")
    await end_workflows(dev_server.client)
    shutil.rmtree(run_dir, ignore_errors=True)


async def end_workflows(client: Client) -> None:
    """Workflows and schedules outlive the process: end them so the next test starts afresh."""
    async for schedule in await client.list_schedules():
        with contextlib.suppress(RPCError):
            await client.get_schedule_handle(schedule.id).delete()
    async for wf in client.list_workflows("ExecutionStatus = 'Running'"):
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(wf.id, run_id=wf.run_id).terminate("test over")
