"""Prometheus metrics (hyperhive/metrics.py) as a scraper sees them: the text of a scrape, parsed.

Store-derived families on a real migrated store (SQLite and PostgreSQL), message counters through
a real broker (the waker only records), turn counters through the real turn activity running a
stand-in claude (a script printing a stream-json result) in Temporal's ActivityEnvironment.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import ActivityEnvironment

from activities.backends import ProcessBackend
from activities.turns import TurnActivities
from hyperhive import config_repo
from hyperhive.broker import Broker, UnknownAgentError
from hyperhive.bus import EventBus
from hyperhive.domain import MANAGER_NAME, OPERATOR_NAME, AgentState, ApprovalStatus
from hyperhive.metrics import HiveMetrics
from hyperhive.models import NewApproval, TurnRequest
from hyperhive.settings import HiveSettings
from hyperhive.store.agents import add_spend, record_turn, register_agent, set_agent_state
from hyperhive.store.approvals import create_approval, set_approval_status
from hyperhive.store.db import make_engine, migrate
from hyperhive.store.messages import insert_message, pop_message

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
MIDNIGHT = datetime(2026, 3, 4, tzinfo=UTC)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: HiveMetrics) -> Samples:
    text = metrics.render().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hive.db'}"
    else:
        url = str(request.getfixturevalue("fresh_postgres_url"))
    eng = make_engine(url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'hive.db'}")
    migrate(eng)
    for name in (MANAGER_NAME, "alice", "bob"):
        register_agent(eng, name, "local")
    yield eng
    eng.dispose()


# ---------------------------------------------------------------------------------------------
# store-derived families


def test_a_scrape_shows_spend_approvals_undelivered_mail_and_agent_states(
    any_engine: sa.Engine,
) -> None:
    eng = any_engine
    for name in (MANAGER_NAME, "alice", "bob"):
        register_agent(eng, name, "local")
    add_spend(eng, "alice", 1.5)
    add_spend(eng, "alice", 0.25)
    record_turn(eng, agent="alice", cost_usd=0.4, ended_at=MIDNIGHT + timedelta(hours=1))
    record_turn(eng, agent="alice", cost_usd=0.7, ended_at=MIDNIGHT - timedelta(seconds=1))
    record_turn(eng, agent="bob", cost_usd=0.1, ended_at=MIDNIGHT)
    for n in range(3):
        create_approval(
            eng,
            NewApproval(
                kind="spawn",
                agent=f"new{n}",
                requester=MANAGER_NAME,
                description="x",
                workflow_id=f"hive-spawn-new{n}",
            ),
        )
    set_approval_status(eng, 1, ApprovalStatus.APPROVED, by="ops", note="")
    insert_message(eng, OPERATOR_NAME, "bob", "one")
    insert_message(eng, "alice", "bob", "two")
    insert_message(eng, "bob", OPERATOR_NAME, "three")
    insert_message(eng, OPERATOR_NAME, "alice", "read already")
    assert pop_message(eng, "alice") is not None
    set_agent_state(eng, "bob", AgentState.PAUSED)

    samples = scrape(HiveMetrics(eng, clock=lambda: NOW))

    assert value(samples, "hive_agent_spend_usd_total", agent="alice") == pytest.approx(1.75)
    assert value(samples, "hive_agent_spend_usd_total", agent="bob") == 0
    # Today (UTC) only: alice's turn a second before midnight belongs to yesterday's budget.
    assert value(samples, "hive_agent_spend_today_usd", agent="alice") == pytest.approx(0.4)
    assert value(samples, "hive_agent_spend_today_usd", agent="bob") == pytest.approx(0.1)
    assert value(samples, "hive_agent_spend_today_usd", agent=MANAGER_NAME) == 0
    assert value(samples, "hive_approvals_pending") == 2
    assert value(samples, "hive_messages_undelivered", recipient="bob") == 2
    assert value(samples, "hive_messages_undelivered", recipient=OPERATOR_NAME) == 1
    assert value(samples, "hive_messages_undelivered", recipient="alice") == 0
    assert value(samples, "hive_agents", state="idle") == 2
    assert value(samples, "hive_agents", state="paused") == 1
    assert value(samples, "hive_agents", state="running") == 0


def test_a_scrape_follows_the_store_as_it_changes(engine: sa.Engine) -> None:
    metrics = HiveMetrics(engine, clock=lambda: NOW)
    assert value(scrape(metrics), "hive_messages_undelivered", recipient="bob") == 0
    insert_message(engine, "alice", "bob", "hello")
    assert value(scrape(metrics), "hive_messages_undelivered", recipient="bob") == 1
    pop_message(engine, "bob")
    assert value(scrape(metrics), "hive_messages_undelivered", recipient="bob") == 0


def test_an_unreadable_store_leaves_its_metrics_out_but_the_scrape_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Never migrated: every store read fails, as it would on a store that cannot be read.
    eng = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    metrics = HiveMetrics(eng)
    metrics.message_sent(OPERATOR_NAME)
    try:
        with caplog.at_level(logging.WARNING, logger="hyperhive.metrics"):
            samples = scrape(metrics)
    finally:
        eng.dispose()
    assert value(samples, "hive_messages_sent_total", sender_kind="operator") == 1
    assert value(samples, "hive_metrics_store_errors_total") == 1
    assert not names(samples) & {
        "hive_agent_spend_usd_total",
        "hive_agent_spend_today_usd",
        "hive_approvals_pending",
        "hive_messages_undelivered",
        "hive_agents",
    }
    assert "could not read the store" in caplog.text


def test_metrics_instances_do_not_share_counters(engine: sa.Engine) -> None:
    first, second = HiveMetrics(engine), HiveMetrics(engine)
    first.message_sent("alice")
    assert value(scrape(first), "hive_messages_sent_total", sender_kind="agent") == 1
    assert value(scrape(second), "hive_messages_sent_total", sender_kind="agent") == 0


# ---------------------------------------------------------------------------------------------
# warm agents, read from the worker's pool at scrape time


@dataclass
class FakeWarm:
    """Stands for activities.warm_claude.WarmPool (hyperhive.metrics.WarmSource)."""

    agents: set[str] = field(default_factory=set)
    warm_starts: int = 0
    cold_starts: int = 0
    rss: int = 0

    def warm_agents(self) -> frozenset[str]:
        return frozenset(self.agents)

    def starts(self) -> tuple[int, int]:
        return self.warm_starts, self.cold_starts

    def rss_bytes(self) -> int:
        return self.rss


def test_a_scrape_shows_the_warm_agents_their_memory_and_how_turns_started(
    engine: sa.Engine,
) -> None:
    pool = FakeWarm(agents={"alice", "bob"}, warm_starts=7, cold_starts=3, rss=300 << 20)
    metrics = HiveMetrics(engine, clock=lambda: NOW)
    metrics.watch_warm(pool)

    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    assert families["hive_agent_warm"].type == "gauge"
    assert families["hive_warm_agents"].type == "gauge"
    assert families["hive_warm_rss_bytes"].type == "gauge"
    assert families["hive_turn_starts"].type == "counter"
    samples = scrape(metrics)
    assert value(samples, "hive_agent_warm", agent="alice") == 1
    assert value(samples, "hive_agent_warm", agent="bob") == 1
    assert ("hive_agent_warm", frozenset({("agent", MANAGER_NAME)})) not in samples
    assert value(samples, "hive_warm_agents") == 2
    assert value(samples, "hive_warm_rss_bytes") == 300 << 20
    assert value(samples, "hive_turn_starts_total", kind="warm") == 7
    assert value(samples, "hive_turn_starts_total", kind="cold") == 3

    # Read at each scrape: bob went cold, alice's next turn found her claude running.
    pool.agents.discard("bob")
    pool.warm_starts += 1
    pool.rss = 150 << 20
    samples = scrape(metrics)
    assert ("hive_agent_warm", frozenset({("agent", "bob")})) not in samples
    assert value(samples, "hive_agent_warm", agent="alice") == 1
    assert value(samples, "hive_warm_agents") == 1
    assert value(samples, "hive_warm_rss_bytes") == 150 << 20
    assert value(samples, "hive_turn_starts_total", kind="warm") == 8


def test_no_warm_agent_is_zero_not_missing(engine: sa.Engine) -> None:
    metrics = HiveMetrics(engine)
    assert not names(scrape(metrics)) & {"hive_warm_agents", "hive_turn_starts_total"}
    metrics.watch_warm(FakeWarm())
    samples = scrape(metrics)
    assert not any(name == "hive_agent_warm" for name, _ in samples)
    assert value(samples, "hive_warm_agents") == 0
    assert value(samples, "hive_warm_rss_bytes") == 0
    assert value(samples, "hive_turn_starts_total", kind="warm") == 0
    assert value(samples, "hive_turn_starts_total", kind="cold") == 0


# ---------------------------------------------------------------------------------------------
# messages, counted by the broker


@pytest.fixture
async def broker(engine: sa.Engine, tmp_path: Path) -> AsyncIterator[Broker]:
    async def waker(agent: str) -> None:
        pass

    settings = HiveSettings(state_dir=tmp_path, max_body_bytes=1000)
    b = Broker(
        engine, EventBus(), waker, settings, recheck_interval_s=60, metrics=HiveMetrics(engine)
    )
    yield b
    await b.aclose()


async def test_every_stored_message_is_counted_by_sender_kind(broker: Broker) -> None:
    assert broker._metrics is not None
    metrics = broker._metrics
    before = scrape(metrics)
    assert {
        value(before, "hive_messages_sent_total", sender_kind=k)
        for k in ("agent", "operator", "system")
    } == {0}

    await broker.send(OPERATOR_NAME, "alice", "hi alice")
    await broker.send("alice", "bob", "hi bob")
    await broker.send("bob", OPERATOR_NAME, "hi operator")
    await broker.notify_operator("alice", "alice is over budget")
    await broker.system_notice(MANAGER_NAME, "spawn of carol approved")
    with pytest.raises(UnknownAgentError):
        await broker.send("alice", "nobody", "refused: nothing stored, nothing counted")

    after = scrape(metrics)
    assert value(after, "hive_messages_sent_total", sender_kind="agent") == 2
    assert value(after, "hive_messages_sent_total", sender_kind="operator") == 1
    assert value(after, "hive_messages_sent_total", sender_kind="system") == 2


# ---------------------------------------------------------------------------------------------
# turns, counted by the turn activity


def _fake_claude(path: Path, result: str) -> Path:
    """A stand-in claude: reads the prompt, prints one stream-json result line, exits 0."""
    path.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import sys
            sys.stdin.read()
            print({result!r}, flush=True)
            """
        )
    )
    path.chmod(0o755)
    return path


