"""CSRF protection for the dashboard and the agent pages.

Every state-changing request (POST, PUT, PATCH, DELETE) must carry the token, as the
`X-Hive-CSRF` header (what the pages' fetch() calls send) or a `csrf_token` form field. The
pages embed it in `<meta name="hive-csrf">`; another site can make a browser send a POST to
loopback but cannot read our pages, so it cannot know the token.

The token is an HMAC of a secret kept in the state dir (0600), so pages left open keep working
across a hive-c0re restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.asgi_body import BodyTooLarge, read_body, replaying
from api.refusals import RequestRefused

HEADER = "X-Hive-CSRF"
FORM_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_FORM_BYTES = 1 << 20


def load_or_create_secret(path: Path) -> bytes:
    """The secret at `path`, created (0600, 32 random bytes) the first time."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path.read_bytes()


class CsrfGuard:
    def __init__(self, secret: bytes) -> None:
        self.token = hmac.new(secret, b"hive-csrf-v1", hashlib.sha256).hexdigest()

    def valid(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate, self.token)


NO_TOKEN = RequestRefused(
    403,
    "csrf",
    "this request has no valid CSRF token",
    "reload the page and try again; scripts should use the admin socket (`hive --help`) or "
    "send the X-Hive-CSRF header from the page's <meta name=hive-csrf>",
)
FORM_TOO_LARGE = RequestRefused(
    413,
    "body_too_large",
    f"the form is over {MAX_FORM_BYTES} bytes",
    "send less: a note or a message is short text",
)


_FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")


class CsrfMiddleware:
    """Refuses every unsafe request without the token, for every route of the app.

    Plain ASGI (not BaseHTTPMiddleware) so that SSE streams pass through untouched; a form body
    read to find the token is replayed to the app unchanged.
    """

    def __init__(self, app: ASGIApp, guard: CsrfGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.guard.valid(headers.get(HEADER)):
            await self.app(scope, receive, send)
            return
        if not headers.get("content-type", "").encode().startswith(_FORM_TYPES):
            await NO_TOKEN.response()(scope, receive, send)
            return
        try:
            body = await read_body(receive, MAX_FORM_BYTES)
        except BodyTooLarge:
            await FORM_TOO_LARGE.response()(scope, receive, send)
            return
        if body is None:
            return
        form = await Request(scope, replaying(body, receive)).form()
        token = form.get(FORM_FIELD)
        await form.close()
        if not (isinstance(token, str) and self.guard.valid(token)):
            await NO_TOKEN.response()(scope, receive, send)
            return
        await self.app(scope, replaying(body, receive), send)
