"""What the routes are given: FastAPI dependencies for the objects an app factory puts in
`app.state` (api/app.py, api/operator_guards.py), so that a route names what it needs in its
signature (`operator: Operator`) and no route reads `app.state` itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.csrf import CsrfGuard
from api.stream_slots import StreamSlots, stream_slots_for
from control.operator import OperatorService
from control.runtime import CoreRuntime
from hyperhive.broker import Broker
from hyperhive.metrics import HiveMetrics

# Each is `async`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
# request (and a wait for a free thread under load) for an attribute lookup.


async def runtime_of(request: Request) -> CoreRuntime:
    runtime: CoreRuntime = request.app.state.runtime
    return runtime


async def operator_of(request: Request) -> OperatorService:
    operator: OperatorService = request.app.state.operator
    return operator


async def broker_of(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


async def metrics_of(request: Request) -> HiveMetrics:
    metrics: HiveMetrics = request.app.state.metrics
    return metrics


async def csrf_of(request: Request) -> CsrfGuard:
    guard: CsrfGuard = request.app.state.csrf
    return guard


async def stream_slots_of(request: Request) -> StreamSlots:
    """The app's slots (hive-c0re gives both apps the same); an app built alone makes its own
    on its first stream, from the settings of that moment."""
    state = request.app.state
    slots: StreamSlots | None = getattr(state, "stream_slots", None)
    if slots is None:
        slots = state.stream_slots = stream_slots_for(state.runtime.settings)
    return slots


Runtime = Annotated[CoreRuntime, Depends(runtime_of)]
Operator = Annotated[OperatorService, Depends(operator_of)]
MessageBroker = Annotated[Broker, Depends(broker_of)]
Metrics = Annotated[HiveMetrics, Depends(metrics_of)]
Csrf = Annotated[CsrfGuard, Depends(csrf_of)]
Slots = Annotated[StreamSlots, Depends(stream_slots_of)]
