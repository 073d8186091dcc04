"""The dashboard on :7000: agents, approvals, the live message flow and the operator's controls.

The page is rendered on the server (Jinja2) and kept live by `dashboard.js` over one SSE stream,
`GET /api/stream/messages`:

- `event: ready`     first, with `id:` = the newest message id already covered, so that the
                     browser's reconnect (Last-Event-ID) resumes exactly there even when the
                     store had no message yet;
- `event: message`   one per stored message, `id:` = its id, data = the message JSON;
- `event: agents`    data = {"count", "html"}: the agent rows, re-rendered, when they changed;
- `event: approvals` data = {"pending", "html"}: the approval rows, when they changed;
- `event: hosts`     data = {"down", "html"}: the host rows (their heartbeats), when they changed.

Row HTML comes from the same templates as the page, so the page and its updates cannot drift
apart. The agent and approval rows are looked at on every message (a spawn's "bob is up" notice
is a message) and every `REFRESH_S` seconds, and sent only when they changed: an approved spawn
shows up without a reload even when no message marks it (api/dashboard_stream.py).

JSON API (every unsafe request needs the CSRF token, see api/csrf.py):

- `GET  /api/agents`, `GET /api/approvals` (pending first), `GET /api/hosts`, `GET /api/status`
- `POST /api/approvals/{id}/approve` and `/deny`, body JSON or form with an optional `note`
- `POST /api/agents/{name}/{start|stop|restart|kill|destroy}`; destroy needs
  `{"confirm": "<name>"}`

A refused request answers `{"ok": false, "error": code, "message", "hint"}` with a 4xx status
(5xx when hive-c0re itself failed); nothing changed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates

from api.body_fields import MAX_BODY_BYTES, BodyError, BodyProblem, body_fields
from api.deps import Csrf, Operator, Runtime
from api.refusals import RequestRefused, error_responses
from control.operator import AgentView, ApprovalView, ControlAction, HiveStatus
from hyperhive import __version__
from hyperhive.domain import MAX_STORE_ID, OPERATOR_NAME, ApprovalStatus
from hyperhive.errors import HiveError
from hyperhive.host_health import HostHealth, host_down_state

log = logging.getLogger(__name__)

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")

REFUSALS = error_responses(400, 403, 404, 409, 503)

router = APIRouter(tags=["dashboard"])

# Who a decision or a control action from the dashboard is recorded as.
DASHBOARD_BY = "operator (dashboard)"
ApprovalIdPath = Annotated[int, PathParam(ge=1, le=MAX_STORE_ID)]


# -- template helpers ------------------------------------------------------------------------


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | None) -> str:
    """For `<time datetime=…>`: the page turns it into "3m ago" in the viewer's clock."""
    return "" if value is None else _as_utc(value).isoformat().replace("+00:00", "Z")


def shown_time(value: datetime | None) -> str:
    return "—" if value is None else _as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def usd(value: float) -> str:
    """Cents matter once they add up; small turns cost fractions of a cent, so show those."""
    return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:.4f}"


TEMPLATES.env.filters["iso"] = iso
TEMPLATES.env.filters["shown_time"] = shown_time
TEMPLATES.env.filters["usd"] = usd
TEMPLATES.env.filters["host_down_state"] = host_down_state


async def page_context(runtime: Runtime, csrf: Csrf) -> dict[str, Any]:
    """What `base.html` shows on every page (the agent pages pass it too)."""
    settings = runtime.settings
    return {
        "csrf_token": csrf.token,
        "version": __version__,
        "host_id": settings.host_id,
        "temporal_target": settings.temporal_target,
        "temporal_ui": settings.temporal_web_ui(),
        "namespace": settings.temporal_namespace,
        "started_at": runtime.started_at,
    }


PageContext = Annotated[dict[str, Any], Depends(page_context)]


def render_agent_rows(agents: list[AgentView]) -> str:
    return TEMPLATES.get_template("dashboard_agents.html").render(agents=agents)


def render_approval_rows(approvals: list[ApprovalView]) -> str:
    return TEMPLATES.get_template("dashboard_approvals.html").render(approvals=approvals)


def render_host_rows(hosts: list[HostHealth]) -> str:
    return TEMPLATES.get_template("dashboard_hosts.html").render(hosts=hosts)


def pending_count(approvals: list[ApprovalView]) -> int:
    return sum(a.status == ApprovalStatus.PENDING.value for a in approvals)


def down_count(hosts: list[HostHealth]) -> int:
    return sum(not h.up for h in hosts)


# -- errors ----------------------------------------------------------------------------------


def _unexpected(doing: str, error: Exception) -> RequestRefused:
    log.exception("dashboard: %s failed", doing)
    return RequestRefused(
        503,
        "unavailable",
        f"{doing} failed: {error}",
        "check /health (is Temporal up?) and hive-c0re's log, then try again",
    )


async def _fields(request: Request, *, too_large_hint: str, bad_hint: str) -> dict[str, str]:
    """The string fields of a JSON object or form body (empty body: none)."""
    try:
        data = await body_fields(request)
    except BodyError as e:
        if e.problem is BodyProblem.TOO_LARGE:
            raise RequestRefused(
                413,
                "body_too_large",
                f"the request body is over {MAX_BODY_BYTES} bytes",
                too_large_hint,
            ) from None
        shown = "must be a JSON object" if e.problem is BodyProblem.NOT_OBJECT else "is not JSON"
        raise RequestRefused(400, "bad_request", f"the request body {shown}", bad_hint) from None
    for key, value in data.items():
        if not isinstance(value, str):
            raise RequestRefused(
                400, "bad_request", f"the field {key!r} must be a string", bad_hint
            )
    return data


