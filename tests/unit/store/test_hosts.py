"""Host store operations (hyperhive/store/hosts.py) on SQLite and PostgreSQL: started, beats,
stopped; up or down by the age of the last beat; agents per host; where a spawn goes."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from hyperhive.store.agents import register_agent
from hyperhive.store.db import begin
from hyperhive.store.hosts import (
    HostInfo,
    agent_host,
    beat,
    host_started,
    host_stopped,
    list_hosts,
    pick_spawn_host,
)
from hyperhive.store.tables import metadata, utcnow

HOSTS = metadata.tables["hosts"]
DOWN_AFTER_S = 20.0


@pytest.fixture
def engine(migrated_engine):
    return migrated_engine


def _hosts(engine: sa.Engine, down_after_s: float = DOWN_AFTER_S) -> dict[str, HostInfo]:
    return {h.id: h for h in list_hosts(engine, down_after_s=down_after_s)}


def _last_beat_ago(engine: sa.Engine, host_id: str, seconds: float) -> None:
    """Make `host_id` look as if its last beat was `seconds` ago."""
    with begin(engine, write=True) as conn:
        conn.execute(
            sa.update(HOSTS)
            .where(HOSTS.c.id == host_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_started_host_is_up_until_it_says_it_stopped(engine):
    assert list_hosts(engine, down_after_s=DOWN_AFTER_S) == []
    host_started(engine, "h1", version="1.2.3", dashboard_url="http://h1:7000")
    h1 = _hosts(engine)["h1"]
    assert h1.up and h1.stopped_at is None and h1.agents == 0
    assert (h1.version, h1.dashboard_url) == ("1.2.3", "http://h1:7000")
    assert h1.started_at is not None and h1.heartbeat_at == h1.started_at

    host_stopped(engine, "h1")
    stopped = _hosts(engine)["h1"]
    assert not stopped.up  # at once, not after DOWN_AFTER_S
    assert stopped.stopped_at is not None and stopped.heartbeat_at == h1.heartbeat_at

    host_started(engine, "h1", version="1.2.4", dashboard_url="http://h1:7000")
    again = _hosts(engine)["h1"]
    assert again.up and again.stopped_at is None and again.version == "1.2.4"
    assert list(_hosts(engine)) == ["h1"]  # the same row, not a second one


def test_a_beat_moves_the_heartbeat_on_and_keeps_a_host_up(engine):
    host_started(engine, "h1", version="1", dashboard_url="")
    _last_beat_ago(engine, "h1", DOWN_AFTER_S + 10)
    old = _hosts(engine)["h1"]
    assert not old.up

    beat(engine, "h1")
    beaten = _hosts(engine)["h1"]
    assert beaten.up
    assert old.heartbeat_at is not None and beaten.heartbeat_at is not None
    assert beaten.heartbeat_at > old.heartbeat_at
    assert beaten.started_at == old.started_at and beaten.version == "1"


def test_a_beat_after_a_stop_or_of_a_missing_row_makes_the_host_up_again(engine):
    host_started(engine, "h1", version="1", dashboard_url="")
    host_stopped(engine, "h1")
    beat(engine, "h1")
    assert _hosts(engine)["h1"].up

    beat(engine, "h2")  # e.g. its row was deleted by hand while it ran
    h2 = _hosts(engine)["h2"]
    assert h2.up and h2.version == "" and h2.started_at is not None


def test_up_or_down_is_the_age_of_the_last_beat_against_down_after_s(engine):
    host_started(engine, "h1", version="1", dashboard_url="")
    _last_beat_ago(engine, "h1", 30)
    assert not _hosts(engine, down_after_s=20)["h1"].up
    assert _hosts(engine, down_after_s=60)["h1"].up


def test_hosts_count_their_agents_and_an_agent_on_a_host_that_never_beat_shows_it_down(engine):
    host_started(engine, "h1", version="1", dashboard_url="")
    host_started(engine, "h2", version="1", dashboard_url="")
    for name, host in (("alice", "h1"), ("bob", "h1"), ("carol", "h2"), ("dave", "gone")):
        register_agent(engine, name, host)
    hosts = list_hosts(engine, down_after_s=DOWN_AFTER_S)
    assert [(h.id, h.agents, h.up) for h in hosts] == [
        ("gone", 1, False),
        ("h1", 2, True),
        ("h2", 1, True),
    ]
    gone = hosts[0]
    assert gone.started_at is None and gone.heartbeat_at is None and gone.stopped_at is None
    assert agent_host(engine, "dave") == "gone"
    assert agent_host(engine, "alice") == "h1"
    assert agent_host(engine, "nobody") is None


def test_a_spawn_goes_to_the_up_host_with_the_fewest_agents(engine):
    for host in ("h1", "h2", "h3"):
        host_started(engine, host, version="1", dashboard_url="")
    for name, host in (("alice", "h1"), ("bob", "h1"), ("carol", "h2"), ("dave", "h3")):
        register_agent(engine, name, host)

    def pick(here: str) -> str:
        return pick_spawn_host(engine, here=here, down_after_s=DOWN_AFTER_S)

    assert pick("h1") == "h2"  # h2 and h3 tie on one agent: the lower id, h1 not being one
    assert pick("h3") == "h3"  # a tie goes to the host asking
    _last_beat_ago(engine, "h2", DOWN_AFTER_S + 10)
    assert pick("h1") == "h3"  # a down host is never picked, however few agents it has
    host_stopped(engine, "h3")
    host_started(engine, "h4", version="1", dashboard_url="")
    assert pick("h1") == "h4"  # no agents yet


def test_with_no_host_up_a_spawn_stays_here(engine):
    assert pick_spawn_host(engine, here="h1", down_after_s=DOWN_AFTER_S) == "h1"
    host_started(engine, "h2", version="1", dashboard_url="")
    host_stopped(engine, "h2")
    register_agent(engine, "alice", "h3")  # h3 never beat: down
    assert pick_spawn_host(engine, here="h1", down_after_s=DOWN_AFTER_S) == "h1"
