"""The admin socket for real: an `AdminSocket` on a unix socket, a real `OperatorService` over a
real store and broker, and the real Temporal dev server. Only the lifecycle workflows are
stand-ins (registered under the real names on this test's own task queue) that record what they
were asked, so approve/spawn/kill/... go through Temporal exactly as in production.

The `hive` CLI is driven in-process against the same socket (see the end of this file); the
integration test runs it as a separate process against a real hive-c0re.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import socket
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api.admin_socket import AdminSocket, AdminSocketError
from control.lifecycle import Lifecycle
from control.operator import OperatorService
from control.runtime import CoreRuntime
from hive_c0re import cli, cli_admin
from hyperhive.admin_protocol import MAX_LINE_BYTES
from hyperhive.broker import Broker
from hyperhive.domain import ApprovalStatus
from hyperhive.metrics import HiveMetrics
from hyperhive.models import (
    Decision,
    KillRequest,
    LifecycleOutcome,
    NewApproval,
    SpawnRequest,
    StartRequest,
)
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store import approvals as approval_store
from hyperhive.store.db import begin
from workflows.approval_gate import ApprovalGate

# The dev server lives for the whole session: fresh names keep workflow ids from meeting.
_TAG = uuid.uuid4().hex[:5]
ALICE, BOB, SLOW = f"a{_TAG}", f"b{_TAG}", f"s{_TAG}"
ME = pwd.getpwuid(os.getuid()).pw_name
# A spawn with this purpose stands for one whose workers are too busy to store its approval.
NEVER_STORED = "its approval is never stored"


# -- stand-in lifecycle workflows ---------------------------------------------------------------


@dataclass
class Gate:
    """Holds the kill of SLOW inside an activity until the test lets it go; records decisions
    in the store as the real approval gate does before its workflow ends."""

    engine: sa.Engine
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @activity.defn(name="hold_kill")
    async def hold(self, name: str) -> None:
        self.entered.set()
        await self.release.wait()

    @activity.defn(name="store_approval")
    async def store_approval(self, new: NewApproval) -> int:
        """What the real SpawnWorkflow's first activity (create_approval) does."""
        return approval_store.create_approval(self.engine, new)

    @activity.defn(name="record_decision")
    async def record_decision(self, decision: Decision) -> None:
        workflow_id = activity.info().workflow_id
        for approval in approval_store.list_approvals(self.engine):
            if approval.workflow_id == workflow_id:
                status = ApprovalStatus.APPROVED if decision.approved else ApprovalStatus.DENIED
                approval_store.set_approval_status(
                    self.engine, approval.id, status, by=decision.by, note=decision.note
                )


@workflow.defn(name="KillWorkflow")
class StubKill:
    @workflow.run
    async def run(self, request: KillRequest) -> LifecycleOutcome:
        if request.name == SLOW:
            await workflow.execute_activity(
                "hold_kill", request.name, start_to_close_timeout=timedelta(minutes=1)
            )
        verb = "destroyed" if request.destroy else "stopped"
        return LifecycleOutcome(status="done", detail=f"{request.name} {verb} by {request.by}")


@workflow.defn(name="StartWorkflow")
class StubStart:
    @workflow.run
    async def run(self, request: StartRequest) -> LifecycleOutcome:
        verb = "restarted" if request.restart else "started"
        return LifecycleOutcome(status="done", detail=f"{request.name} {verb} by {request.by}")


@workflow.defn(name="SpawnWorkflow")
class StubSpawn(ApprovalGate):
    """Waits for a decision with the real approval gate, and ends with the decision in force."""

    def __init__(self) -> None:
        self._request: SpawnRequest | None = None
        self.gated = True

    @workflow.run
    async def run(self, request: SpawnRequest) -> Decision:
        self._request = request
        if request.purpose != NEVER_STORED:
            self.approval_id = await workflow.execute_activity(
                "store_approval",
                NewApproval(
                    kind="spawn",
                    agent=request.name,
                    requester=request.requester,
                    description=f"spawn {request.name}",
                    workflow_id=workflow.info().workflow_id,
                ),
                result_type=int,
                start_to_close_timeout=timedelta(seconds=30),
            )
        await workflow.wait_condition(lambda: self.decision is not None)
        assert self.decision is not None
        await workflow.execute_activity(
            "record_decision", self.decision, start_to_close_timeout=timedelta(seconds=30)
        )
        return self.decision

    @workflow.query
    def request(self) -> SpawnRequest | None:
        return self._request


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def broker_agents() -> tuple[str, ...]:
    return (ALICE, BOB, SLOW)


@pytest.fixture
def hive_settings(tmp_path: Path, hive_run_dir: Path, task_queue: str) -> HiveSettings:
    class TestSettings(HiveSettings):
        # The workflows above, not hive-c0re's, must serve this test's lifecycle requests.
        @property
        def core_task_queue(self) -> str:
            return task_queue

    return TestSettings(
        state_dir=tmp_path / "state",
        run_dir=hive_run_dir,
        hyperhive_rev="f" * 40,
        dashboard_port=7123,
    )


