"""What an agent cannot do, whatever it sends.

- Send, receive or set a status as another agent: its MCP socket decides who it is; tool
  arguments naming someone else are ignored or refused (served for real on unix sockets).
- Call the manager's tools: other agents' sockets do not list them, and calling them fails.
- Read another agent's credentials: each `home/.claude` is 0700 (files 0600) and mounted only in
  its own agent's sandbox; with the bwrap backend, alice's sandbox looks for bob's secret
  everywhere it can see (host paths, /proc/*/root, its own mounts) and finds it nowhere; nor does
  hm1nd's, which also mounts the proposed repos.
- Reach Temporal, the dashboard or the admin socket from a sandbox. tests/integration/
  test_bwrap_sandbox.py already shows a loopback service and the real Temporal dev server
  refused from the sandbox (test_host_services_are_unreachable_from_the_sandbox) and, end to
  end, Temporal and the dashboard of a running hive-c0re (test_an_agent_in_bwrap_answers_the_
  operator); here the real dashboard app (uvicorn on 127.0.0.1, also tried through the host's
  other addresses) and the real admin socket are tried from a sandbox.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine

from activities.backends.bwrap import BwrapBackend
from activities.backends.mounts import agent_mounts
from api.admin_socket import AdminSocket
from api.app import create_app
from api.manager_tools import extra_tools_for
from api.mcp_server import AgentMcpSockets
from control.lifecycle import Lifecycle
from control.operator import OperatorService
from control.runtime import CoreRuntime
from hyperhive.broker import Broker
from hyperhive.credentials import CredentialKind, save_credentials
from hyperhive.domain import MANAGER_NAME
from hyperhive.metrics import HiveMetrics
from hyperhive.settings import HiveSettings
from hyperhive.store.db import begin
from tests.integration.test_bwrap_sandbox import python_in, up
from tests.rig.mcp_client import text_of, uds_client

MANAGER_ONLY = {"request_spawn", "kill", "request_apply_commit", "list_agents"}
BOB_SECRET = "sk-ant-api03-bobs-own-secret-" + "Q" * 24


@pytest.fixture
async def sockets(
    hive_settings: HiveSettings, broker: Broker, store_engine: Engine
) -> AsyncIterator[AgentMcpSockets]:
    """alice's, bob's and hm1nd's MCP sockets as hive-c0re serves them (the manager tools on
    hm1nd's only). Nothing here reaches Temporal: no test calls a manager tool that would."""
    lifecycle = Lifecycle(cast(Any, None), hive_settings, store_engine)
    served = AgentMcpSockets(
        hive_settings, broker, extra_tools_for=extra_tools_for(lifecycle, store_engine)
    )
    for agent in ("alice", "bob", MANAGER_NAME):
        await served.start(agent)
    yield served
    await served.stop_all()


async def call(path: Path, tool: str, arguments: dict[str, Any]) -> tuple[bool, str]:
    async with uds_client(path) as client:
        result = await client.call_tool(tool, arguments)
    return bool(result.is_error), text_of(result)


# -- identity ---------------------------------------------------------------------------------


async def test_the_socket_decides_who_sends_whatever_the_arguments_say(
    hive_settings: HiveSettings, sockets: AgentMcpSockets, broker: Broker, store_engine: Engine
) -> None:
    alice = hive_settings.agent_socket_path("alice")
    impersonations = [
        {"sender": "bob"},
        {"from": "hm1nd"},
        {"agent": "bob", "as": "operator"},
        {"identity": "hm1nd", "socket": str(hive_settings.agent_socket_path("bob"))},
    ]
    for extra in impersonations:
        is_error, said = await call(alice, "send", {"to": "bob", "body": "hi", **extra})
        assert not is_error, said
    # Every message is from alice; nothing arrived in anyone's name but hers.
    with begin(store_engine) as conn:
        senders = {row[0] for row in conn.exec_driver_sql("SELECT sender FROM messages")}
    assert senders == {"alice"}

    # bob's inbox is read by bob's socket only: alice asking for it gets her own (empty) inbox.
    is_error, said = await call(alice, "recv", {"agent": "bob", "wait_seconds": 0})
    assert (is_error, said) == (False, "no messages")
    assert (await broker.whoami("bob")).pending == len(impersonations)

    # whoami and set_status act on alice too.
    _, said = await call(alice, "whoami", {"agent": "bob"})
    assert said.startswith("you are alice;"), said
    await call(alice, "set_status", {"text": "mine", "agent": "bob"})
    assert (await broker.whoami("alice")).status_text == "mine"
    assert not (await broker.whoami("bob")).status_text


