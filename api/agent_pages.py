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
`state.csrf` (CsrfGuard) for api/deps.py, and refuse unsafe requests without the CSRF token
(CsrfMiddleware). A refused call answers `{"ok": false, "error", "message", "hint"}` with a 4xx
status (api/refusals.py); the page itself, a short HTML page saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.body_fields import BodyError, BodyProblem, body_fields
from api.dashboard import PageContext
from api.deps import Operator, Runtime, Slots
from api.refusals import RequestRefused, error_responses
from api.sse import RETRY_MS, Event, Feed, Next, live_stream
from control.operator import AgentSignal, AgentView, OperatorError, OperatorService
from control.runtime import CoreRuntime
from hyperhive.broker import agent_events_topic
from hyperhive.claude_stream.events import parse_object
from hyperhive.claude_stream.render import render
from hyperhive.credentials import CredentialError, CredentialKind
from hyperhive.domain import InvalidName, check_agent_name, parse_resume_id
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
MAX_FIELD_BYTES = 1 << 20

LOGIN_KINDS: dict[CredentialKind, str] = {
    CredentialKind.OAUTH_TOKEN: "OAuth token (from `claude setup-token`)",
    CredentialKind.API_KEY: "API key (sk-ant-…)",
    CredentialKind.CREDENTIALS_JSON: "~/.claude/.credentials.json (whole file)",
}


# -- what an event looks like on the page ----------------------------------------------------


def rendered_items(event: TurnEvent) -> list[dict[str, Any]]:
    if event.kind == "hive":
        # hive's own notes about the turn (retries, kills, ...), not claude output.
        payload = event.payload
        text = payload.get("text") or payload.get("message") or json.dumps(payload)
        is_error = payload.get("is_error") is True or payload.get("level") == "error"
        return [{"kind": "note", "text": str(text), "is_error": is_error, "detail": payload}]
    # The store keeps claude's object as the payload (a noise line's is empty) and its type as
    # the kind.
    claude_event = parse_object(event.payload, default_type=event.kind)
    return [item.model_dump(mode="json") for item in render(claude_event)]


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


class TurnEventFeed(Feed):
    """The agent's stored events after `after` (None: its newest REPLAY_LIMIT), then each new
    one as it is stored, and its status whenever it changed."""

    def __init__(
        self, engine: Engine, operator: OperatorService, agent: str, after: int | None
    ) -> None:
        super().__init__(agent_events_topic(agent), wake_buffer=16, poll_s=STATUS_POLL_S)
        self._engine = engine
        self._operator = operator
        self._agent = agent
        self._resume_after = after
        self._cursor = 0
        self._status: dict[str, Any] | None = None

    async def opening(self) -> AsyncIterator[Event]:
        if self._resume_after is None:
            keep = REPLAY_LIMIT
            self._cursor = await asyncio.to_thread(replay_start, self._engine, self._agent, keep)
        else:
            self._cursor = self._resume_after
        yield ServerSentEvent(retry=RETRY_MS)

    async def news(self) -> AsyncIterator[Event]:
        batch = await self._operator.logs(self._agent, after_id=self._cursor, limit=BATCH)
        for event in batch:
            self._cursor = event.id
            yield ServerSentEvent(
                data=json.dumps(event_data(event), ensure_ascii=False), id=str(event.id)
            )
        if len(batch) == BATCH:
            self.next_step = Next.AGAIN  # more stored: catch up before waiting
            return
        try:
            now = status_data(await self._operator.agent(self._agent))
        except OperatorError:
            self.next_step = Next.END  # the agent was destroyed while we watched
            return
        if now != self._status:
            self._status = now
            yield ServerSentEvent(data=json.dumps(now), event="status")
        self.next_step = Next.WAIT


# -- the router ------------------------------------------------------------------------------


async def _form_or_json(request: Request) -> dict[str, str]:
    """The request's string fields, from a JSON object or a form (the page's <form> fallback)."""
    try:
        data = await body_fields(request, max_bytes=MAX_FIELD_BYTES)
    except BodyError as e:
        if e.problem is BodyProblem.TOO_LARGE:
            raise RequestRefused(
                413, "too_large", f"the request is over {MAX_FIELD_BYTES} bytes", "send less"
            ) from None
        shown = "not JSON" if e.problem is BodyProblem.NOT_JSON else "not a JSON object"
        raise RequestRefused(
            400,
            "bad_request",
            f"the request body is {shown}",
            'send a JSON object such as {"body": "…"}',
        ) from None
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _required(fields: dict[str, str], name: str, hint: str) -> str:
    value = fields.get(name)
    if value is None or not value.strip():
        raise RequestRefused(400, "missing_field", f"the field {name!r} is missing or empty", hint)
    return value


