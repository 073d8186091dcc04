"""How a refused request is answered, by every route of the operator's apps and by the guards
in front of them: `{"ok": false, "error": code, "message": what, "hint": what to do}` with a
4xx status (5xx when hive-c0re itself failed); nothing changed.

Routes and dependencies raise `RequestRefused`; the one handler `answer_refusals` registers on
an app renders it. The guards (plain ASGI middlewares, outside the app's handlers) send
`RequestRefused.response()` themselves. A store that cannot answer is refused the same way
(503 `store_unavailable`) wherever it shows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from hyperhive.errors import HiveError
from hyperhive.store.db import StoreError, explain_store_failure

log = logging.getLogger(__name__)

# What the store raises when it cannot answer (explain_store_failure says why).
STORE_FAILURES: tuple[type[Exception], ...] = (
    sa.exc.OperationalError,
    sa.exc.InternalError,
    StoreError,
)


# The body of every refusal, and its OpenAPI schema (no docstring: it would show there).
class ErrorBody(BaseModel):
    ok: bool = False
    error: str
    message: str
    hint: str = ""


class RequestRefused(HiveError):
    """A request that is not done: `status`, a stable `code` for scripts, what happened and
    what to do (HiveError's `what` and `hint`), and headers such as Retry-After."""

    def __init__(
        self,
        status: int,
        code: str,
        what: str,
        hint: str = "",
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(what, hint)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body = ErrorBody(error=self.code, message=self.what, hint=self.hint)
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


def error_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for refusals answered with ErrorBody."""
    return {status: {"model": ErrorBody} for status in statuses}


def store_unavailable(exc: Exception) -> RequestRefused:
    failure = explain_store_failure(exc)
    assert failure is not None  # only registered for STORE_FAILURES
    return RequestRefused(503, "store_unavailable", failure.what, failure.hint)


async def _answer(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, RequestRefused):
        return exc.response()
    refused = store_unavailable(exc)
    log.warning("%s %s: %s", request.method, request.url.path, refused.what)
    return refused.response()


def answer_refusals(app: FastAPI) -> None:
    """Answer every RequestRefused, and every store failure, raised by the app's routes."""
    refused: tuple[type[Exception], ...] = (RequestRefused, *STORE_FAILURES)
    for raised in refused:
        app.add_exception_handler(raised, _answer)
