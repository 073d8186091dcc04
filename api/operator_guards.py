"""What every app the operator's browser talks to shares (the dashboard's and the agent pages'):
its state (runtime, operator, CSRF guard, live-stream slots: what api/deps.py gives the routes),
the one way it answers a refused request (api/refusals.py), and its guards, in the order they
run: Host/Origin first, then the access token, then CSRF."""

from __future__ import annotations

from fastapi import FastAPI

from api.access_guard import AccessTokenMiddleware
from api.csrf import CsrfGuard, CsrfMiddleware
from api.host_guard import HostGuardMiddleware, allowed_hosts
from api.refusals import answer_refusals
from api.stream_slots import StreamSlots
from control.operator import OperatorService
from control.runtime import CoreRuntime


def guard_operator_app(
    app: FastAPI,
    runtime: CoreRuntime,
    operator: OperatorService,
    guard: CsrfGuard,
    stream_slots: StreamSlots | None,
) -> None:
    app.state.runtime = runtime
    app.state.operator = operator
    app.state.csrf = guard
    if stream_slots is not None:
        app.state.stream_slots = stream_slots  # else the app makes its own (api/deps.py)
    answer_refusals(app)
    # Starlette runs the middleware added last first.
    app.add_middleware(CsrfMiddleware, guard=guard)
    if runtime.access_token is not None:
        # Before the CSRF check: without the token, nothing is said about the page.
        app.add_middleware(AccessTokenMiddleware, token=runtime.access_token)
    # A foreign Host or Origin never reaches the token or the CSRF check.
    settings = runtime.settings
    app.add_middleware(
        HostGuardMiddleware, hosts=allowed_hosts(settings.bind_host, settings.allowed_host_names)
    )
