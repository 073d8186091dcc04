"""Container backends behind one interface (see base.ContainerBackend)."""

from __future__ import annotations

import shutil
from pathlib import Path

from activities.backends.base import (
    AgentView,
    BackendError,
    BackendErrorKind,
    ContainerBackend,
    ContainerSpec,
    ContainerStatus,
    Mount,
)
from activities.backends.bwrap import BWRAP_HINT, BwrapBackend
from activities.backends.nixos import NixosBackend
from activities.backends.process import ProcessBackend
from hyperhive.errors import StartupError
from hyperhive.settings import HiveSettings

__all__ = [
    "AgentView",
    "BackendError",
    "BackendErrorKind",
    "BwrapBackend",
    "ContainerBackend",
    "ContainerSpec",
    "ContainerStatus",
    "Mount",
    "NixosBackend",
    "ProcessBackend",
    "select_backend",
]


def _on_nixos() -> bool:
    return Path("/etc/NIXOS").exists() and shutil.which("nixos-container") is not None


def select_backend(settings: HiveSettings) -> ContainerBackend:
    """The configured backend; `auto` takes the first usable of nixos, bwrap, process."""
    choice = settings.container_backend
    if choice == "nixos" or (choice == "auto" and _on_nixos()):
        if not shutil.which("nixos-container"):
            raise StartupError(
                "HIVE_CONTAINER_BACKEND=nixos but nixos-container is not on PATH",
                "run hive-c0re on NixOS through the services.hive-c0re module (it sets PATH), "
                "or choose bwrap/process",
            )
        return NixosBackend(settings)
    if choice == "auto":
        if shutil.which("bwrap"):
            return BwrapBackend(settings)
        return ProcessBackend(settings)
    if choice == "bwrap":
        if not shutil.which("bwrap"):
            raise StartupError(
                "HIVE_CONTAINER_BACKEND=bwrap but bubblewrap (bwrap) is not installed", BWRAP_HINT
            )
        return BwrapBackend(settings)
    if choice == "process":
        return ProcessBackend(settings)
    raise StartupError(
        f"container backend {choice!r} is not available in this version",
        "set HIVE_CONTAINER_BACKEND=bwrap, process or auto",
    )
