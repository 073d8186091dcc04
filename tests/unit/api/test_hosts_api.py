"""Health per host where the operator looks: `/api/status`, the dashboard (page and stream) and
`hive status` / `hive list` over the admin socket, on the real app and a real store (Temporal
is a stand-in that fails the test if reached: none of this needs it).

The hive: this host `local` (up, alice and bob), `far` (its last beat 5 minutes old, carol) and
`old` (stopped cleanly, dave)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from api.admin_socket import AdminSocket
from api.app import create_app
from control.operator import OperatorService
from control.runtime import CoreRuntime
from hive_c0re import cli
from hyperhive.broker import Broker
from hyperhive.domain import AgentState
from hyperhive.errors import HiveError
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store import hosts as host_store
from hyperhive.store.db import begin
from hyperhive.store.tables import metadata, utcnow
from tests.rig.operator_app import asgi_client, runtime_without_temporal
from tests.rig.sse import SseStream

HOSTS = metadata.tables["hosts"]
TIMEOUT = 10.0
FAR_BEAT_AGO = timedelta(minutes=5)


@pytest.fixture
def broker_agents() -> tuple[str, ...]:
    return ("alice", "bob")


@pytest.fixture
def hive_settings(tmp_path, hive_run_dir) -> HiveSettings:
    return HiveSettings(state_dir=tmp_path / "state", run_dir=hive_run_dir, hyperhive_rev="rev-now")


def _far_beat_old(engine: Engine) -> None:
    with begin(engine, write=True) as conn:
        conn.execute(
            sa.update(HOSTS).where(HOSTS.c.id == "far").values(heartbeat_at=utcnow() - FAR_BEAT_AGO)
        )


@pytest.fixture
def hosts(store_engine: Engine, broker: Broker, hive_settings: HiveSettings) -> None:
    here = hive_settings.host_id
    for host in (here, "far", "old"):
        host_store.host_started(
            store_engine, host, version="0.1.0", dashboard_url=f"http://{host}:7000"
        )
    agent_store.register_agent(store_engine, "carol", "far")
    agent_store.set_agent_state(store_engine, "carol", AgentState.RUNNING)
    _far_beat_old(store_engine)
    agent_store.register_agent(store_engine, "dave", "old")
    host_store.host_stopped(store_engine, "old")


@pytest.fixture
def runtime(hive_settings: HiveSettings, store_engine: Engine, broker: Broker) -> CoreRuntime:
    return runtime_without_temporal(hive_settings, store_engine, broker, workers_running=True)


@pytest.fixture
def app(runtime: CoreRuntime) -> FastAPI:
    return create_app(runtime)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for client in asgi_client(app):
        yield client


# -- JSON --------------------------------------------------------------------------------------


async def test_status_lists_the_hosts_and_marks_the_agents_of_down_hosts(http, hosts):
    status = (await http.get("/api/status")).json()
    shown = {h["id"]: h for h in status["hosts"]}
    assert list(shown) == ["far", "local", "old"]
    assert [(h["up"], h["here"], h["agents"]) for h in shown.values()] == [
        (False, False, 1),
        (True, True, 2),
        (False, False, 1),
    ]
    assert shown["far"]["heartbeat_age_s"] >= FAR_BEAT_AGO.total_seconds()
    assert shown["far"]["stopped_at"] is None and shown["old"]["stopped_at"] is not None
    assert shown["local"]["version"] == "0.1.0"

    agents = {a["name"]: a for a in status["agents"]}
    assert {name: (a["host_id"], a["host_down"]) for name, a in agents.items()} == {
        "alice": ("local", False),
        "bob": ("local", False),
        "carol": ("far", True),
        "dave": ("old", True),
    }
    assert agents["carol"]["state"] == "running"  # the stored state is kept, for the record
    assert (await http.get("/api/hosts")).json() == status["hosts"]
    listed = {a["name"]: a["host_down"] for a in (await http.get("/api/agents")).json()}
    assert listed == {"alice": False, "bob": False, "carol": True, "dave": True}


async def test_this_host_is_up_for_its_agents_even_before_its_first_beat(http, broker):
    """The hive-c0re answering runs: its agents are never shown on a down host."""
    status = (await http.get("/api/status")).json()
    assert [(h["id"], h["up"], h["here"]) for h in status["hosts"]] == [("local", False, True)]
    assert {a["name"]: a["host_down"] for a in status["agents"]} == {
        "alice": False,
        "bob": False,
    }


# -- the dashboard -----------------------------------------------------------------------------


def _part(page: str, testid: str) -> str:
    part = page[page.index(f'data-testid="{testid}"') :]
    return part[: part.index("</tr>")]


async def test_the_dashboard_shows_the_hosts_and_a_down_hosts_agent(http, hosts):
    page = (await http.get("/")).text
    carol = _part(page, "agent-row-carol")
    assert 'class="state state-host_down"' in carol and ">host far down</span>" in carol
    assert "last known state was running" in carol
    assert 'data-testid="agent-host-carol" title="the host it runs on">@ far<' in carol
    alice = _part(page, "agent-row-alice")
    assert 'class="state state-idle"' in alice and "@ local" in alice

    assert 'data-testid="hosts-down">2 down<' in page
    far = _part(page, "host-row-far")
    assert 'data-testid="host-state-far">down</span>' in far and "since " in far
    assert 'data-testid="host-agents-far">1<' in far
    local = _part(page, "host-row-local")
    assert 'data-testid="host-state-local">up</span>' in local and "this host" in local
    assert 'data-testid="host-state-old">stopped</span>' in _part(page, "host-row-old")


@pytest.fixture
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app on a loopback port: the ASGI transport buffers whole responses, so a stream
    needs a real server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(
        uvicorn.Config(
            app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=1
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await asyncio.wait_for(task, TIMEOUT)
    sock.close()


async def test_the_stream_pushes_a_host_coming_back_and_its_agents(served, store_engine, hosts):
    async with (
        httpx.AsyncClient(base_url=served, timeout=TIMEOUT) as client,
        client.stream("GET", "/api/stream/messages") as r,
    ):
        events = SseStream(r)
        first = json.loads((await events.until("hosts"))["data"])
        assert first["down"] == 2 and 'data-testid="host-state-far">down<' in first["html"]

        await asyncio.to_thread(host_store.beat, store_engine, "far")
        # One rendering sends both: the agent rows first.
        agents = json.loads((await events.until("agents", "state-running"))["data"])
        assert "host far down" not in agents["html"] and "host old down" in agents["html"]
        back = json.loads((await events.until("hosts"))["data"])
        assert back["down"] == 1 and 'data-testid="host-state-far">up<' in back["html"]


# -- hive status / hive list -------------------------------------------------------------------


@pytest.fixture
async def admin(runtime: CoreRuntime, hive_settings: HiveSettings) -> AsyncIterator[None]:
    socket = AdminSocket(OperatorService(runtime), hive_settings)
    await socket.start()
    yield
    await socket.stop()


async def _hive(monkeypatch, capsys, settings: HiveSettings, *argv: str) -> str:
    monkeypatch.setenv("HIVE_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("HIVE_RUN_DIR", str(settings.run_dir))
    # The CLI blocks on its socket: run it off the event loop that serves the socket.
    code = await asyncio.to_thread(cli.run, list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return str(out)


def _row(lines: list[str], header: str, first: str) -> dict[str, str]:
    """The cells of the table row starting with `first`, by the column titles of `header`."""
    titles = header.split("  ")
    titles = [t.strip() for t in titles if t.strip()]
    starts = [header.index(t) for t in titles]
    line = next(line for line in lines if line.startswith(first + " "))
    ends = [*starts[1:], None]
    return {t: line[s:e].strip() for t, s, e in zip(titles, starts, ends, strict=True)}


async def test_hive_status_lists_the_hosts_and_a_down_hosts_agent(
    admin, hosts, hive_settings, monkeypatch, capsys
):
    out = await _hive(monkeypatch, capsys, hive_settings, "status")
    lines = out.splitlines()
    host_header = next(line for line in lines if line.startswith("HOST "))
    far = _row(lines, host_header, "far")
    assert far["STATE"].startswith("down since ") and far["STATE"].endswith(" s ago")
    assert int(far["LAST BEAT"].removesuffix(" s ago")) >= FAR_BEAT_AGO.total_seconds()
    assert far["AGENTS"] == "1" and far["VERSION"] == "0.1.0"
    local = _row(lines, host_header, "local (this host)")
    assert local["STATE"] == "up" and local["AGENTS"] == "2"
    assert _row(lines, host_header, "old")["STATE"].startswith("stopped at ")

    agent_header = next(line for line in lines if line.startswith("NAME "))
    carol = _row(lines, agent_header, "carol")
    assert (carol["STATE"], carol["HOST"]) == ("host far down", "far")
    # Its applied config is on far's disk: not read here, and not shown as broken.
    assert carol["MODEL"] == "(on far)"
    alice = _row(lines, agent_header, "alice")
    assert (alice["STATE"], alice["HOST"]) == ("idle", "local")
    assert "0 approvals pending" in out  # the rest as before

    listed = (await _hive(monkeypatch, capsys, hive_settings, "list")).splitlines()
    assert _row(listed, listed[0], "dave")["STATE"] == "host old down"
    as_json = json.loads(await _hive(monkeypatch, capsys, hive_settings, "status", "--json"))
    assert [h["id"] for h in as_json["hosts"] if h["here"]] == ["local"]


# -- what only an agent's own host can do ------------------------------------------------------


async def test_another_hosts_agent_credentials_are_refused_naming_its_host(http, hosts):
    """Its home dir (and so its credentials) is on its own host's disk, not this one's."""
    mine = await http.get("/agents/alice/api/credentials")
    assert mine.status_code == 200, mine.text
    refused = await http.get("/agents/carol/api/credentials")
    assert 400 <= refused.status_code < 500, refused.text
    body = refused.json()
    assert "carol lives on host far" in body["message"], body
    assert "host far" in body["hint"], body


async def test_a_commit_for_another_hosts_agent_is_refused_before_anything_starts(
    runtime: CoreRuntime, hosts: None
) -> None:
    """Its config repos are on its host: this host cannot check the commit, and says where to
    propose it (Temporal is never reached: NoTemporal would fail the test)."""
    with pytest.raises(HiveError) as refused:
        await runtime.lifecycle.request_apply_commit(
            "carol", "0" * 40, "a change", requester="operator"
        )
    assert "carol lives on host far" in refused.value.what
    assert "host far" in refused.value.hint
