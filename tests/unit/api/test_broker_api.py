"""The broker's HTTP API (api/broker.py) through httpx's ASGI transport, on a real broker
(SQLite store, in-process bus); the waker, standing for Temporal, only records."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from api.broker import refused, router
from api.refusals import answer_refusals
from hyperhive.broker import Broker, RateLimitedError
from hyperhive.bus import EventBus
from hyperhive.domain import OPERATOR_NAME
from hyperhive.settings import HiveSettings
from hyperhive.store.agents import register_agent
from hyperhive.store.db import begin, make_engine, migrate
from hyperhive.store.messages import pending_count


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'hive.db'}")
    migrate(eng)
    for name in ("hm1nd", "alice"):
        register_agent(eng, name, "local")
    yield eng
    eng.dispose()


@pytest.fixture
def woken() -> list[str]:
    return []


@pytest.fixture
async def broker(engine, woken, tmp_path) -> AsyncIterator[Broker]:
    async def waker(agent: str) -> None:
        woken.append(agent)

    settings = HiveSettings(state_dir=tmp_path, max_body_bytes=100, recv_max_wait_s=10)
    b = Broker(engine, EventBus(), waker, settings, recheck_interval_s=60)
    yield b
    await b.aclose()


@pytest.fixture
async def client(broker) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    app.state.broker = broker
    answer_refusals(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


def _stored(engine: sa.Engine) -> int:
    with begin(engine) as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one())


async def test_operator_sends_a_message(client, engine, woken):
    r = await client.post("/api/messages", json={"to": "alice", "body": "hello"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["recipient"] == "alice" and body["pending"] == 1 and body["id"] > 0
    assert woken == ["alice"]
    listed = (await client.get("/api/messages")).json()
    assert [(m["sender"], m["recipient"], m["body"]) for m in listed] == [
        (OPERATOR_NAME, "alice", "hello")
    ]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"to": "nobody", "body": "hi"}, 404, "unknown_agent"),
        ({"to": "Alice!", "body": "hi"}, 400, "invalid_name"),
        ({"to": "alice", "body": ""}, 400, "empty_body"),
        ({"to": "alice", "body": "nul\u0000"}, 400, "invalid_body"),
        ({"to": "alice", "body": "x" * 101}, 413, "body_too_large"),
    ],
)
async def test_refused_sends_answer_with_a_code_and_store_nothing(
    client, engine, woken, payload, status, code
):
    r = await client.post("/api/messages", json=payload)
    assert r.status_code == status
    body = r.json()
    assert body["ok"] is False and body["error"] == code
    assert body["message"] and body["hint"]
    assert _stored(engine) == 0 and woken == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"to": "alice"}',
        b'{"to": "alice", "body": "hi", "from": "hm1nd"}',
        b'{"to": "alice", "body": 42}',
        b"[]",
        b"",
    ],
)
async def test_malformed_requests_are_422(client, engine, content):
    r = await client.post(
        "/api/messages", content=content, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    body = r.json()
    # Unparsable JSON gets our coded error; a JSON object of the wrong shape FastAPI's detail.
    assert body.get("error") == "bad_json" or "detail" in body
    assert _stored(engine) == 0


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"to": "alice", "to": "bob", "body": "hi"}', "`to` appears twice"),
        (b'{"to": "alice", "body": NaN}', "NaN"),
        (b'{"to": "alice", "body": 1e999}', "out of range"),
        (b'{"to": "alice", "body": "\xff"}', "not UTF-8"),
        (b"[]", "not a JSON object"),
    ],
)
async def test_json_that_could_be_misread_is_refused(client, engine, content, says):
    r = await client.post(
        "/api/messages", content=content, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "bad_json" and says in r.json()["message"]
    assert _stored(engine) == 0


async def test_a_huge_request_is_refused_before_it_is_read(client, engine):
    huge = json.dumps({"to": "alice", "body": "x" * 100_000}).encode()
    r = await client.post(
        "/api/messages", content=huge, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"] == "body_too_large"

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(100):
            yield b"x" * 1000

    r = await client.post(
        "/api/messages", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert _stored(engine) == 0


async def test_escaped_json_bodies_up_to_the_limit_are_accepted(client):
    body = "\u0001" * 100  # 100 bytes, 600 as JSON escapes
    r = await client.post("/api/messages", json={"to": "alice", "body": body})
    assert r.status_code == 201, r.text


async def test_rate_limited_is_429_with_retry_after():
    error = RateLimitedError("too fast", "wait", retry_after=2.2)
    response = refused(error).response()
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert json.loads(bytes(response.body)) == {
        "ok": False,
        "error": "rate_limited",
        "message": "too fast",
        "hint": "wait",
    }


async def test_listing_messages_filters_limits_and_consumes_nothing(client, broker, engine):
    for i in range(3):
        await broker.send("hm1nd", "alice", f"to alice {i}")
    await broker.send("alice", OPERATOR_NAME, "to you")
    r = await client.get("/api/messages", params={"limit": 2})
    assert [m["body"] for m in r.json()] == ["to you", "to alice 2"]
    r = await client.get("/api/messages", params={"agent": "hm1nd"})
    assert [m["body"] for m in r.json()] == ["to alice 2", "to alice 1", "to alice 0"]
    assert pending_count(engine, "alice") == 3
    assert (await client.get("/api/messages", params={"limit": 0})).status_code == 422
    assert (await client.get("/api/messages", params={"limit": 5000})).status_code == 422


async def test_operator_recv(client, broker):
    r = await client.post("/api/operator/recv")
    assert r.status_code == 204 and r.content == b""
    await broker.send("hm1nd", OPERATOR_NAME, "approve me")
    r = await client.post("/api/operator/recv")
    assert r.status_code == 200
    assert (r.json()["sender"], r.json()["body"]) == ("hm1nd", "approve me")
    assert r.json()["delivered_at"] is not None
    assert (await client.post("/api/operator/recv")).status_code == 204


async def test_operator_recv_long_polls(client, broker):
    waiting = asyncio.create_task(client.post("/api/operator/recv", params={"wait_seconds": 5}))
    await asyncio.sleep(0.1)  # into the long-poll's wait: nothing announces it
    await broker.send("alice", OPERATOR_NAME, "done")
    r = await asyncio.wait_for(waiting, 3)
    assert r.status_code == 200 and r.json()["body"] == "done"


@pytest.mark.parametrize(("wait", "status"), [("-1", 400), ("11", 400), ("abc", 422)])
async def test_operator_recv_refuses_a_bad_wait(client, wait, status):
    r = await client.post("/api/operator/recv", params={"wait_seconds": wait})
    assert r.status_code == status
    if status == 400:
        assert r.json()["error"] == "invalid_wait"


async def test_openapi_describes_the_routes(client):
    schema = (await client.get("/openapi.json")).json()
    send = schema["paths"]["/api/messages"]["post"]
    assert "requestBody" in send
    assert {"201", "400", "404", "413", "429"} <= set(send["responses"])
    assert "/api/operator/recv" in schema["paths"]
