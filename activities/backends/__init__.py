"""Container backends behind one interface (see base.ContainerBackend)."""

from __future__ import annotations

from activities.backends.base import (
    AgentView,
    BackendError,
    BackendErrorKind,
    ContainerBackend,
    ContainerSpec,
    ContainerStatus,
    Mount,
)
from activities.backends.process import ProcessBackend
from hyperhive.errors import StartupError
from hyperhive.settings import HiveSettings

__all__ = [
    "AgentView",
    "BackendError",
    "BackendErrorKind",
    "ContainerBackend",
    "ContainerSpec",
    "ContainerStatus",
    "Mount",
    "ProcessBackend",
    "select_backend",
]


def select_backend(settings: HiveSettings) -> ContainerBackend:
    choice = settings.container_backend
    if choice in ("auto", "process"):
        return ProcessBackend(settings)
    raise StartupError(
        f"container backend {choice!r} is not available in this version",
        "set HIVE_CONTAINER_BACKEND=process (or auto)",
    )