OK_RESULT = (
    '{"type": "result", "subtype": "success", "is_error": false, "result": "done", '
    '"total_cost_usd": 0.02, "duration_ms": 1500}'
)
RATE_LIMITED_RESULT = (
    '{"type": "result", "subtype": "success", "is_error": true, "api_error_status": 429, '
    '"result": "API Error: 429 rate limited", "total_cost_usd": 0, "duration_ms": 10}'
)


@pytest.mark.parametrize(
    ("result", "outcome"), [(OK_RESULT, "ok"), (RATE_LIMITED_RESULT, "rate_limited")]
)
async def test_a_finished_turn_is_counted_by_outcome_and_timed(
    engine: sa.Engine, tmp_path: Path, result: str, outcome: str
) -> None:
    settings = HiveSettings(
        state_dir=tmp_path,
        claude_bin=str(_fake_claude(tmp_path / "claude", result)),
        container_backend="process",
    )
    metrics = HiveMetrics(engine)
    turns = TurnActivities(settings, engine, EventBus(), ProcessBackend(settings), metrics=metrics)
    # The config repos a spawn makes: turns run with the applied CLAUDE.md and settings.json.
    config_repo.init_agent_repos(
        tmp_path, "alice", purpose="does things", hyperhive_rev="0.1.0", hyperhive_flake_url="/x"
    )
    insert_message(engine, OPERATOR_NAME, "alice", "please do the thing")

    env = ActivityEnvironment()
    done = await env.run(
        turns.run_turn,
        TurnRequest(
            agent="alice", turn_id="t-1", session_id="0b6f0b7e-6c1e-4f0e-9d3e-2a1b3c4d5e6f"
        ),
    )
    empty = await env.run(
        turns.run_turn,
        TurnRequest(
            agent="alice", turn_id="t-2", session_id="0b6f0b7e-6c1e-4f0e-9d3e-2a1b3c4d5e6f"
        ),
    )

    assert not done.no_message and empty.no_message
    samples = scrape(metrics)
    # The look at an empty inbox is not a turn: one turn counted, one duration observed.
    assert value(samples, "hive_turns_total", agent="alice", outcome=outcome) == 1
    assert value(samples, "hive_turn_duration_seconds_count", agent="alice") == 1
    assert value(samples, "hive_turn_duration_seconds_bucket", agent="alice", le="+Inf") == 1
    assert value(samples, "hive_turn_duration_seconds_sum", agent="alice") > 0