# -- the page --------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request, operator: Operator, page: PageContext) -> HTMLResponse:
    hosts = await operator.hosts()
    agents = await operator.agents(hosts=hosts)
    approvals = await operator.approvals()
    return TEMPLATES.TemplateResponse(
        request,
        "dashboard.html",
        {
            **page,
            "agents": agents,
            "approvals": approvals,
            "pending": pending_count(approvals),
            "hosts": hosts,
            "hosts_down": down_count(hosts),
            "operator_name": OPERATOR_NAME,
        },
    )


# -- reading ---------------------------------------------------------------------------------


@router.get("/api/agents", response_model=list[AgentView])
async def list_agents(operator: Operator) -> list[AgentView]:
    """Every agent: state, container, deployed sha (stale?), spend, links."""
    return await operator.agents()


@router.get("/api/approvals", response_model=list[ApprovalView])
async def list_approvals(operator: Operator) -> list[ApprovalView]:
    """Approvals, pending first (oldest first), then decided ones (newest first)."""
    return await operator.approvals()


@router.get("/api/hosts", response_model=list[HostHealth])
async def list_hosts(operator: Operator) -> list[HostHealth]:
    """Every host sharing the store: up or down, its last heartbeat, its agents."""
    return await operator.hosts()


@router.get("/api/status", response_model=HiveStatus)
async def status(operator: Operator) -> HiveStatus:
    return await operator.status()


# -- acting ----------------------------------------------------------------------------------


async def _decide(
    request: Request, operator: Operator, approval_id: int, *, approved: bool
) -> JSONResponse:
    fields = await _fields(
        request,
        too_large_hint="a note is short text: send less",
        bad_hint='send {"note": "…"} (or nothing)',
    )
    note = fields.get("note", "").strip()
    try:
        approval = await operator.approval(approval_id)
    except HiveError as e:
        raise RequestRefused(
            404, "unknown_approval", e.what, "reload the page: see the approvals list"
        ) from None
    if approval.status != ApprovalStatus.PENDING.value:
        by = f" by {approval.decided_by}" if approval.decided_by else ""
        raise RequestRefused(
            409,
            "already_decided",
            f"approval #{approval_id} is already {approval.status}{by}",
            "nothing to do; reload the page to see the current state",
        )
    try:
        await operator.decide(approval_id, approved=approved, by=DASHBOARD_BY, note=note)
    except HiveError as e:
        raise RequestRefused(409, "refused", e.what, e.hint) from None
    except Exception as e:
        raise _unexpected(f"deciding approval #{approval_id}", e) from None
    # The workflow records the decision itself; answer with what the operator asked for.
    decided = await operator.approval(approval_id)
    return JSONResponse(
        {
            "ok": True,
            "decision": "approve" if approved else "deny",
            "approval": decided.model_dump(mode="json"),
        }
    )


@router.post("/api/approvals/{approval_id}/approve", responses=REFUSALS)
async def approve(
    request: Request, operator: Operator, approval_id: ApprovalIdPath
) -> JSONResponse:
    """◆ APPR0VE: send the approval's workflow `decide` {approved: true}."""
    return await _decide(request, operator, approval_id, approved=True)


@router.post("/api/approvals/{approval_id}/deny", responses=REFUSALS)
async def deny(request: Request, operator: Operator, approval_id: ApprovalIdPath) -> JSONResponse:
    """DENY: send the approval's workflow `decide` {approved: false}."""
    return await _decide(request, operator, approval_id, approved=False)


@router.post("/api/agents/{name}/{action}", responses=REFUSALS)
async def control(request: Request, operator: Operator, name: str, action: str) -> JSONResponse:
    """Start, stop, restart, kill or destroy an agent; waits until the workflow is done."""
    try:
        what = ControlAction(action)
    except ValueError:
        known = ", ".join(a.value for a in ControlAction)
        raise RequestRefused(
            404, "unknown_action", f"there is no action {action!r}", f"use {known}"
        ) from None
    fields = await _fields(
        request, too_large_hint="send less", bad_hint=f'send {{"confirm": "{name}"}} or nothing'
    )
    try:
        await operator.agent(name)
    except HiveError as e:
        raise RequestRefused(
            404, "unknown_agent", e.what, "reload the page: see the agents list"
        ) from None
    if what == ControlAction.DESTROY and fields.get("confirm") != name:
        raise RequestRefused(
            400,
            "confirm_required",
            f"destroying {name} removes its container, so it must be confirmed",
            f'send {{"confirm": "{name}"}} (the page asks you to type the name)',
        )
    try:
        outcome = await operator.control(what, name, by=DASHBOARD_BY)
    except HiveError as e:
        raise RequestRefused(409, "refused", e.what, e.hint) from None
    except Exception as e:
        raise _unexpected(f"{action} {name}", e) from None
    return JSONResponse(
        {"ok": True, "agent": name, "action": action, "outcome": outcome.model_dump(mode="json")}
    )


__all__ = [
    "DASHBOARD_BY",
    "TEMPLATES",
    "PageContext",
    "down_count",
    "page_context",
    "pending_count",
    "render_agent_rows",
    "render_approval_rows",
    "render_host_rows",
    "router",
]
