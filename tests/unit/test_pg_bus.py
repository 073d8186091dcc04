"""The PostgreSQL bus: two `PgBus` on one database are two hosts. A subscriber on one wakes when
the other publishes, with ids but no body; its own events come once; a dropped connection or a
restarted server ends in a resync wake-up, never a lost one. All on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from hyperhive.broker import Broker
from hyperhive.bus import Bus, EventBus, Subscription
from hyperhive.bus_select import open_bus
from hyperhive.errors import StartupError
from hyperhive.pg_bus import MAX_PAYLOAD_BYTES, RESYNC, WILDCARD, PgBus, notify_payload
from hyperhive.settings import HiveSettings
from hyperhive.store.agents import register_agent
from hyperhive.store.db import make_engine, migrate
from tests.fakes.postgres import PostgresServer, start_server_again, stop_server
from tests.rig.broker import RecordingWaker
from tests.rig.polling import eventually

TOPIC = "inbox:bob"
# Generous: an event arrives in milliseconds; a reconnection within the 2 s backoff cap.
TIMEOUT_S = 10.0


async def next_event(sub: Subscription) -> dict[str, object]:
    return await asyncio.wait_for(sub.get(), TIMEOUT_S)


async def first_with_id(sub: Subscription, wanted: int) -> list[dict[str, object]]:
    """The events up to the one with id `wanted` (resync wake-ups may come before it)."""
    seen = []
    while True:
        event = await next_event(sub)
        seen.append(event)
        if event.get("id") == wanted:
            return seen


@pytest.fixture
async def hosts(fresh_postgres_url: str) -> AsyncIterator[tuple[PgBus, PgBus]]:
    async with PgBus(fresh_postgres_url) as a, PgBus(fresh_postgres_url) as b:
        yield a, b


def terminate(url_database: str, application_name: str) -> None:
    """End the server process of the bus connection named `application_name`, as a network
    failure or an operator would, and wait until it is gone."""
    server = psycopg.conninfo.conninfo_to_dict(url_database.replace("+psycopg", ""))
    with psycopg.connect(
        host=server["host"], port=server["port"], user=server["user"], dbname="postgres",
        autocommit=True,
    ) as conn:  # fmt: skip
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    assert ended == [(True,)], f"no connection named {application_name!r}"


def test_pg_bus_implements_the_bus_interface() -> None:
    bus: Bus = PgBus("postgresql+psycopg://hive@127.0.0.1:1/hive")
    assert bus is not None


async def test_a_subscriber_wakes_when_another_host_publishes(hosts: tuple[PgBus, PgBus]) -> None:
    a, b = hosts
    latencies = []
    with a.subscribe(TOPIC) as sub:
        for i in range(20):
            started = time.perf_counter()
            b.publish(TOPIC, {"id": i, "sender": "alice", "recipient": "bob", "body": "secret"})
            event = await next_event(sub)
            latencies.append(time.perf_counter() - started)
            assert event == {"id": i, "sender": "alice", "recipient": "bob", "remote": True}
    median = statistics.median(latencies)
    print(
        f"\ncross-host wake-up: median {median * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms"
    )
    assert median < 0.050


async def test_own_events_are_delivered_once_in_full(hosts: tuple[PgBus, PgBus]) -> None:
    a, b = hosts
    with a.subscribe(TOPIC) as on_a, b.subscribe(TOPIC) as on_b:
        a.publish(TOPIC, {"id": 1, "body": "full"})
        assert on_a.get_nowait() == {"id": 1, "body": "full"}  # at once, locally
        # B hearing it means A's own notification is in PostgreSQL's queue, ahead of B's next.
        assert await next_event(on_b) == {"id": 1, "remote": True}
        b.publish(TOPIC, {"id": 2})
        assert await next_event(on_a) == {"id": 2, "remote": True}
        assert on_a.get_nowait() is None


async def test_many_events_on_a_topic_arrive_in_order(hosts: tuple[PgBus, PgBus]) -> None:
    a, b = hosts
    with a.subscribe("agent-events:alice") as sub:
        for seq in range(500):
            b.publish("agent-events:alice", {"turn_id": "t1", "seq": seq, "kind": "assistant"})
        got = [await next_event(sub) for _ in range(500)]
    assert [e["seq"] for e in got] == list(range(500))
    assert got[0] == {"turn_id": "t1", "seq": 0, "kind": "assistant", "remote": True}


async def test_publish_from_another_thread(hosts: tuple[PgBus, PgBus]) -> None:
    a, b = hosts
    with a.subscribe(TOPIC) as remote, b.subscribe(TOPIC) as local:
        await asyncio.to_thread(b.publish, TOPIC, {"id": 7, "body": "x"})
        assert await next_event(local) == {"id": 7, "body": "x"}
        assert await next_event(remote) == {"id": 7, "remote": True}


async def test_a_huge_event_sends_a_small_notification(hosts: tuple[PgBus, PgBus]) -> None:
    a, b = hosts
    with a.subscribe(TOPIC) as sub:
        b.publish(TOPIC, {"id": 3, "body": "x" * 1_000_000, "kind": "k" * 10_000})
        assert await next_event(sub) == {"id": 3, "remote": True}


def test_the_payload_keeps_short_ids_and_fits_the_limit() -> None:
    text = notify_payload("o", TOPIC, {"id": 1, "body": "b" * 9000, "event": {"text": "t"}})
    assert json.loads(text) == {"origin": "o", "topic": TOPIC, "event": {"id": 1}}
    crowded = {key: "v" * 200 for key in ("kind", "agent", "recipient", "sender", "turn_id")}
    text = notify_payload("o", TOPIC, crowded)
    assert len(text.encode()) <= MAX_PAYLOAD_BYTES and json.loads(text)["topic"] == TOPIC
    text = notify_payload("o", "t" * 5000, {"id": 1})
    assert json.loads(text) == {"origin": "o", "topic": WILDCARD, "event": {}}


async def test_the_store_url_chooses_the_bus(tmp_path: Path, fresh_postgres_url: str) -> None:
    async with open_bus(f"sqlite:///{tmp_path}/hive.db") as bus:
        assert type(bus) is EventBus
    async with open_bus(fresh_postgres_url) as bus:
        assert isinstance(bus, PgBus)


async def test_unreachable_postgres_is_a_clear_startup_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        url = f"postgresql+psycopg://hive:s3cret-pw@127.0.0.1:{port}/hive"
        with pytest.raises(StartupError) as raised:
            async with open_bus(url):
                pass
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message and "HIVE_DB_URL" in message
    assert "s3cret-pw" not in message and "s3cret-pw" not in caplog.text
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


async def test_a_lost_notify_connection_ends_in_a_resync_on_the_other_host(
    hosts: tuple[PgBus, PgBus], fresh_postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = hosts
    with a.subscribe(TOPIC) as sub:
        await asyncio.to_thread(terminate, fresh_postgres_url, f"hive-bus-notify-{b.origin[:8]}")
        with caplog.at_level(logging.WARNING, logger="hyperhive.pg_bus"):
            b.publish(TOPIC, {"id": 1})  # its NOTIFY fails: the wildcard after the reconnect
            assert await next_event(sub) == RESYNC
        assert b.reconnects == 1 and "publishing connection" in caplog.text
        b.publish(TOPIC, {"id": 2})
        assert await next_event(sub) == {"id": 2, "remote": True}


async def test_a_lost_listen_connection_resyncs_its_subscribers(
    hosts: tuple[PgBus, PgBus], fresh_postgres_url: str
) -> None:
    a, b = hosts
    with a.subscribe(TOPIC) as sub, a.subscribe("messages") as other:
        await asyncio.to_thread(terminate, fresh_postgres_url, f"hive-bus-listen-{a.origin[:8]}")
        assert await next_event(sub) == RESYNC
        assert await next_event(other) == RESYNC
        b.publish(TOPIC, {"id": 2})
        assert await next_event(sub) == {"id": 2, "remote": True}


async def test_after_the_server_restarts_subscribers_resync_and_events_flow_again(
    own_postgres_server: PostgresServer,
) -> None:
    url = own_postgres_server.url()
    async with PgBus(url) as a, PgBus(url) as b:
        with a.subscribe(TOPIC) as sub:
            await asyncio.to_thread(stop_server, own_postgres_server)
            started = time.perf_counter()
            b.publish(TOPIC, {"id": 1})  # while the server is down: neither blocks nor raises
            assert time.perf_counter() - started < 0.01
            assert sub.get_nowait() is None
            await asyncio.to_thread(start_server_again, own_postgres_server)
            # The wake-up for the event published while down: A looks at the store again.
            assert await next_event(sub) == RESYNC
            b.publish(TOPIC, {"id": 2})
            before = await first_with_id(sub, 2)
            assert all(event == RESYNC for event in before[:-1])
            assert before[-1] == {"id": 2, "remote": True}
        assert a.reconnects >= 1 and b.reconnects >= 1


async def test_recv_on_one_host_gets_a_message_sent_on_another(
    fresh_postgres_url: str, hive_settings: HiveSettings
) -> None:
    engine_a, engine_b = make_engine(fresh_postgres_url), make_engine(fresh_postgres_url)
    await asyncio.to_thread(migrate, engine_a)
    for name in ("alice", "bob"):
        register_agent(engine_a, name, hive_settings.host_id)
    latencies = []
    async with PgBus(fresh_postgres_url) as bus_a, PgBus(fresh_postgres_url) as bus_b:
        # recv rechecks the store every 5 s by itself: a quicker answer is the bus's doing.
        on_a = Broker(engine_a, bus_a, RecordingWaker(), hive_settings, recheck_interval_s=5)
        on_b = Broker(engine_b, bus_b, RecordingWaker(), hive_settings)
        try:
            for i in range(5):
                receiving = asyncio.create_task(on_a.recv("bob", wait_seconds=TIMEOUT_S))
                await eventually(
                    lambda: bus_a.subscriber_count("inbox:bob"),
                    timeout=TIMEOUT_S,
                    what="recv waiting on the bus",
                    interval=0.005,
                )
                started = time.perf_counter()
                sent = await on_b.send("alice", "bob", f"hello {i}")
                message = await asyncio.wait_for(receiving, TIMEOUT_S)
                latencies.append(time.perf_counter() - started)
                assert message is not None and (message.id, message.body) == (sent.id, f"hello {i}")
        finally:
            await on_a.aclose()
            await on_b.aclose()
            engine_a.dispose()
            engine_b.dispose()
    median = statistics.median(latencies)
    print(f"\ncross-host send → recv: median {median * 1000:.2f} ms")
    assert median < 0.050
