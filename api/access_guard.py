"""The access token on the operator's pages, when HIVE_ACCESS_TOKEN_REQUIRED is on
(hyperhive/access_token.py keeps the token).

Loopback is not a person: any local account, and any program an agent talks a user into
running, can reach 127.0.0.1:7000. With the token required, every request but `/health` and
`/static/` must carry it:

- a browser opens the link `hive urls` prints (`?token=…`): the answer is a redirect to the same
  page without it (so it stays out of history and bookmarks) that sets the `hive_access` cookie
  (HttpOnly, SameSite=Strict); cookies do not depend on the port, so the agent pages on their own
  ports are opened with it as well;
- a script sends `Authorization: Bearer <token>` (the token is in <run_dir>/access-token for the
  admins' group).

Anything else is 401 `unauthorized`, whatever the CSRF token says. Plain ASGI, so SSE streams
pass through untouched.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.refusals import RequestRefused

COOKIE = "hive_access"
QUERY = "token"
OPEN_PATHS = ("/health",)
OPEN_PREFIXES = ("/static/",)
# A year: the token itself changes only when the operator removes its file.
COOKIE_MAX_AGE_S = 365 * 24 * 3600


class AccessTokenMiddleware:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._token)

    def _presented(self, headers: Headers) -> str | None:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return credentials.strip()
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is just no cookie
            return None
        morsel = cookie.get(COOKIE)
        return morsel.value if morsel is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] not in ("http", "websocket")
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        if self._matches(self._presented(Headers(scope=scope))):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [value for key, value in query if key == QUERY]
        entering = scope["type"] == "http" and scope.get("method") == "GET" and given
        if entering and self._matches(given[-1]):
            await self._enter(scope, send, [(k, v) for k, v in query if k != QUERY])
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _refusal(given).response()(scope, receive, send)

    async def _enter(self, scope: Scope, send: Send, rest: list[tuple[str, str]]) -> None:
        """The same page without the token in its URL, with the cookie that stands for it."""
        root = scope.get("root_path", "")
        location = root + scope.get("path", "/") + (f"?{urlencode(rest)}" if rest else "")
        cookie = (
            f"{COOKIE}={self._token.decode()}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; "
            "SameSite=Strict"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1", "replace")),
                    (b"set-cookie", cookie.encode()),
                    (b"cache-control", b"no-store"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _refusal(given: list[str]) -> RequestRefused:
    what = (
        "that access token is not this hive-c0re's"
        if given
        else "this hive-c0re asks for its access token (HIVE_ACCESS_TOKEN_REQUIRED)"
    )
    return RequestRefused(
        401,
        "unauthorized",
        what,
        "open the link `hive urls` prints (it carries the token), or send "
        "Authorization: Bearer <token> with the token from <run_dir>/access-token",
        headers={"WWW-Authenticate": "Bearer"},
    )
