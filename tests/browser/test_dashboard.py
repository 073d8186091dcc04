"""The dashboard in a real browser (Debian chromium through Playwright) on the real hive-c0re,
with agents driven by the fake model: a spawn request shows up live, ◆ APPR0VE brings the agent
up, the operator talks to it, and a page without the CSRF token cannot decide anything."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest
from playwright.async_api import Page, expect

from tests.fakes.anthropic_api import (
    FakeAnthropic,
    RecordedRequest,
    Responder,
    Step,
    Text,
    ToolUse,
)
from tests.rig.agent_scripts import Wake, send, turn_view
from tests.rig.browser import screenshot
from tests.rig.c0re import RunningC0re
from tests.rig.hive_process import run_hive

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# A spawn builds the agent's repos and container and starts its turn loop.
UP_TIMEOUT_MS = 120_000
# A turn runs the real claude CLI against the fake model.
TURN_TIMEOUT_MS = 120_000


async def _request_spawn(hive: RunningC0re, name: str, purpose: str) -> None:
    """As an operator does, from a terminal: `hive spawn` (it does not wait for the approval)."""
    requested = await asyncio.to_thread(run_hive, hive.env, "spawn", name, "--purpose", purpose)
    assert requested.returncode == 0, requested.stdout + requested.stderr


def patient(behaviour: Callable[[Wake], Step | None]) -> Responder:
    """`hive_responder(behaviour)`, plus what a real model does when woken before claude has
    connected the hive MCP server (claude -p connects MCP servers in the background): call
    WaitForMcpServers first, then act on the wake."""

    def respond(request: RecordedRequest) -> Step:
        view = turn_view(request)
        if view is None:
            return Text("(not a wake prompt)")
        tools = {tool["name"] for tool in (request.body or {}).get("tools", [])}
        if not view.results and "mcp__hive__send" not in tools:
            return ToolUse("WaitForMcpServers", {"servers": ["hive"]})
        waited = len(view.results) == 1 and (view.last or "").startswith("ready:")
        if not view.results or waited:
            return behaviour(view.wake) or Text("nothing to do")
        return Text("done")

    return respond


async def _open_dashboard(page: Page, hive: RunningC0re) -> None:
    await page.goto(f"{hive.env.dashboard}/")
    await expect(page).to_have_title(re.compile("dashboard"))
    await expect(page.get_by_test_id("conn-state")).to_have_text("● live")


async def _pending_approval_for(page: Page, agent: str) -> tuple[str, str]:
    """(approval id, its row's test id) of the pending approval row naming `agent`."""
    row = page.locator("form.approval-pending").filter(has_text=agent)
    await expect(row).to_be_visible()
    approval_id = await row.get_attribute("data-approval")
    assert approval_id is not None
    return approval_id, f"approval-{approval_id}"


async def test_approving_a_spawn_brings_the_agent_up_and_it_answers(
    start_c0re, fake_model: FakeAnthropic, page: Page
):
    def behaviour(wake: Wake):
        if wake.agent == "bob" and wake.sender == "operator":
            return send("operator", f"bob here, you said: {wake.body}")
        return Text("noted")

    fake_model.responder = patient(behaviour)
    hive = await start_c0re(agents=[])
    await _open_dashboard(page, hive)
    await expect(page.get_by_test_id("agents")).to_contain_text("no agents yet")
    await expect(page.get_by_test_id("pending-count")).to_have_text("0 pending")

    # The request reaches the open page by itself: the operator's notice and the approval row.
    await _request_spawn(hive, "bob", "answers questions")
    await expect(page.get_by_test_id("inbox")).to_contain_text("asks to spawn bob")
    approval_id, row_id = await _pending_approval_for(page, "bob")
    row = page.get_by_test_id(row_id)
    await expect(row.get_by_test_id(f"approval-kind-{approval_id}")).to_have_text("spawn")
    await expect(row).to_contain_text("answers questions")
    await expect(page.get_by_test_id("pending-count")).to_have_text("1 pending")
    await expect(page).to_have_title(re.compile(r"^\(1\) "))
    await screenshot(page, "dashboard-approval")

    await row.get_by_test_id(f"note-{approval_id}").fill("welcome bob")
    await row.get_by_role("button", name="◆ APPR0VE").click()

    # Without a reload: the agent row appears with its container up and its turn loop idle,
    # and the approval shows who decided it.
    bob = page.get_by_test_id("agent-row-bob")
    await expect(bob).to_be_visible(timeout=UP_TIMEOUT_MS)
    await expect(page.get_by_test_id("agent-container-bob")).to_have_text(
        "up", timeout=UP_TIMEOUT_MS
    )
    await expect(page.get_by_test_id("agent-state-bob")).to_have_text(
        re.compile(r"^(idle|running)$"), timeout=UP_TIMEOUT_MS
    )
    await expect(page.get_by_test_id("inbox")).to_contain_text("bob is up")
    await expect(page.get_by_test_id(f"approval-status-{approval_id}")).to_have_text("approved")
    await expect(page.get_by_test_id(f"approval-by-{approval_id}")).to_have_text(
        "operator (dashboard)"
    )
    await expect(page.get_by_test_id(f"approval-{approval_id}")).to_contain_text("welcome bob")
    await expect(page.get_by_test_id("pending-count")).to_have_text("0 pending")
    await expect(bob.get_by_role("link", name="bob", exact=True)).to_have_attribute(
        "href", "/agents/bob/"
    )

    # The operator talks to bob from the send box; the reply arrives in the inbox.
    await expect(page.get_by_test_id("send-to")).to_have_value("bob")
    await page.get_by_test_id("send-body").fill("hello bob")
    await page.get_by_test_id("send-button").click()
    await expect(page.get_by_test_id("send-body")).to_have_value("")
    flow = page.get_by_test_id("flow")
    await expect(flow.locator("li.msg-from-operator")).to_contain_text(["hello bob"])
    inbox = page.get_by_test_id("inbox")
    await expect(inbox.locator("li").filter(has_text="bob → operator")).to_contain_text(
        ["bob here, you said: hello bob"], timeout=TURN_TIMEOUT_MS
    )
    await expect(page.get_by_test_id("send-error")).to_be_hidden()
    # The row follows the turn: back to idle, with what it cost.
    await expect(page.get_by_test_id("agent-state-bob")).to_have_text(
        "idle", timeout=TURN_TIMEOUT_MS
    )
    await expect(page.get_by_test_id("agent-spend-bob")).to_have_text(re.compile(r"^\$0\.0*[1-9]"))
    await screenshot(page, "dashboard")


async def test_a_page_without_the_csrf_token_cannot_approve(
    start_c0re, fake_model: FakeAnthropic, page: Page
):
    fake_model.responder = patient(lambda wake: Text("noted"))
    hive = await start_c0re(agents=[])
    await _open_dashboard(page, hive)
    await _request_spawn(hive, "eve", "should never run")
    approval_id, _ = await _pending_approval_for(page, "eve")
    approve_url = f"{hive.env.dashboard}/api/approvals/{approval_id}/approve"

    # A script without the page's token, or with a wrong one: refused, nothing decided.
    for headers in ({}, {"X-Hive-CSRF": "0" * 64}):
        refused = await page.request.post(approve_url, data={"note": "sneaky"}, headers=headers)
        assert refused.status == 403, await refused.text()
        assert (await refused.json())["error"] == "csrf"

    # Another site's page that makes the browser post the approve form: refused by its Origin.
    hostile = await page.context.new_page()
    await hostile.goto(fake_model.base_url)  # any other origin will do
    await hostile.set_content(
        f'<form method="post" action="{approve_url}">'
        '<input name="note" value="click for a prize"><button>win</button></form>'
    )
    async with hostile.expect_navigation():
        await hostile.get_by_role("button", name="win").click()
    await expect(hostile.locator("body")).to_contain_text("are not accepted")
    await hostile.close()

    # Still pending, for the API and on a freshly loaded dashboard.
    approvals = await (await page.request.get(f"{hive.env.dashboard}/api/approvals")).json()
    assert [(a["id"], a["status"]) for a in approvals] == [(int(approval_id), "pending")]
    await page.reload()
    await expect(page.get_by_test_id(f"approve-{approval_id}")).to_have_text("◆ APPR0VE")
    await expect(page.get_by_test_id("pending-count")).to_have_text("1 pending")
    await expect(page.get_by_test_id("agents")).not_to_contain_text("eve")
