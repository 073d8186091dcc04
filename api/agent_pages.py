"""The per-agent page: the live stream of the agent's claude events, a send box, turn control and
login. One router, mounted twice: at `/agents/{name}/` on the dashboard app and at `/` on the
agent's own port (api/agent_page_servers.py), where the agent is fixed.

Routes, relative to the mount point:

- `GET ` the page (api/templates/agent.html, api/static/agent.js)
- `GET api/events` SSE: the stored turn events after `Last-Event-ID` (on a first connect the last
  `REPLAY_LIMIT`), then each new one as it is stored; each `id:` is the stored event's id and each
  `data:` is `{"id", "turn_id", "seq", "kind", "created_at", "items": [rendered items]}`. An
  `event: status` carries the agent's state, status text, counts and whether its claude is warm
  whenever they change.
- `POST api/send` {body}, `POST api/cancel`, `POST api/pause`, `POST api/resume`,
  `POST api/login` {kind, secret} (JSON or form), `GET api/credentials`

The apps mounting it hold `state.runtime` (CoreRuntime), `state.operator` (OperatorService) and
`state.csrf` (CsrfGuard), and refuse unsafe requests without the CSRF token (CsrfMiddleware).
A refused call answers `{"ok": false, "error", "message", "hint"}` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sse_starlette import EventSourceResponse, ServerSentEvent

from agent_harness.stream_parser import StreamEvent, render
from api.body_fields import BodyError, BodyProblem, body_fields
from api.broker import error_responses
from api.dashboard import page_context
from api.stream_slots import CountedEventSource, client_of, slots_of
from hyperhive.broker import agent_events_topic
from hyperhive.bus import Subscription
from hyperhive.credentials import CredentialError, CredentialKind
from hyperhive.domain import InvalidName, check_agent_name, parse_resume_id
from hyperhive.errors import HiveError
from hyperhive.operator import AgentSignal, AgentView, OperatorError, OperatorService
from hyperhive.runtime import CoreRuntime
from hyperhive.store.agents import TURN_EVENTS, TurnEvent
from hyperhive.store.db import begin

REFUSALS = error_responses(400, 403, 404, 409, 503)

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")

# A first connect replays this many of the newest events; older ones are in `hive logs`.
REPLAY_LIMIT = 200
# Events read from the store per query while catching up: each can be 16 KiB of text and more
# (MAX_EVENT_TEXT per string), and every open stream holds its batch, so batches stay small.
BATCH = 40
# How often a quiet stream re-reads the agent's state (state changes publish nothing).
STATUS_POLL_S = 3.0
# Keeps idle connections (and proxies between) from timing out.
PING_S = 15
# Tells EventSource how soon to reconnect after the stream ends (hive-c0re restarting).
RETRY_MS = 2000
MAX_FIELD_BYTES = 1 << 20

LOGIN_KINDS: dict[CredentialKind, str] = {
    CredentialKind.OAUTH_TOKEN: "OAuth token (from `claude setup-token`)",
    CredentialKind.API_KEY: "API key (sk-ant-…)",
    CredentialKind.CREDENTIALS_JSON: "~/.claude/.credentials.json (whole file)",
}


class PageError(HiveError):
    """A refused agent-page request; `status` and `code` go into the JSON answer."""

    def __init__(self, status: int, code: str, what: str, hint: str = "") -> None:
        super().__init__(what, hint)
        self.status = status
        self.code = code


def error_response(status: int, code: str, what: str, hint: str) -> JSONResponse:
    return JSONResponse(
        {"ok": False, "error": code, "message": what, "hint": hint}, status_code=status
    )


def _page_error(e: PageError) -> JSONResponse:
    return error_response(e.status, e.code, e.what, e.hint)


# -- what an event looks like on the page ----------------------------------------------------


def stream_event_of(event: TurnEvent) -> StreamEvent:
    """The StreamEvent a stored payload was parsed from (the store keeps claude's object)."""
    raw = event.payload
    subtype = raw.get("subtype")
    session_id = raw.get("session_id")
    type_ = raw.get("type")
    return StreamEvent(
        type=type_ if isinstance(type_, str) else event.kind,
        subtype=subtype if isinstance(subtype, str) else None,
        session_id=session_id if isinstance(session_id, str) else None,
        raw=raw,
    )


def rendered_items(event: TurnEvent) -> list[dict[str, Any]]:
    if event.kind == "hive":
        # hive's own notes about the turn (retries, kills, ...), not claude output.
        payload = event.payload
        text = payload.get("text") or payload.get("message") or json.dumps(payload)
        is_error = payload.get("is_error") is True or payload.get("level") == "error"
        return [{"kind": "note", "text": str(text), "is_error": is_error, "detail": payload}]
    return [item.model_dump(mode="json") for item in render(stream_event_of(event))]


def event_data(event: TurnEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "turn_id": event.turn_id,
        "seq": event.seq,
        "kind": event.kind,
        "created_at": event.created_at.isoformat(),
        "items": rendered_items(event),
    }


def status_data(view: AgentView) -> dict[str, Any]:
    return {
        "state": view.state,
        "status_text": view.status_text,
        "pending": view.pending,
        "spend_today_usd": view.spend_today_usd,
        "turns_today": view.turns_today,
        # Read from the worker's warm pool, not the store: a stream sees it change on its next
        # look at the agent (any event of the agent's, or STATUS_POLL_S).
        "warm": view.warm,
    }


def replay_start(engine: Engine, agent: str, keep: int) -> int:
    """The id after which the agent's newest `keep` events begin (0: replay them all)."""
    with begin(engine) as conn:
        row = conn.execute(
            sa.select(TURN_EVENTS.c.id)
            .where(TURN_EVENTS.c.agent == agent)
            .order_by(TURN_EVENTS.c.id.desc())
            .offset(keep)
            .limit(1)
        ).first()
    return int(row.id) if row is not None else 0


def parse_last_event_id(value: str | None) -> int | None:
    """The stored id the browser saw last; anything unusable means "start afresh"."""
    return parse_resume_id(value)


async def _wait_for_change(sub: Subscription, closing: asyncio.Event | None) -> None:
    """Until the agent publishes something, the poll interval passes, or the server stops."""
    if closing is None:
        await sub.wait(STATUS_POLL_S)
        return
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(sub.wait(STATUS_POLL_S)),
        asyncio.create_task(closing.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def event_stream(
    runtime: CoreRuntime,
    operator: OperatorService,
    agent: str,
    last_event_id: int | None,
    closing: asyncio.Event | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """Stored events after `last_event_id`, then new ones as they are stored, forever.

    The store is the truth and the bus only a wake-up: subscribing before the first query
    means an event stored between the query and the wait still wakes us, and re-querying after
    the last sent id means a lagging subscription (dropped bus events) loses nothing.
    """
    with runtime.broker.bus.subscribe(agent_events_topic(agent), maxsize=16) as sub:
        if last_event_id is None:
            cursor = await asyncio.to_thread(replay_start, runtime.engine, agent, REPLAY_LIMIT)
        else:
            cursor = last_event_id
        status: dict[str, Any] | None = None
        yield ServerSentEvent(retry=RETRY_MS)
        # hive-c0re clears `workers_running` just before it stops the dashboard's server, which
        # would otherwise wait forever for open streams to end (as api/dashboard.py's does).
        was_running = runtime.workers_running
        while closing is None or not closing.is_set():
            if was_running and not runtime.workers_running:
                return
            batch = await operator.logs(agent, after_id=cursor, limit=BATCH)
            for event in batch:
                cursor = event.id
                yield ServerSentEvent(
                    data=json.dumps(event_data(event), ensure_ascii=False), id=str(event.id)
                )
            if len(batch) == BATCH:
                continue  # more stored: catch up before waiting
            try:
                now = status_data(await operator.agent(agent))
            except OperatorError:
                return  # the agent was destroyed while we watched
            if now != status:
                status = now
                yield ServerSentEvent(data=json.dumps(now), event="status")
            await _wait_for_change(sub, closing)


# -- the router ------------------------------------------------------------------------------


async def _form_or_json(request: Request) -> dict[str, str]:
    """The request's string fields, from a JSON object or a form (the page's <form> fallback)."""
    try:
        data = await body_fields(request, max_bytes=MAX_FIELD_BYTES)
    except BodyError as e:
        if e.problem is BodyProblem.TOO_LARGE:
            raise PageError(
                413, "too_large", f"the request is over {MAX_FIELD_BYTES} bytes", "send less"
            ) from None
        shown = "not JSON" if e.problem is BodyProblem.NOT_JSON else "not a JSON object"
        raise PageError(
            400,
            "bad_request",
            f"the request body is {shown}",
            'send a JSON object such as {"body": "…"}',
        ) from None
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _required(fields: dict[str, str], name: str, hint: str) -> str:
    value = fields.get(name)
    if value is None or not value.strip():
        raise PageError(400, "missing_field", f"the field {name!r} is missing or empty", hint)
    return value


def _operator_of(request: Request) -> OperatorService:
    operator: OperatorService = request.app.state.operator
    return operator


Operator = Annotated[OperatorService, Depends(_operator_of)]


def agent_router(agent: str | None = None, *, closing: asyncio.Event | None = None) -> APIRouter:
    """The page's routes. `agent` fixes the agent (its own port); without it the mount path
    carries `{name}` (the dashboard). `closing`, once set, ends open event streams (a server
    that stops would otherwise wait for the browsers to hang up)."""
    router = APIRouter(tags=["agent page"])

    def agent_name(request: Request) -> str:
        # Unchecked: view_of checks it and turns a bad name into a 404 answer.
        return agent if agent is not None else str(request.path_params.get("name", ""))

    async def view_of(operator: OperatorService, name: str) -> AgentView:
        try:
            return await operator.agent(check_agent_name(name))
        except InvalidName as e:
            raise PageError(
                404, "unknown_agent", str(e), "see the dashboard for the agents"
            ) from None
        except OperatorError as e:
            raise PageError(404, "unknown_agent", e.what, e.hint) from None

    async def guarded(
        action: Callable[[], Coroutine[Any, Any, dict[str, Any]]], refused_status: int = 400
    ) -> JSONResponse:
        try:
            return JSONResponse({"ok": True, **await action()})
        except PageError as e:
            return _page_error(e)
        except CredentialError as e:
            return error_response(400, "invalid_credentials", e.what, e.hint)
        except OperatorError as e:
            return error_response(refused_status, "refused", e.what, e.hint)

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request, operator: Operator) -> HTMLResponse:
        try:
            name = agent_name(request)
            view = await view_of(operator, name)
        except PageError as e:
            back = html.escape(_dashboard_link(request, agent))
            return HTMLResponse(
                f"<!doctype html><title>no such agent</title><p>{html.escape(e.what)}</p>"
                f'<p><a href="{back}">back to the dashboard</a></p>',
                status_code=e.status,
            )
        credentials = await operator.credentials(name)
        path = request.url.path
        dashboard = _dashboard_link(request, agent)
        return TEMPLATES.TemplateResponse(
            request,
            "agent.html",
            {
                **page_context(request),  # what base.html shows on every page
                "agent": view,
                # The page's API is relative to where it is mounted.
                "page_base": path if path.endswith("/") else path + "/",
                "dashboard_url": dashboard,
                # For links to the dashboard's own pages from the agent's port.
                "dashboard_base": dashboard.removesuffix("/"),
                "credentials": credentials,
                "login_kinds": LOGIN_KINDS,
            },
        )

    @router.get("/api/events", response_model=None)
    async def events(
        request: Request,
        operator: Operator,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse | JSONResponse:
        name = agent_name(request)
        try:
            await view_of(operator, name)
        except PageError as e:
            return _page_error(e)
        runtime: CoreRuntime = request.app.state.runtime
        slots, client = slots_of(request), client_of(request)
        if (refused := slots.take(client)) is not None:
            return refused
        stream = event_stream(
            runtime, operator, name, parse_last_event_id(last_event_id), closing=closing
        )
        return CountedEventSource(
            slots,
            client,
            stream,
            ping=PING_S,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.post("/api/send", responses=REFUSALS)
    async def send(request: Request, operator: Operator) -> JSONResponse:
        name = agent_name(request)

        async def act() -> dict[str, Any]:
            await view_of(operator, name)
            fields = await _form_or_json(request)
            body = _required(fields, "body", "type a message first")
            result = await operator.send(name, body)
            return result.model_dump(mode="json")

        return await guarded(act)

    def signal_route(path: str, signal: AgentSignal) -> None:
        async def act_on(request: Request, operator: Operator) -> JSONResponse:
            name = agent_name(request)

            async def act() -> dict[str, Any]:
                await view_of(operator, name)
                await operator.signal(name, signal)
                return {"signal": signal.value}

            # Refused because of the agent's current state (no turn loop): 409.
            return await guarded(act, refused_status=409)

        router.add_api_route(
            path, act_on, methods=["POST"], name=f"agent_{signal.value}", responses=REFUSALS
        )

    signal_route("/api/cancel", AgentSignal.CANCEL_TURN)
    signal_route("/api/pause", AgentSignal.PAUSE)
    signal_route("/api/resume", AgentSignal.RESUME)

    @router.post("/api/login", responses=REFUSALS)
    async def login(request: Request, operator: Operator) -> JSONResponse:
        name = agent_name(request)

        async def act() -> dict[str, Any]:
            await view_of(operator, name)
            fields = await _form_or_json(request)
            kinds = ", ".join(k.value for k in CredentialKind)
            try:
                kind = CredentialKind(_required(fields, "kind", f"choose one of {kinds}"))
            except ValueError:
                raise PageError(
                    400, "bad_kind", "unknown credential kind", f"choose one of {kinds}"
                ) from None
            secret = _required(fields, "secret", "paste the token, key or file")
            summary = await operator.login(name, kind, secret)
            return summary.model_dump(mode="json")

        return await guarded(act)

    @router.get("/api/credentials", responses=REFUSALS)
    async def credentials(request: Request, operator: Operator) -> JSONResponse:
        name = agent_name(request)

        async def act() -> dict[str, Any]:
            await view_of(operator, name)
            summary = await operator.credentials(name)
            return summary.model_dump(mode="json")

        return await guarded(act)

    return router


def _dashboard_link(request: Request, agent: str | None) -> str:
    if agent is None:
        return "/"  # mounted on the dashboard itself
    runtime: CoreRuntime = request.app.state.runtime
    return runtime.settings.dashboard_url() + "/"
