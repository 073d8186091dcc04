"""The agent page end to end: real hive-c0re, real claude, fake model. A message sent from the
page (on the agent's own port, and at /agents/<name>/ on the dashboard) wakes the agent, and
the page's event stream shows what claude answered, live."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fakes.anthropic_api import FakeAnthropic, Text
from tests.rig.agent_scripts import Wake, hive_responder
from tests.rig.ports import free_port

pytestmark = pytest.mark.integration

_CSRF_META = re.compile(r'<meta name="hive-csrf" content="([0-9a-f]+)">')
TURN_TIMEOUT_S = 120


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event type, data) of each dispatched event, as a browser's EventSource sees them."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield fields.get("event", "message"), json.loads(fields["data"])
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields[name] = fields[name] + "\n" + value if name in fields else value


async def reply_seen(response: httpx.Response, text: str) -> dict[str, Any]:
    """Read the stream until an assistant text item with `text` arrives, then until its turn's
    result footer; returns that footer item."""
    turn: str | None = None
    async for kind, data in sse_events(response):
        if kind != "message":
            continue
        for item in data["items"]:
            if item["kind"] == "text" and text in item["text"]:
                turn = data["turn_id"]
            if turn == data["turn_id"] and item["kind"] == "result":
                result: dict[str, Any] = item
                return result
    raise AssertionError("the event stream ended before the reply arrived")


async def test_a_message_sent_on_the_agent_page_streams_the_reply(
    start_c0re, fake_model: FakeAnthropic
):
    def behaviour(wake: Wake) -> Text | None:
        if wake.sender == "operator":
            return Text(f"hello operator, you said: {wake.body}")
        return None

    fake_model.responder = hive_responder(behaviour)
    # One free port as alice's whole page range: nothing else on this host can be given it.
    port = free_port()
    hive = await start_c0re(agents=["alice"], agent_port_min=str(port), agent_port_max=str(port))

    async with httpx.AsyncClient(timeout=30) as http:
        [alice] = (await http.get(f"{hive.env.dashboard}/api/agents")).json()
        assert alice["page_url"] == f"http://127.0.0.1:{port}/"
        pages = [alice["page_url"], f"{hive.env.dashboard}/agents/alice/"]

        for n, page_url in enumerate(pages):
            page = await http.get(page_url)
            assert page.status_code == 200, page.text
            assert 'data-testid="agent-events"' in page.text
            match = _CSRF_META.search(page.text)
            assert match, "the page carries the CSRF token for its script"
            headers = {"X-Hive-CSRF": match.group(1)}

            async with http.stream(
                "GET", page_url + "api/events", timeout=httpx.Timeout(30, read=TURN_TIMEOUT_S)
            ) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                sent = await http.post(
                    page_url + "api/send", json={"body": f"ping {n}"}, headers=headers
                )
                assert sent.status_code == 200, sent.text
                assert sent.json()["ok"] is True and sent.json()["recipient"] == "alice"

                footer = await asyncio.wait_for(
                    reply_seen(stream, f"hello operator, you said: ping {n}"), TURN_TIMEOUT_S
                )
            assert not footer["is_error"], footer
            assert footer["detail"]["input_tokens"] > 0 and footer["detail"]["output_tokens"] > 0

        # Without the token the page's POSTs are refused and nothing is sent.
        refused = await http.post(pages[0] + "api/send", json={"body": "forged"})
        assert refused.status_code == 403
    assert [m.body for m in hive.messages("alice") if m.sender == "operator"] == [
        "ping 1",
        "ping 0",
    ]