async def test_each_agent_has_its_own_socket_dir_closed_to_others(
    hive_settings: HiveSettings, sockets: AgentMcpSockets
) -> None:
    paths = {a: hive_settings.agent_socket_path(a) for a in ("alice", "bob", MANAGER_NAME)}
    assert len({p.parent for p in paths.values()}) == 3, paths
    for path in paths.values():
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, oct(path.stat().st_mode)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, oct(path.parent.stat().st_mode)
    # Only its own socket dir is mounted in an agent's container (as /run/hive).
    for agent in ("alice", "bob", MANAGER_NAME):
        run_mounts = [m for m in agent_mounts(hive_settings, agent) if m.container == "/run/hive"]
        assert [m.host for m in run_mounts] == [paths[agent].parent]


async def test_only_the_managers_socket_has_the_manager_tools(
    hive_settings: HiveSettings, sockets: AgentMcpSockets, store_engine: Engine
) -> None:
    async with uds_client(hive_settings.agent_socket_path(MANAGER_NAME)) as client:
        manager = {t.name for t in (await client.list_tools()).tools}
    assert manager >= MANAGER_ONLY
    for agent in ("alice", "bob"):
        path = hive_settings.agent_socket_path(agent)
        async with uds_client(path) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"send", "recv", "whoami", "set_status"}, tools
        for tool, args in (
            ("request_spawn", {"name": "evil", "purpose": "take over"}),
            ("kill", {"name": MANAGER_NAME}),
            ("request_apply_commit", {"name": agent, "sha": "a" * 40, "description": "x"}),
            ("list_agents", {}),
        ):
            is_error, said = await call(path, tool, args)
            assert is_error and f"Unknown tool: {tool}" in said, (agent, tool, said)
    with begin(store_engine) as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM approvals").scalar_one() == 0


# -- credentials ---------------------------------------------------------------------------------


async def test_credentials_are_private_to_their_agent(hive_settings: HiveSettings) -> None:
    for agent in ("alice", "bob", MANAGER_NAME):
        claude = hive_settings.agent_state_dir(agent) / "home" / ".claude"
        save_credentials(claude, CredentialKind.API_KEY, f"sk-ant-api03-{agent}-key")
        assert stat.S_IMODE(claude.stat().st_mode) == 0o700
        for file in claude.iterdir():
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    # No agent's container mounts another agent's home, nor the state dir above them.
    homes = {a: hive_settings.agent_state_dir(a) for a in ("alice", "bob", MANAGER_NAME)}
    for agent in homes:
        for mount in agent_mounts(hive_settings, agent):
            host = mount.host.resolve()
            for other, home in homes.items():
                if other != agent:
                    assert not host.is_relative_to(home.resolve()), (agent, mount)
                    assert not home.resolve().is_relative_to(host), (agent, mount)


needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed")

SEARCH = """
import json, os
secret = os.environ['SECRET'].encode()
paths = json.loads(os.environ['PATHS'])
found, readable = [], {}
for p in paths:
    try:
        with open(p, 'rb') as f:
            readable[p] = secret in f.read()
    except OSError as e:
        readable[p] = type(e).__name__
for top in ('/root', '/run', '/tmp', '/work', '/etc', '/opt', '/agents', '/proc/1/root/root'):
    for root, dirs, files in os.walk(top, onerror=lambda e: None):
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, 'rb') as f:
                    if secret in f.read(1 << 20):
                        found.append(path)
            except OSError:
                pass
print(json.dumps({'found': found, 'readable': readable}))
"""


@pytest.fixture
async def boxes(hive_settings: HiveSettings) -> AsyncIterator[BwrapBackend]:
    backend = BwrapBackend(hive_settings)
    for agent in ("alice", "bob", MANAGER_NAME):
        await up(backend, hive_settings, agent)
    yield backend
    for agent in ("alice", "bob", MANAGER_NAME):
        await backend.destroy(agent)


