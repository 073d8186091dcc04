"""Health per host with the real `hive c0re`: it beats in the store while it runs and says it
stopped on a clean stop; `hive status` and the dashboard list the hosts and show an agent whose
host is down as such."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from hyperhive.store import agents as agent_store
from hyperhive.store import hosts as host_store
from hyperhive.store.db import begin
from hyperhive.store.hosts import HostInfo
from hyperhive.store.tables import metadata, utcnow
from tests.fakes.anthropic_api import FakeAnthropic
from tests.rig.hive_process import run_hive
from tests.rig.polling import eventually

pytestmark = pytest.mark.integration

HOSTS = metadata.tables["hosts"]
DOWN_AFTER_S = 5.0


def _far_host_with_carol(engine: sa.Engine) -> None:
    """Another host whose hive-c0re was last heard of 5 minutes ago, with an agent on it."""
    host_store.host_started(engine, "far", version="0.1.0", dashboard_url="http://far:7000")
    with begin(engine, write=True) as conn:
        conn.execute(
            sa.update(HOSTS)
            .where(HOSTS.c.id == "far")
            .values(heartbeat_at=utcnow() - timedelta(minutes=5))
        )
    agent_store.register_agent(engine, "carol", "far")


async def test_hive_c0re_beats_shows_a_down_hosts_agent_and_says_it_stopped(
    start_c0re, fake_model: FakeAnthropic
):
    hive = await start_c0re(
        agents=["alice"], host_heartbeat_s="0.2", host_down_after_s=str(DOWN_AFTER_S)
    )
    here = hive.env.extra["HIVE_HOST_ID"]
    engine = hive.engine()

    def host(host_id: str) -> HostInfo:
        hosts = host_store.list_hosts(engine, down_after_s=DOWN_AFTER_S)
        return next(h for h in hosts if h.id == host_id)

    try:
        started = await asyncio.to_thread(host, here)
        assert started.up and started.agents == 1 and started.version
        assert started.dashboard_url == hive.env.dashboard

        def beaten() -> HostInfo | None:
            now = host(here)
            assert now.heartbeat_at is not None and started.heartbeat_at is not None
            return now if now.heartbeat_at > started.heartbeat_at else None

        await eventually(lambda: asyncio.to_thread(beaten), timeout=30, what="a heartbeat")

        await asyncio.to_thread(_far_host_with_carol, engine)
        status = run_hive(hive.env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        lines = status.stdout.splitlines()
        far = next(line for line in lines if line.startswith("far "))
        assert "down since " in far and " s ago" in far
        assert re.search(rf"^{here} \(this host\) +up ", status.stdout, re.MULTILINE)
        carol = next(line for line in lines if line.startswith("carol "))
        assert re.match(r"carol +host far down ", carol)
        assert not re.match(r"alice +host ", next(ln for ln in lines if ln.startswith("alice ")))

        async with httpx.AsyncClient(base_url=hive.env.dashboard, timeout=30) as http:
            overview = (await http.get("/api/status")).json()
            page = (await http.get("/")).text
        hosts = {h["id"]: h for h in overview["hosts"]}
        assert hosts[here]["up"] and hosts[here]["here"] and not hosts["far"]["up"]
        agents = {a["name"]: a["host_down"] for a in overview["agents"]}
        assert agents == {"alice": False, "carol": True}
        assert ">host far down</span>" in page and 'data-testid="host-row-far"' in page

        hive.process.interrupt()
        stopped = await asyncio.to_thread(host, here)
        assert not stopped.up and stopped.stopped_at is not None
    finally:
        engine.dispose()
