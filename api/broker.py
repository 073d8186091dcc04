"""The broker's HTTP API for the operator (mounted by `api.app`; the Broker is
`app.state.broker`, given to the routes by api/deps.py).

- `POST /api/messages` {"to", "body"}: the operator sends a message → 201 SendResult
- `GET /api/messages?agent=&limit=`: recent messages, newest first (consumes nothing)
- `POST /api/operator/recv?wait_seconds=`: pop the operator's oldest message → 200, or 204

A refused call answers {"ok": false, "error": <code>, "message": …, "hint": …} with 400 (bad
input), 404 (unknown agent), 413 (body too large) or 429 (rate limited, with Retry-After).
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError

from api.deps import MessageBroker
from api.refusals import RequestRefused, error_responses
from hyperhive.broker import (
    BodyTooLargeError,
    BrokerError,
    RateLimitedError,
    UnknownAgentError,
)
from hyperhive.domain import OPERATOR_NAME
from hyperhive.models import Message, SendResult
from hyperhive.strict_json import StrictJsonError, json_kind, loads_strict

router = APIRouter(tags=["broker"])

# JSON escaping can grow a body up to 6× (\uXXXX); anything larger is refused before parsing.
_JSON_OVERHEAD_FACTOR = 6
_JSON_OVERHEAD_BYTES = 4096


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str
    body: str


class BadRequestError(BrokerError):
    code = "bad_json"


_SEND_EXAMPLE = 'send a JSON object such as {"to": "alice", "body": "hello"}'


def _status_of(error: BrokerError) -> int:
    if isinstance(error, BadRequestError):
        return 422  # as FastAPI answers any other unusable request body
    if isinstance(error, UnknownAgentError):
        return 404
    if isinstance(error, BodyTooLargeError):
        return 413
    if isinstance(error, RateLimitedError):
        return 429
    return 400


def refused(error: BrokerError) -> RequestRefused:
    """How a refused broker call is answered."""
    headers = {}
    if isinstance(error, RateLimitedError):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return RequestRefused(_status_of(error), error.code, error.what, error.hint, headers=headers)


_ERRORS = error_responses(400, 404, 413, 422, 429)


@router.post(
    "/api/messages",
    status_code=201,
    response_model=SendResult,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SendRequest.model_json_schema()}},
        }
    },
)
async def send_message(broker: MessageBroker, request: Request) -> SendResult:
    """The operator sends a message to an agent (or to the operator's own inbox)."""
    raw = await _read_limited(request, broker.settings.max_body_bytes)
    if raw is None:
        raise refused(
            BodyTooLargeError(
                "the request is far larger than any message body may be "
                f"({broker.settings.max_body_bytes} bytes)",
                "Shorten the message (the operator can raise HIVE_MAX_BODY_BYTES).",
            )
        )
    try:
        parsed = loads_strict(raw)
    except StrictJsonError as e:
        detail = str(e).removeprefix("not valid JSON: ")
        raise refused(
            BadRequestError(f"the request body is not usable JSON: {detail}", _SEND_EXAMPLE)
        ) from None
    if not isinstance(parsed, dict):
        raise refused(
            BadRequestError(
                f"the request body is {json_kind(parsed)}, not a JSON object", _SEND_EXAMPLE
            )
        )
    try:
        payload = SendRequest.model_validate(parsed)
    except ValidationError as e:
        # Without the input: it may hold bytes or floats the error page cannot encode.
        raise RequestValidationError(e.errors(include_url=False, include_input=False)) from None
    try:
        return await broker.send(OPERATOR_NAME, payload.to, payload.body)
    except BrokerError as e:
        raise refused(e) from None


async def _read_limited(request: Request, max_body_bytes: int) -> bytes | None:
    """The request body, or None as soon as it is larger than any valid send request could be
    (JSON escaping grows a body at most 6×: \\uXXXX), so a huge upload is never held in memory."""
    limit = max_body_bytes * _JSON_OVERHEAD_FACTOR + _JSON_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@router.get("/api/messages", response_model=list[Message])
async def list_messages(
    broker: MessageBroker,
    agent: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Message]:
    """Recent messages, newest first: all of them, or those from or to `agent`."""
    return await broker.recent_messages(agent or None, limit)


@router.post(
    "/api/operator/recv",
    response_model=Message,
    responses={204: {"description": "no message arrived in time"}, **_ERRORS},
)
async def operator_recv(
    broker: MessageBroker, wait_seconds: Annotated[float, Query()] = 0.0
) -> Message | Response:
    """Pop the operator's oldest undelivered message, waiting up to `wait_seconds` for one."""
    try:
        message = await broker.recv(OPERATOR_NAME, wait_seconds)
    except BrokerError as e:
        raise refused(e) from None
    if message is None:
        return Response(status_code=204)
    return message