@needs_bwrap
@pytest.mark.integration
async def test_no_sandbox_can_read_another_agents_credentials(
    hive_settings: HiveSettings, boxes: BwrapBackend
) -> None:
    bob_claude = hive_settings.agent_state_dir("bob") / "home" / ".claude"
    save_credentials(bob_claude, CredentialKind.API_KEY, BOB_SECRET)
    (bob_claude / ".credentials.json").write_text(json.dumps({"token": BOB_SECRET}))
    (bob_claude / ".credentials.json").chmod(0o600)
    state = hive_settings.state_path
    auth = bob_claude / "hive-auth.json"
    tries = [
        str(auth),
        str(bob_claude / ".credentials.json"),
        f"/proc/1/root{auth}",
        f"/proc/self/root{auth}",
        f"/root/../..{auth}",
        "/root/.claude/hive-auth.json",  # its own: alice has stored nothing
        str(state / "hive.db"),
        str(state / "secrets" / "csrf.key"),
    ]
    for agent in ("alice", MANAGER_NAME):
        code = (
            f"import os; os.environ['SECRET'] = {BOB_SECRET!r}; "
            f"os.environ['PATHS'] = {json.dumps(tries)!r}\n" + SEARCH
        )
        result = await python_in(boxes, agent, code)
        assert result["found"] == [], (agent, result["found"])
        assert not any(v is True for v in result["readable"].values()), (agent, result)
    # bob's own sandbox does see it (the search would find it).
    result = await python_in(
        boxes,
        "bob",
        f"import os; os.environ['SECRET'] = {BOB_SECRET!r}; os.environ['PATHS'] = '[]'\n" + SEARCH,
    )
    assert "/root/.claude/hive-auth.json" in result["found"], result


def _host_addresses() -> list[str]:
    """This host's own non-loopback addresses (no packet leaves the host to learn them)."""
    found = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it picks the source address
            found.add(s.getsockname()[0])
        except OSError:
            pass
    return sorted(a for a in found if not a.startswith("127."))


@needs_bwrap
@pytest.mark.integration
async def test_no_sandbox_reaches_the_dashboard_or_the_admin_socket(
    hive_settings: HiveSettings, boxes: BwrapBackend, broker: Broker, store_engine: Engine
) -> None:
    runtime = CoreRuntime(
        hive_settings,
        store_engine,
        cast(Any, None),
        broker,
        Lifecycle(cast(Any, None), hive_settings, store_engine),
        metrics=HiveMetrics(store_engine),
    )
    app = create_app(runtime)
    # Listening before uvicorn runs: connections wait in the backlog, no readiness polling.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    admin = AdminSocket(OperatorService(runtime), hive_settings)
    await admin.start()
    try:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/api/csrf")).status_code == 200
        reader, writer = await asyncio.open_unix_connection(str(admin.path))
        writer.write(b'{"version":1,"cmd":"urls"}\n')
        assert json.loads(await reader.readline())["ok"] is True
        writer.close()

        targets = ["127.0.0.1", "localhost", *_host_addresses()]
        code = f"""
import json, os, socket
def tcp(host):
    try:
        socket.create_connection((host, {port}), timeout=5).close()
        return 'connected'
    except OSError as e:
        return type(e).__name__
def unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return 'connected'
    except OSError as e:
        return type(e).__name__
print(json.dumps({{
    'dashboard': {{h: tcp(h) for h in {targets!r}}},
    'admin': [unix({str(admin.path)!r}), unix('/run/hive/../host.sock'),
              os.path.exists({str(hive_settings.run_path)!r})],
}}))
"""
        for agent in ("alice", MANAGER_NAME):
            result = await python_in(boxes, agent, code)
            assert all(v != "connected" for v in result["dashboard"].values()), result
            assert result["admin"][:2] == ["FileNotFoundError", "FileNotFoundError"], result
            assert result["admin"][2] is False, result
    finally:
        await admin.stop()
        server.should_exit = True
        await serving
        listener.close()
