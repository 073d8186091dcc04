"""`GET /metrics` (api/metrics.py) through httpx's ASGI transport, on a real migrated store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import router
from hyperhive.domain import OPERATOR_NAME
from hyperhive.metrics import HiveMetrics
from hyperhive.store.agents import add_spend, register_agent
from hyperhive.store.db import make_engine, migrate
from hyperhive.store.messages import insert_message


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'hive.db'}")
    migrate(eng)
    register_agent(eng, "alice", "local")
    yield eng
    eng.dispose()


@pytest.fixture
def metrics(engine: sa.Engine) -> HiveMetrics:
    return HiveMetrics(engine)


@pytest.fixture
async def client(metrics: HiveMetrics) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    app.state.metrics = metrics
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hive") as c:
        yield c


async def test_metrics_is_prometheus_text_with_counters_and_store_state(
    client: httpx.AsyncClient, engine: sa.Engine, metrics: HiveMetrics
) -> None:
    add_spend(engine, "alice", 2.5)
    insert_message(engine, OPERATOR_NAME, "alice", "hello")
    metrics.message_sent(OPERATOR_NAME)
    metrics.turn_finished("alice", "none", 42.0)

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert families["hive_messages_sent"].type == "counter"
    assert samples[("hive_messages_sent_total", (("sender_kind", "operator"),))] == 1
    assert samples[("hive_turns_total", (("agent", "alice"), ("outcome", "ok")))] == 1
    assert samples[("hive_turn_duration_seconds_bucket", (("agent", "alice"), ("le", "60.0")))] == 1
    assert samples[("hive_turn_duration_seconds_bucket", (("agent", "alice"), ("le", "30.0")))] == 0
    assert samples[("hive_agent_spend_usd_total", (("agent", "alice"),))] == 2.5
    assert samples[("hive_messages_undelivered", (("recipient", "alice"),))] == 1
    assert samples[("hive_approvals_pending", ())] == 0


class FakeWarm:
    """Stands for the worker's warm pool (hyperhive.metrics.WarmSource)."""

    def warm_agents(self) -> frozenset[str]:
        return frozenset({"alice"})

    def starts(self) -> tuple[int, int]:
        return 4, 1

    def rss_bytes(self) -> int:
        return 123_456_789


async def test_metrics_shows_the_warm_agents(
    client: httpx.AsyncClient, metrics: HiveMetrics
) -> None:
    metrics.watch_warm(FakeWarm())

    response = await client.get("/metrics")

    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("hive_agent_warm", (("agent", "alice"),))] == 1
    assert samples[("hive_warm_agents", ())] == 1
    assert samples[("hive_warm_rss_bytes", ())] == 123_456_789
    assert samples[("hive_turn_starts_total", (("kind", "warm"),))] == 4
    assert samples[("hive_turn_starts_total", (("kind", "cold"),))] == 1
