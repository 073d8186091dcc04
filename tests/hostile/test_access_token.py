"""With HIVE_ACCESS_TOKEN_REQUIRED, only someone holding the token reaches the operator's pages
(issue 13: "an optional access token").

Loopback alone lets every local account and program in: with the token required, the real
`hive c0re` answers 401 `unauthorized` to anything without it (CSRF token or not) and tells
nothing about the hive; the link `hive urls` prints opens the dashboard and the agent pages in a
browser (a cookie, the token out of the URL); scripts send `Authorization: Bearer` with the copy
the admins' group may read. The token is never in the daemon's output, and survives a restart.
"""

from __future__ import annotations

import grp
import stat
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.rig.c0re import RunningC0re, StartC0re

pytestmark = pytest.mark.integration

ADMIN_GROUP = "adm"
CLOSED = ("/", "/api/csrf", "/api/agents", "/api/approvals", "/metrics", "/agents/alice/")


def links(hive: RunningC0re) -> dict[str, str]:
    shown = hive.hive("urls")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    found = {}
    for line in shown.stdout.splitlines():
        name, _, value = line.strip().rpartition("  ")
        found[name.strip()] = value.strip()
    return found


def published_token(hive: RunningC0re) -> str:
    path = hive.run_dir / "access-token"
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640, oct(st.st_mode)
    assert st.st_gid == grp.getgrnam(ADMIN_GROUP).gr_gid
    return path.read_text().strip()


async def start(start_c0re: StartC0re) -> RunningC0re:
    return await start_c0re(["alice"], access_token_required="true", admin_group=ADMIN_GROUP)


async def test_without_the_token_nothing_is_served_but_health(start_c0re: StartC0re) -> None:
    hive = await start(start_c0re)
    page = links(hive)["agent alice"]
    page_base = f"{urlsplit(page).scheme}://{urlsplit(page).netloc}"
    async with httpx.AsyncClient(base_url=hive.env.dashboard, timeout=30) as http:
        for path in CLOSED:
            for params in ({}, {"token": "x" * 43}):
                response = await http.get(path, params=params)
                assert response.status_code == 401, (path, response.text[:200])
                body = response.json()
                assert body["error"] == "unauthorized" and "hive urls" in body["hint"], body
                assert response.headers["www-authenticate"] == "Bearer"
                assert "alice" not in response.text
        # A wrong token is told apart from none, and the page's own port is closed too.
        wrong = await http.get("/", params={"token": "x" * 43})
        assert "not this hive-c0re's" in wrong.json()["message"]
        assert (await http.get(f"{page_base}/")).status_code == 401
        # The CSRF token is no key: a POST with a good one but no access token changes nothing.
        token = published_token(hive)
        csrf = await http.get("/api/csrf", headers={"authorization": f"Bearer {token}"})
        posted = await http.post(
            "/api/messages",
            json={"to": "alice", "body": "let me in"},
            headers={"x-hive-csrf": csrf.json()["token"]},
        )
        assert posted.status_code == 401, posted.text
        assert hive.messages("alice") == []
        assert (await http.get("/health")).status_code == 200


async def test_the_link_hive_urls_prints_opens_every_page(start_c0re: StartC0re) -> None:
    hive = await start(start_c0re)
    shown = links(hive)
    token = published_token(hive)
    assert parse_qs(urlsplit(shown["dashboard"]).query) == {"token": [token]}
    assert str(hive.run_dir / "access-token") in shown["scripts"] and token not in shown["scripts"]
    async with httpx.AsyncClient(timeout=30) as browser:
        entered = await browser.get(shown["dashboard"])
        # The token leaves the address bar at once; the cookie stands for it from then on.
        assert entered.status_code == 303 and entered.headers["location"] == "/"
        cookie = entered.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        page = await browser.get(hive.env.dashboard + "/")
        assert page.status_code == 200 and "alice" in page.text
        # Cookies do not depend on the port: alice's own page opens with it too.
        agent_page = await browser.get(shown["agent alice"], follow_redirects=True)
        assert agent_page.status_code == 200 and "alice" in agent_page.text
        csrf = (await browser.get(hive.env.dashboard + "/api/csrf")).json()["token"]
        sent = await browser.post(
            hive.env.dashboard + "/api/messages",
            json={"to": "alice", "body": "hello from the browser"},
            headers={"x-hive-csrf": csrf},
        )
        assert sent.status_code == 201, sent.text
    assert [m.body for m in hive.messages("alice")] == ["hello from the browser"]


async def test_scripts_use_the_admins_copy_and_it_outlives_a_restart(
    start_c0re: StartC0re,
) -> None:
    hive = await start(start_c0re)
    token = published_token(hive)
    bearer = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=hive.env.dashboard, timeout=30) as http:
        assert (await http.get("/api/agents", headers=bearer)).status_code == 200
        assert (await http.get("/metrics", headers=bearer)).status_code == 200
        hive.process.kill()
        hive.restart()
        assert published_token(hive) == token, "a restart keeps the token (and the cookies)"
        assert (await http.get("/api/agents", headers=bearer)).status_code == 200
    private = hive.env.state_dir / "secrets" / "access-token"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert token not in hive.process.output(), "the token is never logged"
    assert "the pages ask for a token" in hive.process.output()
