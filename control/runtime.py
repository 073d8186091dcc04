"""What a running hive-c0re holds: handed to the API apps and activities at start-up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine
from temporalio.client import Client

from control.lifecycle import Lifecycle
from hyperhive.agent_config import ClaudeDefaults
from hyperhive.broker import Broker
from hyperhive.metrics import HiveMetrics
from hyperhive.settings import HiveSettings


@dataclass
class CoreRuntime:
    settings: HiveSettings
    engine: Engine
    client: Client
    broker: Broker
    lifecycle: Lifecycle
    metrics: HiveMetrics
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    workers_running: bool = False
    # The container backend's name and the claude defaults it implies (set once it is chosen).
    backend_name: str = ""
    claude_defaults: ClaudeDefaults = field(default_factory=ClaudeDefaults)
    # agent → the port its own page is served on right now (api.agent_page_servers keeps it):
    # a stored port some other program holds is no link to hand out.
    served_page_ports: dict[str, int] = field(default_factory=dict)
    # What the operator's pages ask for (HIVE_ACCESS_TOKEN_REQUIRED); None = no token.
    access_token: str | None = field(default=None, repr=False)
    # Agents whose claude is running now, between turns or in one (the worker's warm pool).
    warm_agents: Callable[[], frozenset[str]] = field(default=lambda: frozenset())
