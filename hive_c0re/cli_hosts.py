"""How `hive status` and `hive list` show hosts: the hosts table of `hive status`, and an agent's
state, which is `host <id> down` while its host is down (hyperhive.host_health decides that, in
hive-c0re; this only reads its answer from the admin socket)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hyperhive.host_health import host_down_state

HOST_HEADERS = ("HOST", "STATE", "LAST BEAT", "AGENTS", "VERSION")


def socket_time(value: str) -> datetime | None:
    """An ISO timestamp from the socket, read as UTC when it names no zone; None if it is none."""
    try:
        then = datetime.fromisoformat(value)
    except ValueError:
        return None
    return then if then.tzinfo is not None else then.replace(tzinfo=UTC)


def _at(value: str | None) -> str:
    """An ISO timestamp from the socket as `2025-01-31 12:00:05 UTC`."""
    if not value:
        return "-"
    then = socket_time(value)
    return value if then is None else then.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{int(seconds)} s ago"


def host_state(host: dict[str, Any]) -> str:
    """`up`, `stopped at …`, `down since <last beat>, <n> s ago`, or why it never beat."""
    if host.get("up"):
        return "up"
    if host.get("stopped_at"):
        return f"stopped at {_at(host['stopped_at'])}"
    if not host.get("heartbeat_at"):
        # Agents are registered on it, but its hive-c0re never ran with this store.
        return "down: never started with this store"
    return f"down since {_at(host['heartbeat_at'])}, {_age(host.get('heartbeat_age_s'))}"


def host_rows(hosts: list[dict[str, Any]]) -> list[list[str]]:
    """One row per host under HOST_HEADERS; the answering hive-c0re's host is marked."""
    return [
        [
            h["id"] + (" (this host)" if h.get("here") else ""),
            host_state(h),
            _age(h.get("heartbeat_age_s")),
            str(h.get("agents", 0)),
            h.get("version") or "-",
        ]
        for h in hosts
    ]


def agent_state(agent: dict[str, Any]) -> str:
    """Its state, or `host <id> down` while its host is down (its stored state is stale)."""
    if agent.get("host_down"):
        return host_down_state(agent.get("host_id") or "?")
    return str(agent["state"])
