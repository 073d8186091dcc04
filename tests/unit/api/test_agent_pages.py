"""The agent page (api/agent_pages.py) mounted both ways, at /agents/{name}/ as on the dashboard
and at / as on the agent's own port, on a real store and broker (SQLite, in-process bus). Temporal
is a recording stand-in: it takes signals for the turn loops it is told are running."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import stat
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api import agent_pages
from api.agent_page_servers import AgentPageServers
from api.agent_pages import agent_router
from api.csrf import CsrfGuard, CsrfMiddleware
from api.refusals import answer_refusals
from control.operator import OperatorService
from control.runtime import CoreRuntime
from hyperhive.broker import Broker, agent_events_topic
from hyperhive.bus import EventBus
from hyperhive.metrics import HiveMetrics
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store.agents import append_turn_events, register_agent, turn_events
from hyperhive.store.db import make_engine, migrate
from hyperhive.store.messages import recent_messages
from tests.rig.ports import free_port

OAUTH_TOKEN = "sk-ant-oat01-" + "Q" * 60 + "-tail"
CSRF_SECRET = b"s" * 32
TIMEOUT = 10

# Where the same page answers: the dashboard's mount and the agent's own port.
BASES = ["/agents/alice/", "/own/"]
STATIC_DIR = Path(agent_pages.__file__).parent / "static"


# -- a recording Temporal --------------------------------------------------------------------


@dataclass
class FakeTemporal:
    running: set[str] = field(default_factory=set)
    signals: list[tuple[str, str]] = field(default_factory=list)

    def get_workflow_handle(self, workflow_id: str, *, result_type: type | None = None) -> _Handle:
        return _Handle(self, workflow_id)


@dataclass
class _Handle:
    temporal: FakeTemporal
    workflow_id: str

    async def describe(self) -> Any:
        if self.workflow_id not in self.temporal.running:
            raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")
        return type("Described", (), {"status": WorkflowExecutionStatus.RUNNING})()

    async def signal(self, signal: str | Callable[..., Any]) -> None:
        # Recorded by name, as Temporal sees it (the turn loop's signals are named after their
        # methods).
        name = signal if isinstance(signal, str) else signal.__name__
        self.temporal.signals.append((self.workflow_id, name))


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> HiveSettings:
    return HiveSettings(state_dir=tmp_path, hyperhive_rev="test-rev", host_id="testhost")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'hive.db'}")
    migrate(eng)
    for name in ("hm1nd", "alice"):
        register_agent(eng, name, "testhost")
    yield eng
    eng.dispose()


@pytest.fixture
def woken() -> list[str]:
    return []


@pytest.fixture
async def broker(engine, woken, settings) -> AsyncIterator[Broker]:
    async def waker(agent: str) -> None:
        woken.append(agent)

    b = Broker(engine, EventBus(), waker, settings, recheck_interval_s=60)
    yield b
    await b.aclose()


@pytest.fixture
def temporal() -> FakeTemporal:
    return FakeTemporal()


@pytest.fixture
def warm() -> set[str]:
    """The agents whose claude the worker's warm pool has running (a test changes it)."""
    return set()


@pytest.fixture
def app(settings, engine, broker, temporal, warm) -> FastAPI:
    runtime = CoreRuntime(
        settings=settings,
        engine=engine,
        client=temporal,
        broker=broker,
        lifecycle=None,  # type: ignore[arg-type]
        metrics=HiveMetrics(engine),
        warm_agents=lambda: frozenset(warm),
    )
    guard = CsrfGuard(CSRF_SECRET)
    app = FastAPI()
    app.state.runtime = runtime
    app.state.operator = OperatorService(runtime)
    app.state.csrf = guard
    answer_refusals(app)
    app.add_middleware(CsrfMiddleware, guard=guard)
    app.include_router(agent_router(), prefix="/agents/{name}")
    # The agent's own port serves it at /; here under /own so both fit in one app.
    app.include_router(agent_router("alice"), prefix="/own")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    headers = {"X-Hive-CSRF": CsrfGuard(CSRF_SECRET).token}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", headers=headers
    ) as c:
        yield c


def claude_dir(settings: HiveSettings, agent: str = "alice") -> Path:
    return settings.agent_state_dir(agent) / "home" / ".claude"


