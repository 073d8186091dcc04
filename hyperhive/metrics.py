"""Prometheus metrics of hive-c0re, served by `GET /metrics` (api/metrics.py).

Two kinds of numbers:
- events hive-c0re sees happen (messages stored, turns finished), counted in process by the
  broker and the turn activity: they restart from zero with hive-c0re, as Prometheus expects;
- the store's state (spend, pending approvals, undelivered messages, agents by state), read at
  scrape time by `StoreCollector`, so they are right after a restart and never drift from what
  the dashboard shows.

Each `HiveMetrics` owns its registry (nothing global, no I/O at import), so tests can build as
many as they like.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from hyperhive.domain import (
    OPERATOR_NAME,
    SYSTEM_SENDER,
    AgentState,
    ApprovalStatus,
    TurnErrorClass,
)
from hyperhive.store.db import begin
from hyperhive.store.tables import metadata, utcnow

__all__ = [
    "SENDER_KINDS",
    "TURN_DURATION_BUCKETS",
    "HiveMetrics",
    "StoreCollector",
    "sender_kind",
    "turn_outcome",
]

log = logging.getLogger(__name__)

AGENTS = metadata.tables["agents"]
APPROVALS = metadata.tables["approvals"]
MESSAGES = metadata.tables["messages"]
TURN_RECORDS = metadata.tables["turn_records"]

SENDER_KINDS = ("agent", "operator", "system")

# Turns last from a quick reply (under a second) up to HIVE_TURN_TIMEOUT_S (an hour by default).
TURN_DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)


def sender_kind(sender: str) -> str:
    """`operator`, `system` (hive-c0re's own notices) or `agent`."""
    if sender == OPERATOR_NAME:
        return "operator"
    if sender == SYSTEM_SENDER:
        return "system"
    return "agent"


def turn_outcome(error_class: TurnErrorClass | str) -> str:
    """The `outcome` label of a finished turn: `ok`, or its error class (`rate_limited`, …)."""
    value = str(error_class)  # a StrEnum's str() is its value
    return "ok" if value == TurnErrorClass.NONE.value else value


class WarmSource(Protocol):
    """What the worker's warm pool tells about itself (activities.warm_claude.WarmPool)."""

    def warm_agents(self) -> frozenset[str]: ...

    def starts(self) -> tuple[int, int]: ...

    def rss_bytes(self) -> int: ...


class WarmCollector(Collector):
    """Warm agents, read from the pool at scrape time."""

    def __init__(self, source: WarmSource) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        warm = GaugeMetricFamily(
            "hive_agent_warm",
            "1 for each agent whose claude is running between turns (or in one): its next "
            "turn starts in milliseconds.",
            labels=["agent"],
        )
        agents = sorted(self._source.warm_agents())
        for agent in agents:
            warm.add_metric([agent], 1)
        yield warm
        yield GaugeMetricFamily(
            "hive_warm_agents", "Agents whose claude is running now.", value=len(agents)
        )
        yield GaugeMetricFamily(
            "hive_warm_rss_bytes",
            "Resident memory of the warm agents' claudes with their sandboxes.",
            value=self._source.rss_bytes(),
        )
        warm_starts, cold_starts = self._source.starts()
        starts = CounterMetricFamily(
            "hive_turn_starts",
            "Turns by how their claude started: warm (already running) or cold (started).",
            labels=["kind"],
        )
        starts.add_metric(["warm"], warm_starts)
        starts.add_metric(["cold"], cold_starts)
        yield starts


class HiveMetrics:
    """hive-c0re's instruments and the registry `/metrics` renders.

    `engine`: the store read at each scrape; `clock`: "now" in UTC, for the start of the day of
    `hive_agent_spend_today_usd`.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.registry = CollectorRegistry()
        self._messages_sent = Counter(
            "hive_messages_sent",
            "Messages stored by the broker, by who sent them (agent, operator, system).",
            ["sender_kind"],
            registry=None,
        )
        # Present from the first scrape, so rate() and alerts work before the first message.
        for kind in SENDER_KINDS:
            self._messages_sent.labels(kind)
        self._turns = Counter(
            "hive_turns",
            "Agent turns that ended with a result, by agent and outcome (ok or the error class).",
            ["agent", "outcome"],
            registry=None,
        )
        self._turn_duration = Histogram(
            "hive_turn_duration_seconds",
            "Wall-clock time of agent turns that ended with a result, from claim to result.",
            ["agent"],
            buckets=TURN_DURATION_BUCKETS,
            registry=None,
        )
        self._store_errors = Counter(
            "hive_metrics_store_errors",
            "Scrapes whose store-derived metrics were left out because the store could not be "
            "read.",
            registry=None,
        )
        # The registry collects in registration order: the store first, so a failed read is
        # already counted in the very scrape that lacks the store's families.
        self.registry.register(StoreCollector(engine, clock=clock, on_error=self._store_errors.inc))
        for instrument in (
            self._store_errors,
            self._messages_sent,
            self._turns,
            self._turn_duration,
        ):
            self.registry.register(instrument)

    def watch_warm(self, source: WarmSource) -> None:
        """Export the warm agents of `source` (once, at start-up)."""
        self.registry.register(WarmCollector(source))

    def message_sent(self, sender: str) -> None:
        """Count one message stored from `sender`."""
        self._messages_sent.labels(sender_kind(sender)).inc()

    def turn_finished(self, agent: str, error_class: TurnErrorClass | str, seconds: float) -> None:
        """Count one turn of `agent` that ended with a result after `seconds`."""
        self._turns.labels(agent, turn_outcome(error_class)).inc()
        self._turn_duration.labels(agent).observe(max(0.0, seconds))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric. Reads the store: call it off the
        event loop."""
        return generate_latest(self.registry)


@dataclass
class _StoreSnapshot:
    spend_total: dict[str, float] = field(default_factory=dict)
    spend_today: dict[str, float] = field(default_factory=dict)
    approvals_pending: int = 0
    undelivered: dict[str, int] = field(default_factory=dict)
    agents_by_state: dict[str, int] = field(default_factory=dict)


class StoreCollector(Collector):
    """The store-derived families, read in one transaction at scrape time.

    A store that cannot be read (locked, restarting, a network blip to PostgreSQL) must not fail
    the whole scrape, which would hide the in-process counters too: the error is logged,
    `on_error` called, and these families are left out of that scrape.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._on_error = on_error

    def describe(self) -> Iterable[Metric]:
        # Names only, no store read: the registry calls this at registration to catch clashes.
        return self._families(_StoreSnapshot())

    def collect(self) -> Iterable[Metric]:
        try:
            snapshot = self._read()
        except Exception as exc:  # logged and skipped: the scrape must still answer
            self._on_error()
            # The driver's own error, not SQLAlchemy's wrapper with its SQL and links: one line.
            cause = exc.orig if isinstance(exc, DBAPIError) else exc
            log.warning(
                "metrics: could not read the store (%s: %s); store-derived metrics are left out "
                "of this scrape",
                type(cause).__name__,
                cause,
            )
            log.debug("metrics: store read failed", exc_info=True)
            return []
        return self._families(snapshot)

    def _read(self) -> _StoreSnapshot:
        now = self._clock().astimezone(UTC)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        with begin(self._engine) as conn:
            return _read_snapshot(conn, since=midnight)

    @staticmethod
    def _families(snap: _StoreSnapshot) -> list[Metric]:
        spend_total = CounterMetricFamily(
            "hive_agent_spend_usd",
            "Model spend of each agent since it was created, in USD.",
            labels=["agent"],
        )
        for agent, usd in sorted(snap.spend_total.items()):
            spend_total.add_metric([agent], usd)
        spend_today = GaugeMetricFamily(
            "hive_agent_spend_today_usd",
            "Model spend of each agent since midnight UTC, in USD (what the daily budget counts).",
            labels=["agent"],
        )
        for agent, usd in sorted(snap.spend_today.items()):
            spend_today.add_metric([agent], usd)
        approvals = GaugeMetricFamily(
            "hive_approvals_pending",
            "Approvals waiting for an operator's decision.",
            value=snap.approvals_pending,
        )
        undelivered = GaugeMetricFamily(
            "hive_messages_undelivered",
            "Messages stored but not yet delivered, by recipient.",
            labels=["recipient"],
        )
        for recipient, count in sorted(snap.undelivered.items()):
            undelivered.add_metric([recipient], count)
        agents = GaugeMetricFamily(
            "hive_agents", "Registered agents, by lifecycle state.", labels=["state"]
        )
        for state, count in sorted(snap.agents_by_state.items()):
            agents.add_metric([state], count)
        return [spend_total, spend_today, approvals, undelivered, agents]


def _read_snapshot(conn: Connection, *, since: datetime) -> _StoreSnapshot:
    snap = _StoreSnapshot()
    names: list[str] = []
    for row in conn.execute(sa.select(AGENTS.c.name, AGENTS.c.spend_total_usd)):
        names.append(row.name)
        snap.spend_total[row.name] = float(row.spend_total_usd)

    # Every agent gets a series, 0 included: a series that appears only once something happens
    # makes rate(), increase() and "> 0" alerts miss the first occurrence.
    snap.spend_today = dict.fromkeys(names, 0.0)
    today = (
        sa.select(TURN_RECORDS.c.agent, sa.func.coalesce(sa.func.sum(TURN_RECORDS.c.cost_usd), 0))
        .where(TURN_RECORDS.c.ended_at >= since)
        .group_by(TURN_RECORDS.c.agent)
    )
    for agent, usd in conn.execute(today):
        snap.spend_today[agent] = float(usd)

    snap.approvals_pending = int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(APPROVALS)
            .where(APPROVALS.c.status == ApprovalStatus.PENDING)
        ).scalar_one()
    )

    snap.undelivered = dict.fromkeys([*names, OPERATOR_NAME], 0)
    undelivered = (
        sa.select(MESSAGES.c.recipient, sa.func.count())
        .where(MESSAGES.c.delivered_at.is_(None))
        .group_by(MESSAGES.c.recipient)
    )
    for recipient, count in conn.execute(undelivered):
        snap.undelivered[recipient] = int(count)

    snap.agents_by_state = {state.value: 0 for state in AgentState}
    for state, count in conn.execute(
        sa.select(AGENTS.c.state, sa.func.count()).group_by(AGENTS.c.state)
    ):
        snap.agents_by_state[str(state)] = int(count)
    return snap
