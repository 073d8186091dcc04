"""Which hosts count as down for their agents (hyperhive/host_health.py), and this host's
heartbeat (hyperhive/host_heartbeat.py) against a real SQLite store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hyperhive import __version__
from hyperhive.host_health import down_hosts, host_down_state, host_health
from hyperhive.host_heartbeat import HostHeartbeat
from hyperhive.settings import HiveSettings
from hyperhive.store.db import begin
from hyperhive.store.hosts import HostInfo, list_hosts
from tests.rig.polling import eventually

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TIMEOUT = 10.0


def _host(id: str, *, up: bool, beat_ago_s: float | None = 1.0, stopped: bool = False) -> HostInfo:
    beat_at = None if beat_ago_s is None else NOW - timedelta(seconds=beat_ago_s)
    return HostInfo(
        id=id,
        version="1",
        dashboard_url="",
        started_at=beat_at,
        heartbeat_at=beat_at,
        stopped_at=NOW if stopped else None,
        agents=1,
        up=up,
    )


HOSTS = [
    _host("up", up=True),
    _host("late", up=False, beat_ago_s=45.5),
    _host("stopped", up=False, stopped=True),
    _host("never", up=False, beat_ago_s=None),
    _host("here", up=False, beat_ago_s=30),
]


def test_every_host_the_store_has_as_down_is_down_but_the_one_asking():
    assert down_hosts(HOSTS, here="here") == {"late", "stopped", "never"}
    # Asked from elsewhere, "here" is down like any other late host.
    assert down_hosts(HOSTS, here="up") == {"late", "stopped", "never", "here"}
    assert down_hosts([], here="here") == frozenset()


def test_host_health_marks_this_host_and_ages_each_beat():
    shown = {h.id: h for h in host_health(HOSTS, here="here", now=NOW)}
    assert [h.id for h in host_health(HOSTS, here="here", now=NOW)] == [h.id for h in HOSTS]
    assert shown["here"].here and not shown["up"].here
    assert shown["late"].heartbeat_age_s == 45.5 and shown["up"].heartbeat_age_s == 1.0
    assert shown["never"].heartbeat_age_s is None
    assert shown["late"].model_dump(exclude={"here", "heartbeat_age_s"}) == HOSTS[1].model_dump()


def test_an_agent_on_a_down_host_is_shown_so():
    assert host_down_state("far") == "host far down"


# -- the heartbeat ---------------------------------------------------------------------------


@pytest.fixture
def hive_settings(tmp_path: Path, hive_run_dir: Path) -> HiveSettings:
    return HiveSettings(
        state_dir=tmp_path / "state",
        run_dir=hive_run_dir,
        host_id="h1",
        host_heartbeat_s=0.05,
        host_down_after_s=5,
    )


@pytest.fixture
async def heartbeat(
    store_engine: Engine, hive_settings: HiveSettings
) -> AsyncIterator[HostHeartbeat]:
    heartbeat = HostHeartbeat(store_engine, hive_settings)
    await heartbeat.start()
    yield heartbeat
    await heartbeat.stop()


def _h1(engine: Engine) -> HostInfo:
    [host] = list_hosts(engine, down_after_s=5)
    return host


async def test_the_heartbeat_records_the_start_beats_and_a_clean_stop(
    store_engine, hive_settings, heartbeat
):
    started = _h1(store_engine)
    assert started.id == "h1" and started.up and started.stopped_at is None
    assert started.version == __version__
    assert started.dashboard_url == hive_settings.dashboard_url()
    assert started.heartbeat_at is not None

    def beaten() -> HostInfo | None:
        host = _h1(store_engine)
        assert host.heartbeat_at is not None and started.heartbeat_at is not None
        return host if host.heartbeat_at > started.heartbeat_at else None

    later = await eventually(
        lambda: asyncio.to_thread(beaten), timeout=TIMEOUT, what="a beat after the start"
    )
    assert later.up and later.started_at == started.started_at

    await heartbeat.stop()
    stopped = _h1(store_engine)
    assert not stopped.up and stopped.stopped_at is not None


def _rename(engine: Engine, old: str, new: str) -> None:
    with begin(engine, write=True) as conn:
        conn.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))


async def test_a_failed_beat_is_logged_once_and_the_beats_go_on(store_engine, heartbeat, caplog):
    def said(text: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if text in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="hyperhive.host_heartbeat"):
        # The store loses its hosts table for a while: every beat fails meanwhile.
        await asyncio.to_thread(_rename, store_engine, "hosts", "hosts_away")
        failed = await eventually(
            lambda: said("cannot record host h1's heartbeat"), timeout=TIMEOUT, what="a warning"
        )
        assert "retrying" in failed[0].getMessage()
        await asyncio.to_thread(_rename, store_engine, "hosts_away", "hosts")
        await eventually(
            lambda: said("heartbeat is recorded again"), timeout=TIMEOUT, what="the recovery"
        )
    assert len(said("cannot record host h1's heartbeat")) == 1  # not one per failed beat
    assert _h1(store_engine).up
