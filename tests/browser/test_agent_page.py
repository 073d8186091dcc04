"""An agent's page in a real browser (Debian chromium through Playwright) on the real hive-c0re,
with the agent driven by the fake model: the page on the agent's own port and the same page at
/agents/<name>/ on the dashboard both stream the agent's turn live, and replay it on opening."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from tests.fakes.anthropic_api import FakeAnthropic, Text
from tests.rig.agent_scripts import Wake, hive_responder
from tests.rig.browser import screenshot
from tests.rig.c0re import RunningC0re

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# A turn runs the real claude CLI against the fake model.
TURN_TIMEOUT_MS = 120_000

REPLIES = {
    "what colour is honey?": "amber, mostly. ask me about wax next",
    "and the comb?": "hexagons all the way down",
}


async def _page_url(page: Page, hive: RunningC0re, agent: str) -> str:
    """Where the dashboard's agent list says the agent's own page is."""
    response = await page.request.get(f"{hive.env.dashboard}/api/agents")
    assert response.ok, await response.text()
    [view] = [a for a in await response.json() if a["name"] == agent]
    assert view["page_url"], f"{agent} has no page of its own: {view}"
    assert view["dashboard_path"] == f"/agents/{agent}/"
    return str(view["page_url"])


async def _open(page: Page, url: str, agent: str) -> None:
    await page.goto(url)
    await expect(page).to_have_title(re.compile(rf"^{agent} · "))
    await expect(page.get_by_role("heading", name=f"◆ {agent}")).to_be_visible()
    await expect(page.get_by_test_id("agent-conn")).to_have_text("live")


async def _say(page: Page, body: str) -> None:
    await page.get_by_test_id("send-body").fill(body)
    await page.get_by_test_id("send-button").click()
    await expect(page.get_by_test_id("send-status")).to_have_text(re.compile(r"^sent #\d+"))
    await expect(page.get_by_test_id("send-body")).to_have_value("")


def _reply(page: Page, text: str):
    return page.get_by_test_id("agent-events").get_by_test_id("event-text").filter(has_text=text)


async def test_a_message_sent_on_the_agent_page_gets_its_reply_streamed_in(
    start_c0re, fake_model: FakeAnthropic, page: Page
):
    def behaviour(wake: Wake):
        if wake.agent == "alice" and wake.sender == "operator":
            return Text(REPLIES.get(wake.body, f"no script for {wake.body!r}"))
        return None

    fake_model.responder = hive_responder(behaviour)
    hive = await start_c0re(agents=["alice"])

    # Its own port, as linked from the dashboard.
    own = await _page_url(page, hive, "alice")
    await _open(page, own, "alice")
    events = page.get_by_test_id("agent-events")
    empty = events.get_by_text("no turns yet")
    await expect(empty).to_be_visible()
    await expect(page.get_by_test_id("agent-state")).to_have_text("idle")
    # No turn yet: no claude running for alice.
    await expect(page.get_by_test_id("agent-warm")).to_have_text("cold")

    await _say(page, "what colour is honey?")
    # The turn arrives on the open page by itself: the model's text, then the turn's result.
    await expect(_reply(page, REPLIES["what colour is honey?"])).to_be_visible(
        timeout=TURN_TIMEOUT_MS
    )
    await expect(events.get_by_test_id("event-result")).to_have_count(1, timeout=TURN_TIMEOUT_MS)
    await expect(events.get_by_test_id("event-result")).to_contain_text("✓ turn done")
    await expect(empty).to_be_hidden()
    await expect(page.get_by_test_id("agent-state")).to_have_text("idle", timeout=TURN_TIMEOUT_MS)
    await expect(events.get_by_test_id("event-error")).to_have_count(0)
    # The turn ended well: its claude stays running for the next one, and the open page is told.
    warmth = page.get_by_test_id("agent-warm")
    await expect(warmth).to_have_text("warm", timeout=TURN_TIMEOUT_MS)
    await expect(warmth).to_have_class(re.compile(r"\bwarmth-warm\b"))
    await screenshot(page, "agent")

    # The same page on the dashboard replays the turn on opening ...
    on_dashboard = await page.context.new_page()
    await _open(on_dashboard, f"{hive.env.dashboard}/agents/alice/", "alice")
    await expect(_reply(on_dashboard, REPLIES["what colour is honey?"])).to_have_count(1)
    await expect(on_dashboard.get_by_test_id("event-result")).to_have_count(1)
    await expect(on_dashboard.get_by_test_id("agent-warm")).to_have_text("warm")

    # ... and a message sent there streams its reply into both open pages.
    await _say(on_dashboard, "and the comb?")
    for each in (on_dashboard, page):
        await expect(_reply(each, REPLIES["and the comb?"])).to_be_visible(timeout=TURN_TIMEOUT_MS)
        await expect(each.get_by_test_id("event-result")).to_have_count(2, timeout=TURN_TIMEOUT_MS)
        # Nothing shown twice: the first reply is still there once.
        await expect(_reply(each, REPLIES["what colour is honey?"])).to_have_count(1)
    await expect(on_dashboard.get_by_test_id("agent-state")).to_have_text(
        "idle", timeout=TURN_TIMEOUT_MS
    )
    await screenshot(on_dashboard, "agent-on-dashboard")