# -- an SSE reader: httpx's ASGI transport buffers whole responses, and a stream never ends -----


class SseStream:
    """Drives the ASGI app directly and parses the SSE body as it arrives."""

    def __init__(self, app: FastAPI, path: str, headers: dict[str, str] | None = None) -> None:
        self._app = app
        self._path = path
        self._headers = headers or {}
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._disconnect = asyncio.Event()
        self._buffer = ""
        self.status: int | None = None
        self._started = asyncio.Event()

    async def __aenter__(self) -> SseStream:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": self._path,
            "raw_path": self._path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"hive"), (b"accept", b"text/event-stream")]
            + [(k.lower().encode(), v.encode()) for k, v in self._headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("hive", 80),
        }
        sent_request = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self._disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self._started.set()
            elif message["type"] == "http.response.body":
                self._chunks.put_nowait(message.get("body", b""))

        self._task = asyncio.create_task(self._app(scope, receive, send))
        await asyncio.wait_for(self._started.wait(), TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._disconnect.set()
        await asyncio.wait_for(self._task, TIMEOUT)

    async def ended(self) -> None:
        """Until the app has finished the response by itself (no disconnect from us)."""
        await self._task

    async def next(self) -> dict[str, str]:
        """The next dispatched event (fields id/event/data); waits for it, at most TIMEOUT."""
        while True:
            self._buffer = self._buffer.replace("\r\n", "\n")
            if "\n\n" in self._buffer:
                block, self._buffer = self._buffer.split("\n\n", 1)
                fields: dict[str, str] = {}
                for line in block.split("\n"):
                    if not line or line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    fields[name] = fields[name] + "\n" + value if name in fields else value
                if "data" in fields:  # a browser dispatches only events with data
                    return fields
                continue
            chunk = await asyncio.wait_for(self._chunks.get(), TIMEOUT)
            self._buffer += chunk.decode()

    async def next_turn_event(self) -> dict[str, Any]:
        while True:
            fields = await self.next()
            if fields.get("event", "message") == "message":
                data: dict[str, Any] = json.loads(fields["data"])
                assert fields["id"] == str(data["id"])  # the browser resumes from this id
                return data

    async def next_status(self) -> dict[str, Any]:
        while True:
            fields = await self.next()
            if fields.get("event") == "status":
                data: dict[str, Any] = json.loads(fields["data"])
                return data


def init_event() -> dict[str, Any]:
    return {
        "type": "system",
        "subtype": "init",
        "model": "claude-test",
        "tools": ["mcp__hive__send"],
        "mcp_servers": [{"name": "hive", "status": "connected"}],
        "permissionMode": "default",
        "session_id": "s1",
    }


def text_event(text: str) -> dict[str, Any]:
    return {"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}}


def tool_event() -> dict[str, Any]:
    block = {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "mcp__hive__send",
        "input": {"to": "bob", "body": "hi bob"},
    }
    return {"type": "assistant", "message": {"content": [block]}}


def result_event() -> dict[str, Any]:
    return {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": 1500,
        "num_turns": 2,
        "result": "done",
        "total_cost_usd": 0.0123,
        "usage": {"input_tokens": 200, "output_tokens": 40},
    }


def store_turn(engine: sa.Engine, turn_id: str, payloads: list[dict[str, Any]]) -> list[int]:
    """Store a turn's events as the turn activity does; their ids, in order."""
    before = {e.id for e in turn_events(engine, "alice", limit=100_000)}
    append_turn_events(
        engine, "alice", turn_id, [(i, p["type"], p) for i, p in enumerate(payloads)]
    )
    return [e.id for e in turn_events(engine, "alice", limit=100_000) if e.id not in before]


def publish(broker: Broker, turn_id: str, seq: int, payload: dict[str, Any]) -> None:
    broker.bus.publish(
        agent_events_topic("alice"),
        {"turn_id": turn_id, "seq": seq, "kind": payload["type"], "event": payload},
    )


# -- the page --------------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
async def test_the_page_has_the_controls_and_the_csrf_token(client, base):
    r = await client.get(base)
    assert r.status_code == 200, r.text
    page = r.text
    for testid in (
        "agent-events",
        "send-body",
        "send-button",
        "cancel-turn",
        "pause",
        "resume",
        "login-kind",
        "login-secret",
        "login-submit",
        "login-status",
        "agent-state",
    ):
        assert f'data-testid="{testid}"' in page, testid
    assert f'<meta name="hive-csrf" content="{CsrfGuard(CSRF_SECRET).token}">' in page
    assert f'data-base="{base}"' in page  # the script's API calls stay under this mount
    assert 'data-agent="alice"' in page
    assert "HiveAgent" in page  # the Temporal history link
    assert "nothing" in page  # no credentials stored yet


def warmth_badge(page: str) -> str:
    """What the page shows next to the agent's state: "warm" or "cold"."""
    match = re.search(
        r'<span class="warmth warmth-(\w+)"[^>]*data-testid="agent-warm"[^>]*>(\w+)<', page
    )
    assert match is not None, "no warm/cold badge on the page"
    assert match[1] == match[2], "the badge's class and text disagree"
    return match[2]


@pytest.mark.parametrize("base", BASES)
async def test_the_page_says_whether_the_agents_claude_is_warm(client, warm, base):
    page = (await client.get(base)).text
    assert warmth_badge(page) == "cold"
    # Next to the state, in the same line of the header.
    assert page.index('data-testid="agent-state"') < page.index('data-testid="agent-warm"')
    assert page.index('data-testid="agent-warm"') < page.index('data-testid="agent-status-text"')

    warm.add("alice")
    assert warmth_badge((await client.get(base)).text) == "warm"


async def test_an_unknown_agent_has_no_page(client):
    r = await client.get("/agents/nobody/")
    assert r.status_code == 404
    assert "nobody" in r.text
    r = await client.get("/agents/Not-A-Name!/api/events")
    assert r.status_code == 404 and r.json()["error"] == "unknown_agent"


# -- the live stream -------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
async def test_the_stream_replays_after_last_event_id_then_shows_new_events(
    app, engine, broker, base
):
    ids = store_turn(engine, "turn-1", [init_event(), text_event("hello operator"), result_event()])

    async with SseStream(app, base + "api/events", {"Last-Event-ID": str(ids[0])}) as stream:
        assert stream.status == 200
        text = await stream.next_turn_event()
        assert text["id"] == ids[1] and text["turn_id"] == "turn-1" and text["seq"] == 1
        assert text["items"] == [
            {
                "kind": "text",
                "text": "hello operator",
                "is_error": False,
                "tool_name": None,
                "tool_use_id": None,
                "detail": {},
            }
        ]
        result = await stream.next_turn_event()
        assert result["id"] == ids[2]
        [footer] = result["items"]
        assert footer["kind"] == "result"
        assert footer["detail"]["cost_usd"] == 0.0123
        assert footer["detail"]["input_tokens"] == 200 and footer["detail"]["output_tokens"] == 40
        assert footer["detail"]["duration_ms"] == 1500
        status = await stream.next_status()
        assert status["state"] == "idle"

        # A new turn's event, stored then published as the turn activity does, arrives live.
        [new_id] = store_turn(engine, "turn-2", [tool_event()])
        publish(broker, "turn-2", 0, tool_event())
        live = await stream.next_turn_event()
        assert live["id"] == new_id and live["turn_id"] == "turn-2"
        [call] = live["items"]
        assert call["kind"] == "tool_call" and call["tool_name"] == "mcp__hive__send"
        assert call["detail"]["arguments"] == {"to": "bob", "body": "hi bob"}


async def test_a_first_connect_replays_the_recent_history(app, engine, monkeypatch):
    ids = store_turn(engine, "turn-1", [init_event(), text_event("one"), text_event("two")])
    async with SseStream(app, "/agents/alice/api/events") as stream:
        assert [(await stream.next_turn_event())["id"] for _ in ids] == ids

    monkeypatch.setattr(agent_pages, "REPLAY_LIMIT", 2)
    async with SseStream(app, "/own/api/events") as stream:
        first = await stream.next_turn_event()
        assert first["id"] == ids[1], "only the newest REPLAY_LIMIT events are replayed"


async def test_a_status_change_reaches_the_page(app, broker):
    async with SseStream(app, "/agents/alice/api/events") as stream:
        assert (await stream.next_status())["status_text"] == ""
        await broker.set_status("alice", "reviewing the PR")
        assert (await stream.next_status())["status_text"] == "reviewing the PR"


async def test_a_change_of_warm_or_cold_reaches_the_page(app, warm, monkeypatch):
    # The warm pool publishes nothing: the stream sees the change at its next poll.
    monkeypatch.setattr(agent_pages, "STATUS_POLL_S", 0.05)
    async with SseStream(app, "/agents/alice/api/events") as stream:
        assert (await stream.next_status())["warm"] is False
        warm.add("alice")  # a turn started its claude
        status = await stream.next_status()
        assert status["warm"] is True and status["state"] == "idle"
        warm.discard("alice")  # it went cold (HIVE_WARM_IDLE_S)
        assert (await stream.next_status())["warm"] is False


async def test_open_streams_end_when_the_page_server_closes(engine, app):
    closing = asyncio.Event()
    app.include_router(agent_router("alice", closing=closing), prefix="/closing")
    async with SseStream(app, "/closing/api/events") as stream:
        await stream.next_status()
        closing.set()
        await asyncio.wait_for(stream.ended(), TIMEOUT)


async def test_open_streams_end_when_hive_c0re_stops(app, broker):
    runtime: CoreRuntime = app.state.runtime
    runtime.workers_running = True
    async with SseStream(app, "/agents/alice/api/events") as stream:
        await stream.next_status()
        # What hive-c0re does before it stops the dashboard's server; any event wakes the stream.
        runtime.workers_running = False
        await broker.set_status("alice", "bye")
        await asyncio.wait_for(stream.ended(), TIMEOUT)


# -- sending and turn control ----------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
async def test_send_goes_to_the_agent_as_the_operator(client, engine, woken, base):
    r = await client.post(base + "api/send", json={"body": "please review"})
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True and r.json()["recipient"] == "alice"
    [message] = recent_messages(engine, agent="alice")
    assert (message.sender, message.recipient, message.body) == (
        "operator",
        "alice",
        "please review",
    )
    assert woken == ["alice"]


async def test_refused_sends_say_why(client, engine):
    r = await client.post("/agents/alice/api/send", json={"body": "   "})
    assert r.status_code == 400
    assert r.json()["ok"] is False and r.json()["error"] == "missing_field" and r.json()["hint"]
    for content in (b"{not json", b'["hi"]'):
        r = await client.post(
            "/own/api/send", content=content, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"] == "bad_request" and r.json()["hint"]
    r = await client.post("/agents/nobody/api/send", json={"body": "hi"})
    assert r.status_code == 404 and r.json()["error"] == "unknown_agent"
    assert recent_messages(engine) == []


@pytest.mark.parametrize(
    ("action", "signal"), [("cancel", "cancel_turn"), ("pause", "pause"), ("resume", "resume")]
)
async def test_turn_control_signals_the_turn_loop(client, temporal, action, signal):
    temporal.running.add("hive-agent-alice")
    r = await client.post(f"/own/api/{action}")
    assert r.status_code == 200, r.text
    assert temporal.signals == [("hive-agent-alice", signal)]


async def test_turn_control_without_a_turn_loop_is_refused_with_a_hint(client, temporal):
    r = await client.post("/agents/alice/api/cancel")
    assert r.status_code == 409
    body = r.json()
    assert body["ok"] is False and "no turn loop" in body["message"]
    assert "hive start alice" in body["hint"]
    assert temporal.signals == []


async def test_every_post_needs_the_csrf_token(app, engine, settings):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as bare:
        for path, payload in [
            ("/agents/alice/api/send", {"body": "hi"}),
            ("/own/api/login", {"kind": "oauth_token", "secret": OAUTH_TOKEN}),
            ("/own/api/pause", {}),
        ]:
            r = await bare.post(path, json=payload)
            assert r.status_code == 403 and r.json()["error"] == "csrf", path
    assert recent_messages(engine) == []
    assert not (claude_dir(settings) / "hive-auth.json").exists()


# -- login -----------------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
async def test_login_with_an_oauth_token_stores_it_privately_and_tells_the_loop(
    client, settings, temporal, base
):
    temporal.running.add("hive-agent-alice")
    r = await client.post(base + "api/login", json={"kind": "oauth_token", "secret": OAUTH_TOKEN})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["kind"] == "oauth_token"
    assert OAUTH_TOKEN not in r.text and body["hint"].endswith("tail")
    stored = claude_dir(settings) / "hive-auth.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert json.loads(stored.read_text()) == {"kind": "oauth_token", "secret": OAUTH_TOKEN}
    assert temporal.signals == [("hive-agent-alice", "credentials_updated")]

    summary = (await client.get(base + "api/credentials")).json()
    assert summary["kind"] == "oauth_token" and OAUTH_TOKEN not in json.dumps(summary)
    page = (await client.get(base)).text
    assert body["hint"] in page and OAUTH_TOKEN not in page


async def test_login_with_a_credentials_file_from_a_form(client, settings):
    creds = json.dumps({"claudeAiOauth": {"accessToken": "sk-ant-oat01-abc", "refreshToken": "r"}})
    r = await client.post(
        "/agents/alice/api/login",
        data={
            "kind": "credentials_json",
            "secret": creds,
            "csrf_token": CsrfGuard(CSRF_SECRET).token,
        },
        headers={"X-Hive-CSRF": ""},  # the form field alone carries the token
    )
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "credentials_json" and "sk-ant-oat01-abc" not in r.text
    stored = claude_dir(settings) / ".credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stored.read_text() == creds


@pytest.mark.parametrize(
    ("kind", "secret", "error"),
    [
        ("oauth_token", "hello-not-a-token", "invalid_credentials"),
        ("api_key", "sk-ant-api03 with spaces", "invalid_credentials"),
        ("credentials_json", '{"claudeAiOauth": {}}', "invalid_credentials"),
        ("password", "sk-ant-oat01-x", "bad_kind"),
        ("oauth_token", "", "missing_field"),
    ],
)
async def test_bad_credentials_are_refused_with_a_hint_and_nothing_is_written(
    client, settings, temporal, kind, secret, error
):
    temporal.running.add("hive-agent-alice")
    r = await client.post("/own/api/login", json={"kind": kind, "secret": secret})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["ok"] is False and body["error"] == error and body["message"] and body["hint"]
    if secret:
        assert secret not in r.text
    written = list(claude_dir(settings).glob("*")) if claude_dir(settings).exists() else []
    assert written == []
    assert temporal.signals == []


# -- the page on the agent's own port --------------------------------------------------------


@pytest.fixture
def one_port() -> int:
    return free_port()


@pytest.fixture
def page_servers(app, settings, one_port) -> AgentPageServers:
    runtime: CoreRuntime = app.state.runtime
    # alice's whole page range is one free port, so the test knows where the page must be.
    runtime.settings = settings.model_copy(
        update={"agent_port_min": one_port, "agent_port_max": one_port}
    )
    return AgentPageServers(runtime, app.state.operator, app.state.csrf)


async def test_the_page_is_served_on_the_agents_own_port(page_servers, engine, one_port, app):
    try:
        assert await page_servers.start("alice") == one_port
        assert await page_servers.start("alice") == one_port, "a second start changes nothing"
        assert agent_store.agent_ports(engine) == {"alice": one_port}
        views = {a.name: a for a in await app.state.operator.agents()}
        assert views["alice"].page_url == f"http://127.0.0.1:{one_port}/"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{one_port}") as http:
            page = await http.get("/")
            assert page.status_code == 200 and 'data-agent="alice"' in page.text
            assert (await http.get("/static/agent.js")).status_code == 200
            forged = await http.post("/api/send", json={"body": "hi"})
            assert forged.status_code == 403
            token = CsrfGuard(CSRF_SECRET).token
            sent = await http.post("/api/send", json={"body": "hi"}, headers={"X-Hive-CSRF": token})
            assert sent.status_code == 200 and sent.json()["recipient"] == "alice"
    finally:
        await page_servers.stop_all()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{one_port}/")


async def test_a_port_held_by_another_program_costs_a_warning_not_the_agent(
    page_servers, engine, one_port, caplog, app
):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", one_port))
        squatter.listen()
        # No port left to choose: the page stays on the dashboard.
        assert await page_servers.start("alice") is None
        assert "alice's page has no port of its own" in caplog.text
        assert "/agents/alice/" in caplog.text
        # Its port was chosen before, and now another program has it.
        agent_store.set_agent_port(engine, "alice", one_port)
        caplog.clear()
        assert await page_servers.start("alice") is None
        assert f"cannot serve alice's page on 127.0.0.1:{one_port}" in caplog.text
        assert "stop whatever uses that port" in caplog.text
        # The squatter's port is no link to hand the operator: the page is the dashboard's.
        views = {a.name: a for a in await app.state.operator.agents()}
        assert views["alice"].page_url is None
        urls = await app.state.operator.urls()
        assert urls.agents["alice"].endswith("/agents/alice/")
    assert page_servers.running() == {}


@pytest.fixture
def two_pages(app, settings, one_port) -> tuple[AgentPageServers, dict[str, int]]:
    """Page servers where alice's page must be on one port and hm1nd's on another."""
    runtime: CoreRuntime = app.state.runtime
    ports = {"alice": one_port, "hm1nd": free_port()}
    runtime.settings = settings.model_copy(
        update={
            "agent_port_min": one_port,
            "agent_port_max": one_port,
            "manager_port": ports["hm1nd"],
        }
    )
    return AgentPageServers(runtime, app.state.operator, app.state.csrf), ports


async def _page_of(port: int) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as http:
        return await http.get("/")


async def test_each_port_answers_with_its_own_agent_and_stopping_one_leaves_the_other(
    two_pages, engine
):
    servers, ports = two_pages
    token = CsrfGuard(CSRF_SECRET).token
    try:
        assert await servers.start("alice") == ports["alice"]
        assert await servers.start("hm1nd") == ports["hm1nd"]
        assert servers.running() == ports
        for name, port in ports.items():
            page = await _page_of(port)
            assert page.status_code == 200 and f'data-agent="{name}"' in page.text
            other = "alice" if name == "hm1nd" else "hm1nd"
            assert f'data-agent="{other}"' not in page.text
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                sent = await http.post(
                    "/api/send", json={"body": f"to {name}"}, headers={"X-Hive-CSRF": token}
                )
            assert sent.status_code == 200 and sent.json()["recipient"] == name
        # The messages went to the agent whose port was used.
        bodies = {m.recipient: m.body for m in recent_messages(engine, limit=10)}
        assert bodies == {"alice": "to alice", "hm1nd": "to hm1nd"}

        # alice's page stops: its port refuses; hm1nd's still answers as hm1nd.
        await servers.stop("alice")
        assert servers.running() == {"hm1nd": ports["hm1nd"]}
        with pytest.raises(httpx.ConnectError):
            await _page_of(ports["alice"])
        page = await _page_of(ports["hm1nd"])
        assert page.status_code == 200 and 'data-agent="hm1nd"' in page.text

        # Served again on the same port.
        assert await servers.start("alice") == ports["alice"]
        assert 'data-agent="alice"' in (await _page_of(ports["alice"])).text
    finally:
        await servers.stop_all()
    assert servers.running() == {}
    for port in ports.values():
        with pytest.raises(httpx.ConnectError):
            await _page_of(port)
    # And after stop_all, a start serves afresh.
    try:
        assert await servers.start("hm1nd") == ports["hm1nd"]
        assert 'data-agent="hm1nd"' in (await _page_of(ports["hm1nd"])).text
    finally:
        await servers.stop_all()


async def test_stopping_a_page_ends_its_open_event_stream_and_keep_alive_connections(
    two_pages,
):
    servers, ports = two_pages
    try:
        await servers.start("alice")
        await servers.start("hm1nd")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ports['alice']}", timeout=TIMEOUT
        ) as http:
            assert (await http.get("/")).status_code == 200  # a kept-alive connection
            async with http.stream("GET", "/api/events") as stream:
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith("retry:")
                await servers.stop("alice")
                # The stream ends (rather than hanging until the browser hangs up).
                async with asyncio.timeout(TIMEOUT):
                    async for _ in lines:
                        pass
            with pytest.raises(httpx.TransportError):
                await http.get("/")
        assert 'data-agent="hm1nd"' in (await _page_of(ports["hm1nd"])).text
    finally:
        await servers.stop_all()