@pytest.fixture
def gate(store_engine: sa.Engine) -> Gate:
    return Gate(store_engine)


@pytest.fixture
async def temporal(
    dev_server: WorkflowEnvironment, task_queue: str, gate: Gate
) -> AsyncIterator[Client]:
    worker = Worker(
        dev_server.client,
        task_queue=task_queue,
        workflows=[StubKill, StubStart, StubSpawn],
        activities=[gate.hold, gate.store_approval, gate.record_decision],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    async with worker:
        yield dev_server.client
        gate.release.set()


@pytest.fixture
def warm() -> set[str]:
    """The agents whose claude the worker's warm pool has running (a test changes it)."""
    return set()


@pytest.fixture
def operator(
    temporal: Client,
    store_engine: sa.Engine,
    broker: Broker,
    hive_settings: HiveSettings,
    warm: set[str],
) -> OperatorService:
    runtime = CoreRuntime(
        settings=hive_settings,
        engine=store_engine,
        client=temporal,
        broker=broker,
        lifecycle=Lifecycle(temporal, hive_settings, store_engine),
        metrics=HiveMetrics(store_engine),
        workers_running=True,
        warm_agents=lambda: frozenset(warm),
    )
    return OperatorService(runtime)


@pytest.fixture
async def admin(
    operator: OperatorService, hive_settings: HiveSettings
) -> AsyncIterator[AdminSocket]:
    socket = AdminSocket(operator, hive_settings)
    await socket.start()
    yield socket
    await socket.stop()


class Conn:
    """One client connection speaking raw lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def write(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def read(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), 30)
        assert line.endswith(b"\n"), f"no answer line, got {line!r}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        await self.write(json.dumps({"version": 1, "cmd": cmd, **args}).encode() + b"\n")
        return await self.read()

    async def ok(self, cmd: str, **args: Any) -> Any:
        answer = await self.call(cmd, **args)
        assert answer["ok"] is True, answer
        assert answer["version"] == 1
        return answer["result"]

    async def refused(self, cmd: str, **args: Any) -> dict[str, Any]:
        answer = await self.call(cmd, **args)
        assert answer["ok"] is False and answer["error"] == "refused", answer
        assert answer["message"] and answer["hint"], answer
        return answer


@pytest.fixture
async def connect(admin: AdminSocket, hive_settings: HiveSettings):
    opened: list[Conn] = []

    async def open_one() -> Conn:
        reader, writer = await asyncio.open_unix_connection(
            hive_settings.host_socket_path, limit=16 * MAX_LINE_BYTES
        )
        conn = Conn(reader, writer)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.writer.close()
        with contextlib.suppress(ConnectionError):
            await conn.writer.wait_closed()


@pytest.fixture
async def conn(connect) -> Conn:
    c: Conn = await connect()
    return c


def _messages(engine: sa.Engine) -> int:
    with begin(engine) as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM messages")).scalar_one())


def _approval(engine: sa.Engine, workflow_id: str, agent: str) -> int:
    """What the real SpawnWorkflow's first activity stores (the stand-in stored it already: the
    same row comes back)."""
    return approval_store.create_approval(
        engine,
        NewApproval(
            kind="spawn",
            agent=agent,
            requester="operator",
            description=f"spawn {agent}",
            workflow_id=workflow_id,
        ),
    )


async def _workflow_exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


# -- the socket itself --------------------------------------------------------------------------


async def test_socket_is_0660_and_removed_at_stop(operator, hive_settings):
    path = hive_settings.host_socket_path
    admin = AdminSocket(operator, hive_settings)
    await admin.start()
    try:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
        # A second hive-c0re on the same run dir is refused, and leaves the first one's socket.
        with pytest.raises(AdminSocketError, match="another process is serving"):
            await AdminSocket(operator, hive_settings).start()
        assert path.exists()
    finally:
        await admin.stop()
    assert not path.exists()
    await admin.stop()  # stopping twice is harmless


async def test_stop_leaves_a_socket_that_is_no_longer_ours(operator, hive_settings):
    path = hive_settings.host_socket_path
    admin = AdminSocket(operator, hive_settings)
    await admin.start()
    path.unlink()
    path.write_text("someone else's")
    await admin.stop()
    assert path.read_text() == "someone else's"


# -- every command ------------------------------------------------------------------------------


async def test_status_list_and_urls(conn, hive_settings):
    status = await conn.ok("status")
    assert [a["name"] for a in status["agents"]] == sorted([ALICE, BOB, SLOW])
    assert status["workers_running"] is True and status["approvals_pending"] == 0
    assert status["hyperhive_rev"] == "f" * 40

    agents = await conn.ok("list")
    alice = next(a for a in agents if a["name"] == ALICE)
    assert alice["state"] and alice["pending"] == 0 and alice["spend_today_usd"] == 0

    assert {a["name"]: a["warm"] for a in agents} == {ALICE: False, BOB: False, SLOW: False}

    urls = await conn.ok("urls")
    assert urls["dashboard"] == "http://127.0.0.1:7123/"
    assert urls["metrics"] == "http://127.0.0.1:7123/metrics"
    assert set(urls["agents"]) == {ALICE, BOB, SLOW}


async def test_list_and_status_say_whose_claude_is_warm_as_it_changes(conn, warm):
    warm.add(ALICE)
    agents = await conn.ok("list")
    assert {a["name"]: a["warm"] for a in agents} == {ALICE: True, BOB: False, SLOW: False}
    status = await conn.ok("status")
    assert {a["name"]: a["warm"] for a in status["agents"]} == {
        ALICE: True,
        BOB: False,
        SLOW: False,
    }

    # Asked again, not cached: alice went cold (idle expiry, LRU), bob's turn started claude.
    warm.clear()
    warm.add(BOB)
    agents = await conn.ok("list")
    assert {a["name"]: a["warm"] for a in agents} == {ALICE: False, BOB: True, SLOW: False}


async def test_send_stores_a_message_from_the_operator_and_wakes_the_agent(
    conn, store_engine, waker
):
    result = await conn.ok("send", to=ALICE, body="hello from the socket", request_id="s1")
    assert result["recipient"] == ALICE and result["pending"] == 1
    assert waker.woken == [ALICE]
    status = await conn.ok("status")
    assert next(a for a in status["agents"] if a["name"] == ALICE)["pending"] == 1
    assert _messages(store_engine) == 1


async def test_refused_requests_change_nothing(conn, store_engine, temporal, waker):
    unknown = await conn.refused("send", to="nobody", body="hi")
    assert "nobody" in unknown["message"]
    empty = await conn.refused("send", to=ALICE, body="   ")
    assert "empty" in empty["message"]
    assert _messages(store_engine) == 0 and waker.woken == []

    approvals_before = approval_store.list_approvals(store_engine)
    missing = await conn.refused("approve", id=999, request_id=5)
    assert missing["message"] == "there is no approval #999" and missing["request_id"] == 5
    assert approval_store.list_approvals(store_engine) == approvals_before

    agent_store.set_container_status(store_engine, ALICE, "up")
    taken = await conn.refused("spawn", name=ALICE, purpose="a second alice")
    assert "already exists" in taken["message"] and f"hive start {ALICE}" in taken["hint"]
    assert not await _workflow_exists(temporal, f"hive-spawn-{ALICE}")

    ghost = await conn.refused("kill", name="ghost")
    assert "no agent named 'ghost'" in ghost["message"]
    assert not await _workflow_exists(temporal, "hive-kill-ghost")

    no_logs = await conn.refused("logs", name="ghost")
    assert "ghost" in no_logs["message"]


async def test_spawn_then_approve_and_deny_reach_the_workflow(conn, temporal, store_engine):
    new, other = f"n{_TAG}", f"o{_TAG}"
    spawned = await conn.ok("spawn", name=new, purpose="answers questions")
    first = _approval(store_engine, spawned["workflow_id"], new)
    # The answer waited for the workflow to store its approval, and names it.
    assert spawned == {"name": new, "workflow_id": f"hive-spawn-{new}", "approval_id": first}
    second_spawn = await conn.ok("spawn", name=other, purpose="p")
    second_wf = second_spawn["workflow_id"]
    second = _approval(store_engine, second_wf, other)
    assert second_spawn["approval_id"] == second != first

    pending = await conn.ok("approvals", pending_only=True)
    assert [a["id"] for a in pending] == [first, second]
    assert (await conn.ok("status"))["approvals_pending"] == 2

    # No `by`: the decider is whoever is on the other end of the socket.
    approved = await conn.ok("approve", id=first, note="welcome")
    assert approved["decision"] == "approved" and approved["approval"]["id"] == first
    decision = await temporal.get_workflow_handle(
        spawned["workflow_id"], result_type=Decision
    ).result()
    assert decision == Decision(approved=True, by=ME, note="welcome")

    denied = await conn.ok("deny", id=second, by="ops", note="not today")
    assert denied["decision"] == "denied"
    decision = await temporal.get_workflow_handle(second_wf, result_type=Decision).result()
    assert decision == Decision(approved=False, by="ops", note="not today")

    # It is decided: deciding again is refused, saying what stands.
    again = await conn.refused("approve", id=second)
    assert again["message"] == f"approval #{second} is already denied by ops"


async def test_racing_approve_and_deny_each_caller_learns_the_decision_in_force(
    connect, temporal, store_engine
):
    name = f"r{_TAG}"
    conn = await connect()
    workflow_id = (await conn.ok("spawn", name=name, purpose="p"))["workflow_id"]
    approval = _approval(store_engine, workflow_id, name)
    callers = [await connect() for _ in range(10)]
    answers = await asyncio.gather(
        *(
            c.call("approve" if i % 2 else "deny", id=approval, by=f"op{i}")
            for i, c in enumerate(callers)
        )
    )
    final = await temporal.get_workflow_handle(workflow_id, result_type=Decision).result()
    winners = [a for a in answers if a["ok"]]
    # Exactly one caller decided, and it was told so; every other was told what stands.
    assert len(winners) == 1, answers
    assert winners[0]["result"]["decision"] == ("approved" if final.approved else "denied")
    verdict = "approved" if final.approved else "denied"
    for lost in (a for a in answers if not a["ok"]):
        assert lost["message"] == f"approval #{approval} is already {verdict} by {final.by}", lost
        assert lost["hint"] == "nothing to do: the first decision stands"


async def test_a_forged_decider_is_refused_and_nothing_is_decided(conn, temporal, store_engine):
    name = f"f{_TAG}"
    workflow_id = (await conn.ok("spawn", name=name, purpose="p"))["workflow_id"]
    approval = _approval(store_engine, workflow_id, name)
    for by in ("root\r\nApproved-By: ceo", "ops\x1b[2J", "x" * 65):
        answer = await conn.call("approve", id=approval, by=by)
        assert answer["ok"] is False and answer["error"] == "bad_request", answer
        assert "printable" in answer["message"] or "longer than 64" in answer["message"], answer
    stored = approval_store.get_approval(store_engine, approval)
    assert stored is not None and stored.status == "pending"
    assert (await conn.ok("deny", id=approval, by="ops"))["decision"] == "denied"


async def test_kill_stop_start_restart_run_their_workflows(conn, store_engine):
    agent_store.set_container_status(store_engine, ALICE, "up")
    killed = await conn.ok("kill", name=ALICE, by="ops")
    assert killed == {
        "status": "done",
        "approval_id": None,
        "detail": f"{ALICE} stopped by ops",
        "deployed_sha": None,
    }
    assert (await conn.ok("stop", name=ALICE))["detail"] == f"{ALICE} stopped by {ME}"
    assert (await conn.ok("start", name=ALICE))["detail"] == f"{ALICE} started by {ME}"
    assert (await conn.ok("restart", name=ALICE))["detail"] == f"{ALICE} restarted by {ME}"


async def test_a_destroyed_agent_is_started_by_a_spawn_only(conn, temporal, store_engine):
    gone = f"d{_TAG}"
    agent_store.register_agent(store_engine, gone, "h")  # container_status "absent"
    refused = await conn.refused("start", name=gone)
    assert refused["message"] == f"{gone} has no container (it was destroyed, or its spawn failed)"
    assert refused["hint"] == (
        f'bring it back with `hive spawn {gone} --purpose "…"` — its config, inbox and history '
        "are kept (add --fresh to discard them)"
    )
    assert not await _workflow_exists(temporal, f"hive-start-{gone}"), "refused at once"

    spawned = await conn.ok("spawn", name=gone, purpose="back again", fresh=True)
    handle = temporal.get_workflow_handle(spawned["workflow_id"])
    request = await handle.query("request", result_type=SpawnRequest)
    assert request is not None and request.respawn and request.fresh
    assert request.purpose == "back again"
    await handle.terminate("test over")


async def test_destroy_needs_confirm(conn, temporal):
    unconfirmed = await conn.refused("destroy", name=BOB)
    assert "removes the container" in unconfirmed["message"]
    assert '"confirm": true' in unconfirmed["hint"]
    assert not await _workflow_exists(temporal, f"hive-kill-{BOB}"), "nothing was started"
    destroyed = await conn.ok("destroy", name=BOB, confirm=True)
    assert destroyed["detail"] == f"{BOB} destroyed by {ME}"


async def test_logs_page_by_after_id(conn, store_engine):
    agent_store.append_turn_events(
        store_engine,
        ALICE,
        "turn-1",
        [
            (1, "system", {"type": "system", "subtype": "init", "model": "m"}),
            (
                2,
                "assistant",
                {"type": "assistant", "message": {"content": [{"type": "text", "text": "hi"}]}},
            ),
            (3, "hive", {"text": "turn retried"}),
        ],
    )
    events = await conn.ok("logs", name=ALICE)
    assert [e["kind"] for e in events] == ["system", "assistant", "hive"]
    assert events[1]["payload"]["message"]["content"][0]["text"] == "hi"
    later = await conn.ok("logs", name=ALICE, after_id=events[0]["id"], limit=1)
    assert [e["kind"] for e in later] == ["assistant"]
    assert await conn.ok("logs", name=BOB) == []


# -- malformed input, concurrency, failures -------------------------------------------------------

BAD_LINES: list[tuple[bytes, str]] = [
    (b"\n", "bad_json"),
    (b"not json\n", "bad_json"),
    (b"\xff\xfe\n", "bad_json"),
    (b'{"version":1,"cmd":"status","x":NaN}\n', "bad_json"),
    (b"[" * 50_000 + b"\n", "bad_json"),
    (b'{"version":1,"cmd":"status","cmd":"destroy"}\n', "bad_json"),
    (b"[]\n", "bad_request"),
    (b'{"cmd":"status"}\n', "unsupported_version"),
    (b'{"version":9,"cmd":"status"}\n', "unsupported_version"),
    (b'{"version":1,"cmd":"reboot"}\n', "unknown_command"),
    (b'{"version":1,"cmd":"approve","id":true}\n', "bad_request"),
    (b'{"version":1,"cmd":"approve","id":-1}\n', "bad_request"),
    (b'{"version":1,"cmd":"send","to":"a","body":"hi","from":"hm1nd"}\n', "bad_request"),
    (b'{"version":1,"cmd":"logs","name":"x","limit":"all"}\n', "bad_request"),
    (
        b'{"version":1,"cmd":"send","to":"a","body":"' + b"x" * (MAX_LINE_BYTES + 1) + b'"}\n',
        "line_too_long",
    ),
]


@pytest.mark.parametrize(
    ("raw", "code"), BAD_LINES, ids=[c + str(i) for i, (_, c) in enumerate(BAD_LINES)]
)
async def test_the_connection_survives_a_malformed_line(conn, raw, code):
    await conn.write(raw)
    error = await conn.read()
    assert error["ok"] is False and error["error"] == code, error
    assert error["message"] and error["hint"]
    # The same connection answers the next request as if nothing happened.
    assert (await conn.ok("status"))["workers_running"] is True


async def test_an_over_long_line_is_skipped_to_its_newline(operator, hive_settings):
    admin = AdminSocket(operator, hive_settings, max_line_bytes=1000)
    await admin.start()
    try:
        reader, writer = await asyncio.open_unix_connection(hive_settings.host_socket_path)
        conn = Conn(reader, writer)
        # Sent in pieces, the way a slow client would: the error comes before the newline does.
        await conn.write(b'{"version":1,"cmd":"send","to":"a","body":"' + b"y" * 5000)
        too_long = await conn.read()
        assert too_long["error"] == "line_too_long" and "1000 bytes" in too_long["message"]
        await conn.write(b"y" * 70_000)
        await conn.write(b'"}\n{"version":1,"cmd":"urls","request_id":"after"}\n')
        answer = await conn.read()
        assert answer["ok"] is True and answer["request_id"] == "after"
        writer.close()
    finally:
        await admin.stop()


async def test_pipelined_requests_are_answered_in_order(conn):
    lines = [
        {"version": 1, "cmd": "urls", "request_id": 1},
        {"version": 1, "cmd": "nope", "request_id": 2},
        {"version": 1, "cmd": "status", "request_id": "three"},
        {"version": 1, "cmd": "send", "to": "nobody", "body": "x", "request_id": 4},
    ]
    await conn.write(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    answers = [await conn.read() for _ in lines]
    assert [a["request_id"] for a in answers] == [1, 2, "three", 4]
    assert [a["ok"] for a in answers] == [True, False, True, False]


async def test_a_last_line_without_newline_is_answered(conn):
    await conn.write(b'{"version":1,"cmd":"urls"}')
    conn.writer.write_eof()
    answer = await conn.read()
    assert answer["ok"] is True
    assert await conn.reader.read() == b"", "then the server closes"


async def test_a_slow_kill_does_not_hold_up_other_connections(connect, gate):
    slow, quick = await connect(), await connect()
    await slow.write(json.dumps({"version": 1, "cmd": "kill", "name": SLOW}).encode() + b"\n")
    pending = asyncio.create_task(slow.read())
    await asyncio.wait_for(gate.entered.wait(), 30)  # the kill is inside its workflow

    assert (await quick.ok("status"))["workers_running"] is True
    assert (await quick.ok("kill", name=ALICE))["detail"].startswith(f"{ALICE} stopped")
    assert not pending.done(), "the slow kill is still running"

    gate.release.set()
    answer = await pending
    assert answer["ok"] is True and answer["result"]["detail"] == f"{SLOW} stopped by {ME}"


async def test_an_unexpected_failure_is_internal_and_the_connection_survives(
    conn, operator, monkeypatch, caplog
):
    async def broken() -> None:
        raise RuntimeError("the store fell over")

    monkeypatch.setattr(operator, "urls", broken)
    with caplog.at_level(logging.ERROR, logger="api.admin_socket"):
        answer = await conn.call("urls", request_id="u")
    assert answer["ok"] is False and answer["error"] == "internal"
    assert "RuntimeError: the store fell over" in answer["message"]
    assert "log" in answer["hint"] and answer["request_id"] == "u"
    assert any(r.exc_info and "the store fell over" in str(r.exc_info[1]) for r in caplog.records)
    assert (await conn.ok("status"))["workers_running"] is True


async def test_stop_ends_open_connections(operator, hive_settings, gate):
    admin = AdminSocket(operator, hive_settings)
    await admin.start()
    reader, writer = await asyncio.open_unix_connection(hive_settings.host_socket_path)
    writer.write(json.dumps({"version": 1, "cmd": "kill", "name": SLOW}).encode() + b"\n")
    await writer.drain()
    await asyncio.wait_for(gate.entered.wait(), 30)
    await asyncio.wait_for(admin.stop(), 10)
    assert await reader.read() == b"", "the waiting client sees the connection close"
    assert not hive_settings.host_socket_path.exists()
    writer.close()


# -- the hive CLI against this socket -----------------------------------------------------------


@pytest.fixture
def hive_cli(admin, hive_settings, monkeypatch, capsys):
    monkeypatch.setenv("HIVE_STATE_DIR", str(hive_settings.state_dir))
    monkeypatch.setenv("HIVE_RUN_DIR", str(hive_settings.run_dir))

    async def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            import io

            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        # The CLI blocks on its socket: run it off the event loop that serves the socket.
        code = await asyncio.to_thread(cli.run, list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def test_cli_status_send_and_json(hive_cli, store_engine):
    code, out, err = await hive_cli("send", ALICE, "-", stdin="from stdin\n")
    assert code == 0, err
    assert f"to {ALICE} (1 pending)" in out

    code, out, err = await hive_cli("status")
    assert code == 0, err
    assert "NAME" in out and "SPEND TODAY/TOTAL" in out
    row = next(line for line in out.splitlines() if line.startswith(ALICE))
    assert "(1 pending)" in row and "$0.00 / $0.00" in row
    assert "0 approvals pending" in out and "http://127.0.0.1:7123/" in out

    code, out, _ = await hive_cli("list", "--json")
    assert code == 0 and {a["name"] for a in json.loads(out)} == {ALICE, BOB, SLOW}


async def test_cli_list_shows_warm_or_cold_per_agent(hive_cli, warm):
    warm.add(BOB)
    code, out, err = await hive_cli("list")
    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split()[:4] == ["NAME", "STATE", "CLAUDE", "CONTAINER"]
    column = header.index("CLAUDE")
    shown = {line.split()[0]: line[column:].split()[0] for line in lines}
    assert shown == {ALICE: "cold", BOB: "warm", SLOW: "cold"}

    code, out, err = await hive_cli("list", "--json")
    assert code == 0, err
    assert {a["name"]: a["warm"] for a in json.loads(out)} == {
        ALICE: False,
        BOB: True,
        SLOW: False,
    }

    code, out, err = await hive_cli("status")
    assert code == 0, err
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("NAME"))
    row = next(line for line in lines if line.startswith(BOB))
    assert row[header.index("CLAUDE") :].split()[0] == "warm"


async def test_cli_exit_codes(hive_cli, hive_settings, monkeypatch):
    code, out, err = await hive_cli("approve", "12345")
    assert code == 1 and out == ""
    assert err == "hive: there is no approval #12345\n  → see `hive approvals`\n"

    code, _, err = await hive_cli("destroy", BOB)
    assert code == 2 and "--yes" in err

    # No hive-c0re has its own code (3), apart from usage (2): a script can tell "start it".
    monkeypatch.setenv("HIVE_RUN_DIR", str(hive_settings.run_dir / "elsewhere"))
    code, out, err = await hive_cli("status")
    assert code == 3 and out == ""
    assert "hive-c0re is not running (no " in err and "hive up" in err

    # A socket left behind by a hive-c0re that crashed: nothing answers on it.
    stale = hive_settings.run_dir / "stale"
    stale.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(os.fspath(stale / "host.sock"))
    monkeypatch.setenv("HIVE_RUN_DIR", str(stale))
    code, out, err = await hive_cli("list")
    assert code == 3 and out == ""
    assert "hive-c0re is not running (nothing answers on " in err and "hive up" in err


async def test_cli_spawn_names_the_approval_that_approvals_lists(hive_cli, store_engine):
    name = f"c{_TAG}"
    code, out, err = await hive_cli("spawn", name, "--purpose", "answers questions")
    assert code == 0, err
    [approval] = [a for a in approval_store.list_approvals(store_engine) if a.agent == name]
    assert out == (
        f"spawn of {name} requested: approval #{approval.id} — approve it with "
        f"`hive approve {approval.id}` (or deny it with `hive deny {approval.id}`)\n"
    )
    code, out, err = await hive_cli("approvals", "--pending")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith(f"#{approval.id} "))
    assert row.split()[1:2] == ["pending"] and "spawn" in row and name in row

    code, out, err = await hive_cli("approve", str(approval.id))
    assert code == 0, err
    assert out.startswith(f"#{approval.id} approved")


async def test_a_spawn_whose_approval_is_not_stored_in_time_says_so(
    operator, hive_settings, temporal, store_engine
):
    name = f"l{_TAG}"
    admin = AdminSocket(operator, hive_settings, approval_wait_s=0.3)
    line = json.dumps({"version": 1, "cmd": "spawn", "name": name, "purpose": NEVER_STORED})
    answer = json.loads(await admin.answer(line.encode() + b"\n", "t"))
    # The spawn stands (its workflow runs); only the number is not known yet.
    assert answer["ok"] is True, answer
    assert answer["result"] == {
        "name": name,
        "workflow_id": f"hive-spawn-{name}",
        "approval_id": None,
    }
    assert await _workflow_exists(temporal, f"hive-spawn-{name}")
    said = cli_admin.spawn_text(name, answer["result"])
    assert "not stored yet" in said and "hive approvals --pending" in said
    assert "#" not in said  # no number made up
    await temporal.get_workflow_handle(f"hive-spawn-{name}").terminate("test over")


async def test_cli_logs_render_events(hive_cli, store_engine):
    agent_store.append_turn_events(
        store_engine,
        ALICE,
        "turn-1",
        [
            (
                1,
                "assistant",
                {
                    "type": "assistant",
                    "message": {
                        "content": [{"type": "tool_use", "name": "send", "input": {"to": "bob"}}]
                    },
                },
            ),
            (
                2,
                "result",
                {
                    "type": "result",
                    "is_error": False,
                    "total_cost_usd": 0.25,
                    "num_turns": 1,
                    "result": "done",
                },
            ),
            (3, "hive", {"text": "claude was restarted"}),
        ],
    )
    code, out, err = await hive_cli("logs", ALICE)
    assert code == 0, err
    assert '[tool_call] send(to="bob")' in out
    assert "[result] turn done · 1 turn · $0.2500" in out
    assert "[hive] claude was restarted" in out

    code, out, _ = await hive_cli("logs", ALICE, "--json", "--after", "0", "--limit", "1")
    assert code == 0 and [json.loads(line)["kind"] for line in out.splitlines()] == ["assistant"]


# -- login: the one command that carries a secret -----------------------------------------------

TOKEN = "sk-ant-oat01-" + "z" * 80 + "WXYZ"
API_KEY = "sk-ant-api03-" + "k" * 80 + "KKEY"
LEAKS = ("zzzzzzzz", "kkkkkkkk", "hunter2hunter2")  # a piece of any secret these tests send


def _auth_file(settings: HiveSettings, name: str) -> Path:
    return settings.agent_state_dir(name) / "home" / ".claude" / "hive-auth.json"


def _no_leak(*texts: str) -> None:
    for text in texts:
        for piece in LEAKS:
            assert piece not in text, text


async def test_login_stores_the_credential_and_answers_only_a_masked_hint(
    conn, hive_settings, caplog
):
    with caplog.at_level(logging.DEBUG):
        answer = await conn.call("login", name=BOB, kind="oauth_token", secret=TOKEN)
    assert answer["ok"] is True, answer
    assert answer["result"] == {"kind": "oauth_token", "hint": "sk-ant-oat…WXYZ"}
    auth = _auth_file(hive_settings, BOB)
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert stat.S_IMODE(auth.parent.stat().st_mode) == 0o700
    assert json.loads(auth.read_text()) == {"kind": "oauth_token", "secret": TOKEN}
    # Who asked is logged, as for every command that acts; the secret is not.
    assert f'"cmd":"login","name":"{BOB}","kind":"oauth_token"' in caplog.text
    _no_leak(caplog.text, json.dumps(answer))


@pytest.mark.parametrize(
    ("fields", "error", "says"),
    [
        ({"kind": "oauth_token", "secret": API_KEY}, "refused", "not an OAuth token"),
        ({"kind": "api_key", "secret": "hunter2hunter2"}, "refused", "not an Anthropic API key"),
        ({"kind": "credentials_json", "secret": "{" + TOKEN}, "refused", "not JSON"),
        ({"kind": "credentials_json", "secret": json.dumps([TOKEN])}, "refused", "accessToken"),
        ({"kind": "api_key", "secret": [API_KEY]}, "bad_request", "must be a string"),
        ({"kind": API_KEY, "secret": API_KEY}, "bad_request", "`kind` must be"),
        ({"kind": "api_key", "secret": API_KEY, "note": TOKEN}, "bad_request", "unknown field"),
    ],
)
async def test_a_refused_login_changes_nothing_and_echoes_no_secret(
    conn, hive_settings, caplog, fields, error, says
):
    await conn.ok("login", name=ALICE, kind="api_key", secret=API_KEY)
    before = _auth_file(hive_settings, ALICE).read_text()
    with caplog.at_level(logging.DEBUG):
        answer = await conn.call("login", name=ALICE, request_id="r", **fields)
    assert answer["ok"] is False and answer["error"] == error, answer
    assert says in answer["message"] and answer["hint"] and answer["request_id"] == "r"
    _no_leak(caplog.text, answer["message"], answer["hint"])
    assert _auth_file(hive_settings, ALICE).read_text() == before


async def test_a_login_for_no_such_agent_is_refused_and_writes_nothing(conn, hive_settings):
    answer = await conn.refused("login", name="ghost", kind="oauth_token", secret=TOKEN)
    assert "no agent named 'ghost'" in answer["message"]
    assert not hive_settings.agent_state_dir("ghost").exists()


async def test_a_login_that_fails_inside_hive_c0re_is_redacted_everywhere(
    conn, operator, monkeypatch, caplog
):
    async def broken(name: str, kind: object, secret: str) -> None:
        def deeper() -> None:
            raise RuntimeError(f"cannot store {secret!r} for {name}")

        try:
            deeper()
        except RuntimeError as e:
            raise ValueError(f"wrapped: {secret}") from e

    monkeypatch.setattr(operator, "login", broken)
    with caplog.at_level(logging.DEBUG):
        answer = await conn.call("login", name=BOB, kind="api_key", secret=API_KEY)
    assert answer["ok"] is False and answer["error"] == "internal"
    assert answer["message"] == "`login` failed inside hive-c0re: ValueError: wrapped: [secret]"
    # The traceback is still logged, chain and all, only without the secret.
    assert "RuntimeError: cannot store '[secret]' for" in caplog.text
    assert "ValueError: wrapped: [secret]" in caplog.text
    _no_leak(caplog.text, json.dumps(answer))
    assert (await conn.ok("status"))["workers_running"] is True


async def test_cli_login_reads_stdin_and_prints_only_the_hint(hive_cli, hive_settings):
    code, out, err = await hive_cli("login", BOB, stdin=f"{TOKEN}\n")
    assert code == 0, err
    assert out == f"{BOB} logged in with OAuth token sk-ant-oat…WXYZ\n" and err == ""
    assert json.loads(_auth_file(hive_settings, BOB).read_text())["secret"] == TOKEN

    code, out, err = await hive_cli("login", BOB, "--json", stdin=API_KEY)
    assert code == 0, err
    assert json.loads(out) == {"kind": "api_key", "hint": "sk-ant-api…KKEY"}
    _no_leak(out)


@pytest.mark.parametrize(
    ("argv", "stdin", "says"),
    [
        ((), "hunter2hunter2", "--kind"),
        ((), "", "no credential given"),
        (("--kind", "oauth-token"), API_KEY, "not an OAuth token"),
        (("--kind", "api_key"), "hunter2hunter2", "not an Anthropic API key"),
        (("--kind", "credentials-json"), "{hunter2hunter2", "not JSON"),
    ],
)
async def test_cli_login_refuses_a_wrong_credential_with_exit_1(
    hive_cli, hive_settings, argv, stdin, says
):
    assert (await hive_cli("login", BOB, stdin=TOKEN))[0] == 0
    code, out, err = await hive_cli("login", BOB, *argv, stdin=stdin)
    assert code == 1 and out == ""
    assert says in err and "\n  → " in err, err
    _no_leak(err)
    assert json.loads(_auth_file(hive_settings, BOB).read_text())["secret"] == TOKEN


async def test_cli_shows_agent_written_text_without_obeying_its_escapes(
    hive_cli, broker, store_engine
):
    # A hostile status: retitle the terminal, clear the screen, a one-byte CSI, a bidi override.
    hostile = "ok\x1b]0;pwned\x07\x1b[2J\x9b31m\u202edone"
    await broker.set_status(ALICE, hostile)
    agent_store.append_turn_events(
        store_engine,
        ALICE,
        "turn-esc",
        [
            (
                1,
                "assistant",
                {
                    "type": "assistant",
                    "message": {"content": [{"type": "text", "text": "hi\x1b[31m red"}]},
                },
            )
        ],
    )
    for argv in (("list",), ("status",), ("logs", ALICE)):
        code, out, err = await hive_cli(*argv)
        assert code == 0, err
        assert not any(c in out for c in "\x1b\x07\x9b\u202e"), (argv, out)
    code, out, _ = await hive_cli("list")
    assert "ok\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202edone" in out
    code, out, _ = await hive_cli("logs", ALICE)
    assert "hi\\x1b[31m red" in out

    # --json carries the exact text, still without a raw control character on the terminal.
    code, out, _ = await hive_cli("list", "--json")
    assert not any(c in out for c in "\x1b\x07\x9b\u202e"), out
    assert next(a for a in json.loads(out) if a["name"] == ALICE)["status_text"] == hostile
