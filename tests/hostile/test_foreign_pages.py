"""Another site cannot reach the operator's pages (issue 13, "operator surfaces").

DNS rebinding: a page on evil.example re-points its name at 127.0.0.1, so the browser sends
`Host: evil.example` to the dashboard and treats the answer as same-origin; before, it got
`/api/csrf` and could then approve. A page on another origin posting with a stolen token is
refused by its Origin. No page can be framed (◆ APPR0VE under a decoy).
"""

from __future__ import annotations

import uuid

import pytest

from hyperhive.models import NewApproval
from hyperhive.store import approvals as approval_store
from tests.hostile.conftest import World

pytestmark = pytest.mark.integration

PAGES = ("/", "/api/csrf", "/api/approvals", "/agents/alice/", "/api/stream/messages")


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:7000", "127.0.0.1.evil.example", "", "127.0.0.1@evil"]
)
@pytest.mark.parametrize("path", PAGES)
async def test_a_foreign_host_gets_nothing(hostile_world: World, host: str, path: str) -> None:
    response = await hostile_world.http.get(path, headers={"host": host})
    assert response.status_code == 400, response.text[:200]
    body = response.json()
    assert body["error"] == "bad_host" and "HIVE_ALLOWED_HOSTS" in body["hint"]
    assert hostile_world.app.state.csrf.token not in response.text


@pytest.mark.parametrize("host", ["127.0.0.1:7000", "localhost:7000", "[::1]:7000", "LOCALHOST"])
async def test_the_loopback_names_are_served(hostile_world: World, host: str) -> None:
    response = await hostile_world.http.get("/api/csrf", headers={"host": host})
    assert response.status_code == 200
    assert response.json()["token"] == hostile_world.app.state.csrf.token


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1", "file://"],
)
async def test_a_post_from_another_origin_is_refused_even_with_the_token(
    hostile_world: World, origin: str
) -> None:
    world = hostile_world
    approval = approval_store.create_approval(
        world.engine,
        NewApproval(
            kind="spawn",
            agent="newbie",
            requester="hm1nd",
            description="spawn newbie",
            workflow_id=f"hive-spawn-origin-{uuid.uuid4().hex[:8]}",
        ),
    )
    before = await world.snapshot()
    response = await world.http.post(
        f"/api/approvals/{approval}/approve",
        headers={"host": "127.0.0.1", "origin": origin},
    )
    assert response.status_code == 403, response.text[:200]
    assert response.json()["error"] == "bad_origin"
    assert (await world.snapshot()).diff(before) == []


async def test_a_post_from_the_page_itself_is_not_held_up_by_origin(hostile_world: World) -> None:
    response = await hostile_world.http.post(
        "/api/messages",
        json={"to": "alice", "body": "hi"},
        headers={"host": "127.0.0.1:7000", "origin": "http://127.0.0.1:7000"},
    )
    assert response.status_code == 201, response.text[:200]


@pytest.mark.parametrize("path", ["/", "/api/csrf", "/agents/alice/", "/nonexistent"])
async def test_no_page_can_be_framed_or_sniffed(hostile_world: World, path: str) -> None:
    response = await hostile_world.http.get(path)
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
