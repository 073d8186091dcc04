"""The agents' MCP endpoint reads JSON as strictly as the HTTP API and the admin socket do.

The MCP SDK takes the last of duplicate keys, and NaN or Infinity as numbers. A JSON-RPC body
that `hyperhive.strict_json` refuses is answered here with a JSON-RPC parse error (HTTP 400),
before the SDK sees it; so is one larger than MAX_MCP_BODY_BYTES (HTTP 413). Plain ASGI: the
GET stream of a session passes through untouched.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from api.asgi_body import BodyTooLarge, read_body, replaying, send_json
from hyperhive.strict_json import StrictJsonError, loads_strict

# A tool call carries a message body (HIVE_MAX_BODY_BYTES) or a purpose, never megabytes.
MAX_MCP_BODY_BYTES = 4 << 20
PARSE_ERROR = -32700


async def _answer(send: Send, status: int, message: str) -> None:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": message}}
    await send_json(send, status, json.dumps(body).encode())


class StrictJsonBody:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive, MAX_MCP_BODY_BYTES)
        except BodyTooLarge:
            await _answer(send, 413, f"the request is over {MAX_MCP_BODY_BYTES} bytes")
            return
        if body is None:
            return
        try:
            loads_strict(body)
        except StrictJsonError as e:
            await _answer(send, 400, f"Parse error: {e}")
            return
        await self.app(scope, replaying(body, receive), send)
