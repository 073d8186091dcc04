"""The dashboard (api/dashboard.py) on the real app (`api.app.create_app`): a real store, broker
and bus; Temporal is a stand-in that fails the test if it is reached, because everything here
(reading, refusing) must work without it. Approving end to end is tests/integration/
test_dashboard_flow.py.

The page and the JSON API go through httpx's ASGI transport; the SSE stream through a real
uvicorn on a loopback port, since the ASGI transport buffers whole responses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from api.app import create_app
from control.runtime import CoreRuntime
from hyperhive.broker import Broker
from hyperhive.domain import AgentState, ApprovalStatus
from hyperhive.models import NewApproval
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store import approvals as approval_store
from hyperhive.store import messages as message_store
from tests.rig.operator_app import asgi_client, runtime_without_temporal
from tests.rig.polling import eventually
from tests.rig.sse import SseStream

TIMEOUT = 10.0
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def broker_agents() -> tuple[str, ...]:
    return ("alice", "hm1nd")


@pytest.fixture
def hive_settings(tmp_path: Path, hive_run_dir: Path) -> HiveSettings:
    return HiveSettings(state_dir=tmp_path / "state", run_dir=hive_run_dir, hyperhive_rev="rev-now")


@pytest.fixture
def runtime(hive_settings: HiveSettings, store_engine: Engine, broker: Broker) -> CoreRuntime:
    return runtime_without_temporal(hive_settings, store_engine, broker)


@pytest.fixture
def app(runtime: CoreRuntime) -> FastAPI:
    return create_app(runtime)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for client in asgi_client(app):
        yield client


@pytest.fixture
def csrf(app: FastAPI) -> dict[str, str]:
    return {"X-Hive-CSRF": app.state.csrf.token}


def _approval(
    engine: Engine, kind: str, agent: str, *, diff: str = "", requester: str = "hm1nd"
) -> int:
    return approval_store.create_approval(
        engine,
        NewApproval(
            kind=kind,
            agent=agent,
            requester=requester,
            description=f"{kind} for {agent}",
            workflow_id=f"hive-{kind}-{agent}",
            diff=diff,
        ),
    )


@pytest.fixture
def hive(store_engine: Engine, broker: Broker) -> dict[str, int]:
    """alice busy on an old hyperhive; hm1nd idle; one approval waiting, one decided."""
    agent_store.set_agent_state(store_engine, "alice", AgentState.RUNNING)
    agent_store.set_container_status(store_engine, "alice", "up")
    agent_store.set_deployed(store_engine, "alice", sha=SHA, hyperhive_rev="rev-old")
    agent_store.set_status_text(store_engine, "alice", "refactoring the <parser>")
    agent_store.add_spend(store_engine, "alice", 12.5)
    agent_store.record_turn(store_engine, agent="alice", cost_usd=0.0123)
    agent_store.touch_activity(store_engine, "alice")
    decided = _approval(store_engine, "spawn", "carol", requester="operator")
    approval_store.set_approval_status(
        store_engine, decided, ApprovalStatus.APPROVED, by="ops", note="welcome carol"
    )
    pending = _approval(
        store_engine,
        "apply_commit",
        "alice",
        diff="--- a/agent.nix\n+++ b/agent.nix\n-  memory = 1;\n+  memory = 2;\n",
    )
    return {"pending": pending, "decided": decided}


def _pending(engine: Engine, approval_id: int) -> bool:
    approval = approval_store.get_approval(engine, approval_id)
    assert approval is not None
    return approval.status == ApprovalStatus.PENDING.value


def _stored_messages(engine: Engine) -> int:
    return len(message_store.recent_messages(engine, limit=1000))


# -- the page --------------------------------------------------------------------------------


async def test_the_page_shows_agents_and_approvals_from_the_store(http, app, hive):
    r = await http.get("/")
    assert r.status_code == 200, r.text
    page = r.text
    assert f'<meta name="hive-csrf" content="{app.state.csrf.token}">' in page

    alice = page[page.index('data-testid="agent-row-alice"') :]
    alice = alice[: alice.index("</tr>")]
    assert 'class="state state-running"' in alice
    assert SHA[:12] in alice and SHA not in alice.replace(f'title="{SHA}"', "")
    assert 'data-testid="agent-stale-alice"' in alice  # built from rev-old, hive runs rev-now
    assert "$0.0123" in alice and "$12.50" in alice
    assert "refactoring the &lt;parser&gt;" in alice  # escaped, not markup
    assert "HiveAgent%3D%22alice%22" in alice  # its history in the Temporal Web UI
    for action in ("start", "stop", "restart", "kill", "destroy"):
        assert f'data-testid="{action}-alice"' in alice
    hm1nd = page[page.index('data-testid="agent-row-hm1nd"') :]
    assert "stale" not in hm1nd[: hm1nd.index("</tr>")]  # no container, nothing to be stale

    pending, decided = hive["pending"], hive["decided"]
    assert page.index(f'data-testid="approval-{pending}"') < page.index(
        f'data-testid="approval-{decided}"'
    ), "pending approvals come first"
    assert f'data-testid="approve-{pending}">◆ APPR0VE</button>' in page
    assert f'data-testid="deny-{pending}">DENY</button>' in page
    assert '<span class="diff-add">+  memory = 2;</span>' in page
    assert "1 pending" in page
    carol = page[page.index(f'data-testid="approval-{decided}"') :]
    assert "approved" in carol and "ops" in carol and "welcome carol" in carol
    assert f'data-testid="approve-{decided}"' not in page  # decided: nothing to click

    assert '<option value="alice">alice</option>' in page  # the send box's recipients
    assert (await http.get("/static/dashboard.js")).status_code == 200


async def test_an_empty_hive_says_so(http, store_engine):
    page = (await http.get("/")).text
    assert "no approvals" in page
    assert 'data-testid="agent-row-alice"' in page


async def test_json_endpoints(http, hive):
    agents = {a["name"]: a for a in (await http.get("/api/agents")).json()}
    assert agents["alice"]["stale"] is True and agents["alice"]["state"] == "running"
    assert agents["alice"]["spend_today_usd"] == pytest.approx(0.0123)
    assert agents["hm1nd"]["is_manager"] is True and agents["hm1nd"]["stale"] is False
    approvals = (await http.get("/api/approvals")).json()
    assert [a["id"] for a in approvals] == [hive["pending"], hive["decided"]]
    status = (await http.get("/api/status")).json()
    assert status["approvals_pending"] == 1 and status["hyperhive_rev"] == "rev-now"


# -- CSRF ------------------------------------------------------------------------------------


async def test_posts_without_the_csrf_token_are_refused_and_change_nothing(
    http, csrf, store_engine, hive
):
    pending = hive["pending"]
    for headers in ({}, {"X-Hive-CSRF": "not-the-token"}):
        r = await http.post(f"/api/approvals/{pending}/approve", json={}, headers=headers)
        assert r.status_code == 403
        assert r.json()["error"] == "csrf" and r.json()["hint"]
        r = await http.post("/api/messages", json={"to": "alice", "body": "hi"}, headers=headers)
        assert r.status_code == 403
        r = await http.post("/api/agents/alice/destroy", json={"confirm": "alice"}, headers=headers)
        assert r.status_code == 403
    assert _pending(store_engine, pending)
    assert _stored_messages(store_engine) == 0
    assert agent_store.get_agent(store_engine, "alice") is not None

    r = await http.post("/api/messages", json={"to": "alice", "body": "hi"}, headers=csrf)
    assert r.status_code == 201, r.text
    assert _stored_messages(store_engine) == 1


async def test_a_form_post_may_carry_the_token_as_a_field(http, app):
    r = await http.post(
        "/api/approvals/999/deny", data={"csrf_token": app.state.csrf.token, "note": "no"}
    )
    assert r.status_code == 404  # past the CSRF check: there is no approval 999


# -- refusals --------------------------------------------------------------------------------


async def test_an_unknown_approval_is_404_with_a_hint(http, csrf):
    r = await http.post("/api/approvals/4242/approve", json={"note": "ok"}, headers=csrf)
    assert r.status_code == 404
    body = r.json()
    assert body["ok"] is False and body["error"] == "unknown_approval"
    assert "#4242" in body["message"] and body["hint"]


async def test_a_decided_approval_is_not_decided_again(http, csrf, store_engine, hive):
    r = await http.post(f"/api/approvals/{hive['decided']}/deny", headers=csrf)
    assert r.status_code == 409
    assert r.json()["message"] == f"approval #{hive['decided']} is already approved by ops"
    decided = approval_store.get_approval(store_engine, hive["decided"])
    assert decided is not None and decided.status == "approved"


async def test_a_malformed_body_is_400(http, csrf, store_engine, hive):
    r = await http.post(
        f"/api/approvals/{hive['pending']}/approve",
        content=b"{not json",
        headers={**csrf, "content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    r = await http.post(f"/api/approvals/{hive['pending']}/approve", json={"note": 3}, headers=csrf)
    assert r.status_code == 400 and "note" in r.json()["message"]
    assert _pending(store_engine, hive["pending"])


@pytest.mark.parametrize("payload", [None, {}, {"confirm": "yes"}, {"confirm": "hm1nd"}])
async def test_destroy_needs_the_name_confirmed(http, csrf, store_engine, payload):
    r = await http.post("/api/agents/alice/destroy", json=payload, headers=csrf)
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "confirm_required"
    assert '{"confirm": "alice"}' in body["hint"]
    assert agent_store.get_agent(store_engine, "alice") is not None  # and Temporal untouched


async def test_unknown_agents_and_actions_are_404(http, csrf):
    r = await http.post("/api/agents/zed/stop", headers=csrf)
    assert r.status_code == 404 and r.json()["error"] == "unknown_agent"
    r = await http.post("/api/agents/alice/explode", headers=csrf)
    assert r.status_code == 404 and r.json()["error"] == "unknown_action"
    assert "destroy" in r.json()["hint"]


# -- the live stream -------------------------------------------------------------------------


@pytest.fixture
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app on a loopback port, for streaming clients."""
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


