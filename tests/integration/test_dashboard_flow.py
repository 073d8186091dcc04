"""The dashboard end to end on the real hive-c0re: an open page (its event stream) sees a spawn
request, ◆ APPR0VE goes through the CSRF check, and the new agent appears on the page without a
reload."""

from __future__ import annotations

import json

import httpx
import pytest

from control.lifecycle import Lifecycle
from hyperhive.settings import HiveSettings
from tests.rig.c0re import RunningC0re
from tests.rig.sse import SseStream

pytestmark = pytest.mark.integration


async def _request_spawn(hive: RunningC0re, name: str, purpose: str) -> None:
    """What `hive spawn` and hm1nd's request_spawn end in: SpawnWorkflow, waiting for approval."""
    settings = HiveSettings(state_dir=hive.env.state_dir, host_id=hive.env.extra["HIVE_HOST_ID"])
    engine = hive.engine()
    try:
        await Lifecycle(hive.client, settings, engine).request_spawn(
            name, purpose, requester="operator"
        )
    finally:
        engine.dispose()


async def test_approving_a_spawn_on_the_dashboard_shows_the_new_agent(start_c0re, fake_model):
    hive = await start_c0re(agents=[])
    async with (
        httpx.AsyncClient(base_url=hive.env.dashboard, timeout=60) as http,
        http.stream("GET", "/api/stream/messages") as page,
    ):
        events = SseStream(page, timeout=60)
        await _request_spawn(hive, "bob", "answers questions")
        pushed = json.loads((await events.until("approvals", "btn-approve"))["data"])
        assert pushed["pending"] == 1 and "◆ APPR0VE" in pushed["html"]
        [approval] = (await http.get("/api/approvals")).json()
        assert (approval["kind"], approval["agent"], approval["status"]) == (
            "spawn",
            "bob",
            "pending",
        )
        approve = f"/api/approvals/{approval['id']}/approve"

        refused = await http.post(approve, json={"note": "sneaky"})
        assert refused.status_code == 403 and refused.json()["error"] == "csrf"
        assert (await http.get("/api/approvals")).json()[0]["status"] == "pending"

        headers = await hive.csrf_headers(http)
        approved = await http.post(approve, json={"note": "welcome bob"}, headers=headers)
        assert approved.status_code == 200, approved.text
        assert approved.json()["ok"] is True

        rows = json.loads((await events.until("agents", "agent-row-bob"))["data"])
        assert rows["count"] == 1

        agents = {a["name"]: a for a in (await http.get("/api/agents")).json()}
        assert "bob" in agents
        [decided] = (await http.get("/api/approvals")).json()
        assert decided["status"] == "approved"
        assert (decided["decided_by"], decided["note"]) == ("operator (dashboard)", "welcome bob")

        again = await http.post(approve, json={}, headers=headers)
        assert again.status_code == 409
        assert again.json()["message"] == (
            f"approval #{approval['id']} is already approved by operator (dashboard)"
        )
