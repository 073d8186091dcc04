"""The fields of a POST body, from a JSON object or a form (the pages' <form> fallback).

The dashboard and the agent pages read bodies the same way and differ only in what they say
about a bad one, so this returns the raw values and raises `BodyError` naming the problem.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from starlette.requests import Request

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class BodyProblem(StrEnum):
    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"


class BodyError(ValueError):
    def __init__(self, problem: BodyProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


async def body_fields(request: Request, *, max_bytes: int | None = None) -> dict[str, Any]:
    """The body's fields (an empty body has none). Form fields are strings (files are left
    out); JSON values are as sent."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(_FORM_TYPES):
        async with request.form() as form:
            return {k: v for k, v in form.items() if isinstance(v, str)}
    raw = await request.body()
    if max_bytes is not None and len(raw) > max_bytes:
        raise BodyError(BodyProblem.TOO_LARGE)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BodyError(BodyProblem.NOT_JSON) from None
    if not isinstance(data, dict):
        raise BodyError(BodyProblem.NOT_OBJECT)
    return data