@pytest.fixture
async def stream_client(served: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served, timeout=TIMEOUT) as client:
        yield client


async def test_the_stream_resumes_after_last_event_id_then_goes_live(
    stream_client, broker, store_engine
):
    sent = [await broker.send("alice", "hm1nd", f"note {i}") for i in range(3)]
    headers = {"Last-Event-ID": str(sent[0].id)}
    async with stream_client.stream("GET", "/api/stream/messages", headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = SseStream(r)
        ready = await events.next()
        assert ready["event"] == "ready" and ready["id"] == str(sent[0].id)
        assert "retry" in ready
        replayed = [await events.until("message") for _ in range(2)]
        assert [e["id"] for e in replayed] == [str(s.id) for s in sent[1:]]
        assert [json.loads(e["data"])["body"] for e in replayed] == ["note 1", "note 2"]
        # Then the rows the page shows, once.
        agents = json.loads((await events.until("agents"))["data"])
        assert agents["count"] == 2 and 'data-testid="agent-row-alice"' in agents["html"]

        live = await broker.send("hm1nd", "operator", "all done")
        event = await events.until("message")
        assert event["id"] == str(live.id)
        message = json.loads(event["data"])
        assert (message["sender"], message["recipient"], message["body"]) == (
            "hm1nd",
            "operator",
            "all done",
        )


async def test_an_impossible_last_event_id_starts_afresh_instead_of_killing_the_stream(
    stream_client, broker
):
    sent = [await broker.send("alice", "hm1nd", f"m{i}") for i in range(2)]
    headers = {"Last-Event-ID": "99999999999999999999"}  # past SQLite's 64-bit ids
    async with stream_client.stream("GET", "/api/stream/messages", headers=headers) as r:
        assert r.status_code == 200
        events = SseStream(r)
        assert (await events.next())["event"] == "ready"
        assert [(await events.until("message"))["id"] for _ in sent] == [str(s.id) for s in sent]


async def test_a_first_connect_starts_with_recent_messages_or_after(stream_client, broker):
    sent = [await broker.send("alice", "hm1nd", f"m{i}") for i in range(3)]
    async with stream_client.stream("GET", "/api/stream/messages") as r:
        events = SseStream(r)
        ready = await events.next()
        assert ready["id"] == str(sent[0].id - 1)  # a reconnect replays what follows
        assert [(await events.until("message"))["id"] for _ in sent] == [str(s.id) for s in sent]
    async with stream_client.stream("GET", f"/api/stream/messages?after={sent[1].id}") as r:
        events = SseStream(r)
        assert (await events.next())["id"] == str(sent[1].id)
        assert (await events.until("message"))["id"] == str(sent[2].id)


async def test_new_approvals_and_agents_reach_an_open_page(stream_client, broker, store_engine):
    """What makes ◆ APPR0VE → "the new agent appears" work without a reload."""
    async with stream_client.stream("GET", "/api/stream/messages") as r:
        events = SseStream(r)
        first = json.loads((await events.until("approvals"))["data"])
        assert first["pending"] == 0

        approval = await asyncio.to_thread(_approval, store_engine, "spawn", "dave")
        pushed = json.loads((await events.until("approvals", f"approve-{approval}"))["data"])
        assert pushed["pending"] == 1 and "◆ APPR0VE" in pushed["html"]

        # The spawn registers dave and hive-c0re tells the operator; the rows follow.
        await asyncio.to_thread(agent_store.register_agent, store_engine, "dave", "local")
        await broker.system_notice("operator", "dave is up")
        agents = json.loads((await events.until("agents", "agent-row-dave"))["data"])
        assert agents["count"] == 3


async def test_open_streams_end_when_hive_c0re_stops(stream_client, broker, runtime):
    # Otherwise the web server would wait for an open dashboard tab before it can stop.
    runtime.workers_running = True
    async with stream_client.stream("GET", "/api/stream/messages") as r:
        events = SseStream(r)
        await events.until("approvals")
        runtime.workers_running = False
        await broker.send("alice", "hm1nd", "wake the stream")
        with pytest.raises(AssertionError, match="stream ended"):
            await events.until("never")


async def test_live_streams_are_bounded_and_a_closed_one_frees_its_slot(
    app: FastAPI, runtime: CoreRuntime, stream_client: httpx.AsyncClient
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"max_live_streams": 2})
    readers = []  # kept: a reader let go closes its stream
    async with contextlib.AsyncExitStack() as open_streams:
        for _ in range(2):
            r = await open_streams.enter_async_context(
                stream_client.stream("GET", "/api/stream/messages")
            )
            assert r.status_code == 200
            readers.append(SseStream(r))
            assert (await readers[-1].next())["event"] == "ready"
        refused = await asyncio.wait_for(stream_client.get("/api/stream/messages"), 5)
        assert refused.status_code == 503
        assert refused.json()["error"] == "too_many_streams"
        assert "HIVE_MAX_LIVE_STREAMS" in refused.json()["hint"]
    # Both clients left: once the server has seen them go, both slots are free again. The
    # disconnects are seen on the server's next read: until then a new stream is refused.
    readers.clear()
    async with contextlib.AsyncExitStack() as open_streams:

        async def admitted() -> httpx.Response | None:
            r = await open_streams.enter_async_context(
                stream_client.stream("GET", "/api/stream/messages")
            )
            if r.status_code == 503:
                await r.aclose()
                return None
            return r

        while len(readers) < 2:
            r = await eventually(admitted, timeout=TIMEOUT, what="a live-stream slot to free")
            assert r.status_code == 200
            readers.append(SseStream(r))
            assert (await readers[-1].next())["event"] == "ready"
