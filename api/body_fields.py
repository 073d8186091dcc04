"""The fields of a POST body, from a JSON object or a form (the pages' <form> fallback).

The dashboard and the agent pages read bodies the same way and differ only in what they say
about a bad one, so this returns the raw values and raises `BodyError` naming the problem.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from starlette.requests import Request

from api.asgi_body import replaying

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# The pages send a message or a note: short text. Starlette's own form parser would answer a
# larger part with a bare 400.
MAX_BODY_BYTES = 1 << 20


class BodyProblem(StrEnum):
    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"


class BodyError(ValueError):
    def __init__(self, problem: BodyProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


async def _capped_body(request: Request, limit: int) -> bytes:
    """The body, read only up to `limit` bytes: a larger one is refused as soon as it shows."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise BodyError(BodyProblem.TOO_LARGE)
    return bytes(raw)


async def body_fields(request: Request, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body's fields (an empty body has none). Form fields are strings (files are left
    out); JSON values are as sent. A body over `max_bytes` is BodyError(TOO_LARGE)."""
    raw = await _capped_body(request, max_bytes)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(_FORM_TYPES):
        async with Request(request.scope, replaying(raw, request.receive)).form() as form:
            return {k: v for k, v in form.items() if isinstance(v, str)}
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BodyError(BodyProblem.NOT_JSON) from None
    if not isinstance(data, dict):
        raise BodyError(BodyProblem.NOT_OBJECT)
    return data
