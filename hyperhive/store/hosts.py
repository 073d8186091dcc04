"""Store operations on hosts: each hive-c0re says it started, beats while it runs and says it
stopped; everyone else reads from that which hosts are up and how many agents each holds.

A host is up when it has not said it stopped and its last beat is at most `down_after_s` old
(a host killed with SIGKILL never says it stopped: its beats just end).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from hyperhive.store.db import begin
from hyperhive.store.tables import metadata, utcnow

__all__ = [
    "HostInfo",
    "agent_host",
    "beat",
    "host_started",
    "host_stopped",
    "list_hosts",
    "pick_spawn_host",
]

HOSTS = metadata.tables["hosts"]
AGENTS = metadata.tables["agents"]


class HostInfo(BaseModel):
    """One host as the dashboard and `hive status` show it."""

    id: str
    version: str
    dashboard_url: str
    # None: agents are registered on it but its hive-c0re never started with this store.
    started_at: datetime | None
    heartbeat_at: datetime | None
    stopped_at: datetime | None
    agents: int
    up: bool


def host_started(engine: Engine, host_id: str, *, version: str, dashboard_url: str) -> None:
    """Record that `host_id`'s hive-c0re has started (again): up from now on."""
    now = utcnow()
    values = {
        "version": version,
        "dashboard_url": dashboard_url,
        "started_at": now,
        "heartbeat_at": now,
        "stopped_at": None,
    }
    with begin(engine, write=True) as conn:
        updated = conn.execute(sa.update(HOSTS).where(HOSTS.c.id == host_id).values(**values))
        if updated.rowcount == 0:
            conn.execute(sa.insert(HOSTS).values(id=host_id, **values))


def beat(engine: Engine, host_id: str) -> None:
    """`host_id` is alive now (a row that is missing, e.g. deleted by hand, is made again)."""
    now = utcnow()
    with begin(engine, write=True) as conn:
        updated = conn.execute(
            sa.update(HOSTS).where(HOSTS.c.id == host_id).values(heartbeat_at=now, stopped_at=None)
        )
        if updated.rowcount == 0:
            conn.execute(
                sa.insert(HOSTS).values(
                    id=host_id, version="", dashboard_url="", started_at=now, heartbeat_at=now
                )
            )


def host_stopped(engine: Engine, host_id: str) -> None:
    """`host_id`'s hive-c0re stopped on purpose: down at once, not after `down_after_s`."""
    with begin(engine, write=True) as conn:
        conn.execute(sa.update(HOSTS).where(HOSTS.c.id == host_id).values(stopped_at=utcnow()))


def _is_up(stopped_at: datetime | None, heartbeat_at: datetime, down_after_s: float) -> bool:
    return stopped_at is None and utcnow() - heartbeat_at <= timedelta(seconds=down_after_s)


def list_hosts(engine: Engine, *, down_after_s: float) -> list[HostInfo]:
    """Every host that ever started, plus any host an agent is registered on, by id."""
    counts = (
        sa.select(AGENTS.c.host_id, sa.func.count().label("agents"))
        .group_by(AGENTS.c.host_id)
        .subquery()
    )
    with begin(engine) as conn:
        rows = conn.execute(
            sa.select(HOSTS, sa.func.coalesce(counts.c.agents, 0).label("agents"))
            .select_from(HOSTS.outerjoin(counts, counts.c.host_id == HOSTS.c.id))
            .order_by(HOSTS.c.id)
        ).all()
        agent_hosts = conn.execute(sa.select(counts.c.host_id, counts.c.agents)).all()
    hosts = {
        row.id: HostInfo(
            id=row.id,
            version=row.version,
            dashboard_url=row.dashboard_url,
            started_at=row.started_at,
            heartbeat_at=row.heartbeat_at,
            stopped_at=row.stopped_at,
            agents=int(row.agents),
            up=_is_up(row.stopped_at, row.heartbeat_at, down_after_s),
        )
        for row in rows
    }
    # Agents registered on a host that never beat (a store made before hosts were recorded).
    for row in agent_hosts:
        if row.host_id not in hosts:
            hosts[row.host_id] = HostInfo(
                id=row.host_id,
                version="",
                dashboard_url="",
                started_at=None,
                heartbeat_at=None,
                stopped_at=None,
                agents=int(row.agents),
                up=False,
            )
    return [hosts[key] for key in sorted(hosts)]


def agent_host(engine: Engine, name: str) -> str | None:
    """The host `name` lives on, or None when no such agent is registered."""
    with begin(engine) as conn:
        host: str | None = conn.execute(
            sa.select(AGENTS.c.host_id).where(AGENTS.c.name == name)
        ).scalar_one_or_none()
    return host


def pick_spawn_host(engine: Engine, *, here: str, down_after_s: float) -> str:
    """The up host with the fewest agents (`here` on a tie, or when no host is up)."""
    up = [h for h in list_hosts(engine, down_after_s=down_after_s) if h.up]
    if not up:
        return here
    return min(up, key=lambda h: (h.agents, h.id != here, h.id)).id
