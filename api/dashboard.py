"""The dashboard on :7000. For now a status page; agents and approvals arrive with their issues."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from hyperhive import __version__
from hyperhive.runtime import CoreRuntime

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    runtime: CoreRuntime = request.app.state.runtime
    settings = runtime.settings
    return TEMPLATES.TemplateResponse(
        request,
        "dashboard.html",
        {
            "version": __version__,
            "host_id": settings.host_id,
            "temporal_target": settings.temporal_target,
            "temporal_ui": settings.temporal_ui_url(),
            "namespace": settings.temporal_namespace,
            "started_at": runtime.started_at,
        },
    )