async def _view(operator: OperatorService, name: str) -> AgentView:
    """The agent's view; RequestRefused (404) when there is no such agent."""
    try:
        return await operator.agent(check_agent_name(name))
    except InvalidName as e:
        raise RequestRefused(
            404, "unknown_agent", str(e), "see the dashboard for the agents"
        ) from None
    except OperatorError as e:
        raise RequestRefused(404, "unknown_agent", e.what, e.hint) from None


@contextlib.contextmanager
def _refusing(refused_status: int = 400) -> Iterator[None]:
    """The operator's refusals as the page's API answers them."""
    try:
        yield
    except CredentialError as e:
        raise RequestRefused(400, "invalid_credentials", e.what, e.hint) from None
    except OperatorError as e:
        raise RequestRefused(refused_status, "refused", e.what, e.hint) from None


def _done(result: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"ok": True, **result})


def _no_such_page(refused: RequestRefused, dashboard: str) -> HTMLResponse:
    """A page that does not exist, said in HTML: a browser asked for it, not a script."""
    return HTMLResponse(
        f"<!doctype html><title>no such agent</title><p>{html.escape(refused.what)}</p>"
        f'<p><a href="{html.escape(dashboard)}">back to the dashboard</a></p>',
        status_code=refused.status,
    )


def agent_router(agent: str | None = None, *, closing: asyncio.Event | None = None) -> APIRouter:
    """The page's routes. `agent` fixes the agent (its own port); without it the mount path
    carries `{name}` (the dashboard). `closing`, once set, ends open event streams (a server
    that stops would otherwise wait for the browsers to hang up)."""
    router = APIRouter(tags=["agent page"])

    def agent_name(request: Request) -> str:
        # Unchecked: _view checks it and turns a bad name into a 404 answer.
        return agent if agent is not None else str(request.path_params.get("name", ""))

    def dashboard_link(runtime: CoreRuntime) -> str:
        if agent is None:
            return "/"  # mounted on the dashboard itself
        return runtime.settings.dashboard_url() + "/"

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(
        request: Request, runtime: Runtime, operator: Operator, base: PageContext
    ) -> HTMLResponse:
        name = agent_name(request)
        dashboard = dashboard_link(runtime)
        try:
            view = await _view(operator, name)
        except RequestRefused as e:
            return _no_such_page(e, dashboard)
        credentials = await operator.credentials(name)
        path = request.url.path
        return TEMPLATES.TemplateResponse(
            request,
            "agent.html",
            {
                **base,  # what base.html shows on every page
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
        runtime: Runtime,
        operator: Operator,
        slots: Slots,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse:
        name = agent_name(request)
        await _view(operator, name)
        feed = TurnEventFeed(runtime.engine, operator, name, parse_last_event_id(last_event_id))
        return live_stream(request, runtime, slots, feed, closing)

    @router.post("/api/send", responses=REFUSALS)
    async def send(request: Request, operator: Operator) -> JSONResponse:
        name = agent_name(request)
        with _refusing():
            await _view(operator, name)
            fields = await _form_or_json(request)
            body = _required(fields, "body", "type a message first")
            result = await operator.send(name, body)
        return _done(result.model_dump(mode="json"))

    def signal_route(path: str, signal: AgentSignal) -> None:
        async def act_on(request: Request, operator: Operator) -> JSONResponse:
            name = agent_name(request)
            # Refused because of the agent's current state (no turn loop): 409.
            with _refusing(refused_status=409):
                await _view(operator, name)
                await operator.signal(name, signal)
            return _done({"signal": signal.value})

        router.add_api_route(
            path, act_on, methods=["POST"], name=f"agent_{signal.value}", responses=REFUSALS
        )

    signal_route("/api/cancel", AgentSignal.CANCEL_TURN)
    signal_route("/api/pause", AgentSignal.PAUSE)
    signal_route("/api/resume", AgentSignal.RESUME)

    @router.post("/api/login", responses=REFUSALS)
    async def login(request: Request, operator: Operator) -> JSONResponse:
        name = agent_name(request)
        with _refusing():
            await _view(operator, name)
            fields = await _form_or_json(request)
            kinds = ", ".join(k.value for k in CredentialKind)
            try:
                kind = CredentialKind(_required(fields, "kind", f"choose one of {kinds}"))
            except ValueError:
                raise RequestRefused(
                    400, "bad_kind", "unknown credential kind", f"choose one of {kinds}"
                ) from None
            secret = _required(fields, "secret", "paste the token, key or file")
            summary = await operator.login(name, kind, secret)
        return _done(summary.model_dump(mode="json"))

    @router.get("/api/credentials", responses=REFUSALS)
    async def credentials(request: Request, operator: Operator) -> JSONResponse:
        name = agent_name(request)
        with _refusing():
            await _view(operator, name)
            summary = await operator.credentials(name)
        return _done(summary.model_dump(mode="json"))

    return router
