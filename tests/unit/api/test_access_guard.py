"""The access-token middleware on its own: what a browser and a script send, and odd input."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.access_guard import COOKIE, AccessTokenMiddleware

TOKEN = "t" * 43


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{request.url.path}?{request.url.query}")


def client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/{path:path}", echo)])
    guarded = AccessTokenMiddleware(app, token=TOKEN)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://x")


async def test_entering_keeps_the_other_query_parameters_and_drops_the_token() -> None:
    async with client() as http:
        response = await http.get("/agents/alice/", params={"token": TOKEN, "after": "5"})
    assert response.status_code == 303
    assert response.headers["location"] == "/agents/alice/?after=5"


async def test_the_token_in_a_post_url_is_not_a_way_in() -> None:
    # Only a GET enters with ?token= (a link); a POST must carry the cookie or the header.
    async with client() as http:
        response = await http.post("/api/messages", params={"token": TOKEN})
    assert response.status_code == 401


async def test_a_malformed_cookie_header_is_no_cookie_not_an_error() -> None:
    async with client() as http:
        bad = await http.get("/", headers={"cookie": 'a="unterminated; ' + COOKIE})
        good = await http.get("/", headers={"cookie": f"other=1; {COOKIE}={TOKEN}"})
        almost = await http.get("/", headers={"authorization": f"Bearer {TOKEN[:-1]}"})
    assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"
    assert good.status_code == 200
    assert almost.status_code == 401


async def test_health_and_static_files_stay_open() -> None:
    async with client() as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/static/dashboard.js")).status_code == 200
        assert (await http.get("/healthz")).status_code == 401
