"""Which port an agent's page listens on: hm1nd on the manager port, every other agent on a
stable hash of its name within the agent range, probing on from there when that port is taken.
The choice is persisted (`agents.agent_port`) so an agent keeps its URL across restarts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection

from sqlalchemy import Engine

from hyperhive.domain import MANAGER_NAME
from hyperhive.errors import HiveError
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store


class NoFreePort(HiveError):
    """Every port of the agent-page range is taken."""


def preferred_port(name: str, lo: int, hi: int) -> int:
    """The port `name` tries first: the same on every host and every start."""
    digest = hashlib.sha256(name.encode()).digest()
    return lo + int.from_bytes(digest[:8], "big") % (hi - lo + 1)


def choose_port(
    name: str,
    settings: HiveSettings,
    taken: Collection[int],
    is_free: Callable[[int], bool],
) -> int:
    """The first port from the preferred one on (wrapping) that no agent holds and that binds."""
    if name == MANAGER_NAME:
        return settings.manager_port
    lo, hi = settings.agent_port_min, settings.agent_port_max
    start = preferred_port(name, lo, hi)
    span = hi - lo + 1
    reserved = {settings.dashboard_port, settings.manager_port}
    for offset in range(span):
        port = lo + (start - lo + offset) % span
        if port in taken or port in reserved:
            continue
        if is_free(port):
            return port
    raise NoFreePort(
        f"no free agent-page port for {name} in {lo}-{hi}",
        "widen HIVE_AGENT_PORT_MIN/HIVE_AGENT_PORT_MAX or destroy unused agents",
    )


def assign_port(
    engine: Engine, settings: HiveSettings, name: str, is_free: Callable[[int], bool]
) -> int:
    """The agent's persisted port, choosing and persisting one the first time."""
    for _ in range(5):
        ports = agent_store.agent_ports(engine)
        if name in ports:
            return ports[name]
        taken = {port for agent, port in ports.items() if agent != name}
        port = choose_port(name, settings, taken, is_free)
        try:
            agent_store.set_agent_port(engine, name, port)
        except agent_store.PortTaken:
            continue  # another hive-c0re call took it between our read and write: probe again
        return port
    raise NoFreePort(f"could not settle on a page port for {name}", "try again")
