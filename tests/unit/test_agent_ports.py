"""Which port an agent's page gets (hyperhive/agent_ports.py): stable, probing past ports that
are held, persisted, and hm1nd on the manager port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hyperhive.agent_ports import NoFreePort, assign_port, choose_port, preferred_port
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store.db import make_engine, migrate


@pytest.fixture
def settings(tmp_path: Path) -> HiveSettings:
    return HiveSettings(state_dir=tmp_path)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'hive.db'}")
    migrate(eng)
    for name in ("hm1nd", "alice", "bob"):
        agent_store.register_agent(eng, name, "local")
    yield eng
    eng.dispose()


def always_free(port: int) -> bool:
    return True


def test_the_preferred_port_is_the_same_on_every_host_and_start():
    # Pinned: changing the hash would move every agent's bookmarked page.
    assert preferred_port("alice", 8100, 8999) == 8807
    assert preferred_port("bob", 8100, 8999) == 8450
    ports = {preferred_port(f"a{i}", 8100, 8999) for i in range(200)}
    assert all(8100 <= p <= 8999 for p in ports)
    assert len(ports) > 150, "names spread over the range"


def test_the_manager_gets_the_manager_port(settings):
    assert choose_port("hm1nd", settings, taken=set(), is_free=always_free) == 8000
    custom = settings.model_copy(update={"manager_port": 8042})
    assert choose_port("hm1nd", custom, taken=set(), is_free=always_free) == 8042


def test_probing_skips_ports_of_other_agents_and_ports_that_do_not_bind(settings):
    start = preferred_port("alice", 8100, 8999)
    unbindable = {start + 1, start + 3}
    port = choose_port(
        "alice", settings, taken={start, start + 2}, is_free=lambda p: p not in unbindable
    )
    assert port == start + 4


def test_probing_wraps_around_the_end_of_the_range_and_skips_reserved_ports(settings):
    narrow = settings.model_copy(
        update={"agent_port_min": 7000, "agent_port_max": 7003, "dashboard_port": 7000}
    )
    assert preferred_port("alice", 7000, 7003) == 7003  # the last port of the range
    # 7003 is bob's, 7000 the dashboard's: on from the end, past the start, to 7001.
    assert choose_port("alice", narrow, taken={7003}, is_free=always_free) == 7001


def test_a_full_range_says_what_to_do(settings):
    narrow = settings.model_copy(update={"agent_port_min": 9100, "agent_port_max": 9102})
    with pytest.raises(NoFreePort) as excinfo:
        choose_port("alice", narrow, taken={9100}, is_free=lambda p: False)
    assert "9100-9102" in excinfo.value.what and "alice" in excinfo.value.what
    assert "HIVE_AGENT_PORT_MAX" in excinfo.value.hint


def test_the_choice_is_persisted_and_kept_even_when_the_port_is_busy_later(engine, settings):
    first = assign_port(engine, settings, "alice", always_free)
    assert first == preferred_port("alice", 8100, 8999)
    assert agent_store.agent_ports(engine) == {"alice": first}
    # Later starts keep the agent's URL, whatever binds now (the page server reports a clash).
    assert assign_port(engine, settings, "alice", lambda p: False) == first
    assert assign_port(engine, settings, "hm1nd", always_free) == settings.manager_port


def test_two_agents_never_share_a_port(engine, settings):
    # bob's preferred port is given to alice first; bob then probes on from it.
    bob_first = preferred_port("bob", 8100, 8999)
    agent_store.set_agent_port(engine, "alice", bob_first)
    assert assign_port(engine, settings, "bob", always_free) == bob_first + 1


def test_a_port_taken_between_choosing_and_saving_is_chosen_again(engine, settings):
    alice_first = preferred_port("alice", 8100, 8999)
    raced = False

    def is_free(port: int) -> bool:
        nonlocal raced
        if not raced:
            # Another hive-c0re call gives bob this very port while alice is choosing.
            raced = True
            agent_store.set_agent_port(engine, "bob", port)
        return True

    port = assign_port(engine, settings, "alice", is_free)
    assert port == alice_first + 1
    assert agent_store.agent_ports(engine) == {"alice": alice_first + 1, "bob": alice_first}
