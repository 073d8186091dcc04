"""Lifecycle end to end: real hive-c0re, dev server, git repos, claude and the fake model.

Approvals are decided the ways an operator does: `temporal workflow signal`, `hive approve`,
`hive deny`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.service import RPCError, RPCStatusCode

from hyperhive.store import agents as agent_store
from hyperhive.store import approvals as approval_store
from hyperhive.temporal_ids import auto_update_schedule_id
from tests.fakes.anthropic_api import FakeAnthropic, Text
from tests.rig.agent_scripts import Wake, hive_responder, send, wake_of
from tests.rig.hive_process import run_hive
from tests.rig.mcp_client import text_of, uds_client
from tests.rig.polling import eventually

pytestmark = pytest.mark.integration

TEMPORAL = str(Path(sys.executable).parent / "temporal")


def _agent(hive, name: str):
    engine = hive.engine()
    try:
        return agent_store.get_agent(engine, name)
    finally:
        engine.dispose()


def _approvals(hive) -> list[approval_store.Approval]:
    engine = hive.engine()
    try:
        return approval_store.list_approvals(engine)
    finally:
        engine.dispose()


async def _notice(hive, containing: str, timeout: float = 60):
    """The operator's next notice containing `containing` (earlier ones are skipped)."""
    while True:
        message = await hive.operator_recv(wait_seconds=timeout)
        assert message is not None, f"no operator notice containing {containing!r}"
        if containing in message.body:
            return message


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=hm1nd", "-c", "user.email=hm1nd@hive", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.mark.parametrize("backend", ["bwrap"])
async def test_spawn_approved_by_temporal_signal_then_the_agent_answers(
    start_c0re, fake_model: FakeAnthropic, backend: str
):
    def behaviour(wake: Wake):
        if wake.agent == "bob" and wake.sender == "operator":
            return send("operator", f"bob here, you said: {wake.body}")
        return Text("ok")

    fake_model.responder = hive_responder(behaviour)
    hive = await start_c0re(agents=[], container_backend=backend)
    requested = run_hive(hive.env, "spawn", "bob", "--purpose", "answers questions")
    assert requested.returncode == 0, requested.stdout + requested.stderr
    await _notice(hive, "asks to spawn bob")
    [approval] = _approvals(hive)
    assert approval.status == "pending" and approval.kind == "spawn"

    signal = subprocess.run(
        [
            TEMPORAL,
            "workflow",
            "signal",
            "--address",
            hive.env.extra["HIVE_TEMPORAL_ADDRESS"],
            "--workflow-id",
            "hive-spawn-bob",
            "--name",
            "decide",
            "--input",
            '{"approved":true,"by":"ops"}',
        ],
        capture_output=True,
        text=True,
    )
    assert signal.returncode == 0, signal.stderr
    await _notice(hive, "bob is up")
    bob = _agent(hive, "bob")
    assert bob is not None and bob.container_status == "up" and bob.deployed_sha
    [approval] = _approvals(hive)
    assert approval.status == "approved" and approval.decided_by == "ops"

    # Deciding again changes nothing.
    again = run_hive(hive.env, "deny", str(approval.id))
    assert again.returncode == 1 and "already approved by ops" in again.stderr

    await hive.send("bob", "hello bob")
    reply = await _notice(hive, "bob here")
    assert reply.sender == "bob" and "hello bob" in reply.body


async def test_spawn_denied_makes_no_agent(start_c0re, fake_model):
    hive = await start_c0re(agents=[])
    assert run_hive(hive.env, "spawn", "eve", "--purpose", "x").returncode == 0
    await _notice(hive, "asks to spawn eve")
    [approval] = _approvals(hive)
    denied = run_hive(hive.env, "deny", str(approval.id), "--note", "not today", "--by", "ops")
    assert denied.returncode == 0, denied.stdout
    await _notice(hive, "denied by ops: not today")
    assert _agent(hive, "eve") is None
    assert _approvals(hive)[0].status == "denied"


async def test_manager_applies_a_config_commit_exactly_as_approved(start_c0re, fake_model):
    fake_model.responder = hive_responder(lambda wake: Text("noted"))
    hive = await start_c0re(agents=[], create_manager="true")
    await _notice(hive, "hm1nd is up")
    # hm1nd asks for bob through its own socket, as its claude would.
    manager_socket = hive.run_dir / "agents" / "hm1nd" / "mcp.sock"
    async with uds_client(manager_socket) as client:
        text = text_of(await client.call_tool("request_spawn", {"name": "bob", "purpose": "p"}))
        assert "requested" in text
    await _notice(hive, "asks to spawn bob")
    approval = _approvals(hive)[0]
    assert run_hive(hive.env, "approve", str(approval.id)).returncode == 0
    await _notice_agent(fake_model, "hm1nd", "bob is up")

    proposed = hive.env.state_dir / "proposed" / "bob"
    agent_nix = proposed / "agent.nix"
    agent_nix.write_text(agent_nix.read_text() + "\n# more memory for bob\n")
    _git(proposed, "commit", "-qam", "bob: more memory")
    sha = _git(proposed, "rev-parse", "HEAD")

    async with uds_client(manager_socket) as client:
        text = text_of(
            await client.call_tool(
                "request_apply_commit", {"name": "bob", "sha": sha[:10], "description": "memory"}
            )
        )
    assert f"hive-apply-bob-{sha[:12]}" in text
    await _notice(hive, f"apply commit {sha[:12]} to bob")
    listed = json.loads(run_hive(hive.env, "approvals", "--json").stdout)
    pending = [a for a in listed if a["status"] == "pending"]
    assert len(pending) == 1 and "+# more memory for bob" in pending[0]["diff"]
    # Before the operator decides, hm1nd rewrites the approved blob in its own object store.
    blob = _git(proposed, "rev-parse", f"{sha}:agent.nix")
    loose = proposed / ".git" / "objects" / blob[:2] / blob[2:]
    evil = b"{ ... }: { networking.firewall.enable = false; }\n"
    loose.chmod(0o644)
    loose.write_bytes(zlib.compress(b"blob %d\0" % len(evil) + evil))
    assert run_hive(hive.env, "approve", str(pending[0]["id"])).returncode == 0
    await _notice_agent(fake_model, "hm1nd", "is deployed")

    bob = _agent(hive, "bob")
    assert bob is not None and bob.deployed_sha == sha
    applied = hive.env.state_dir / "applied" / "bob"
    # What the operator saw is what was applied.
    assert "# more memory for bob" in (applied / "agent.nix").read_text()
    assert "firewall" not in (applied / "agent.nix").read_text()
    assert sha in _git(applied, "log", "-1", "--format=%B")
    # The apply is among bob's workflows in Temporal, beside his spawn and his turn loop.
    found = {w.id async for w in hive.client.list_workflows("HiveAgent='bob'")}
    assert {f"hive-apply-bob-{sha[:12]}", "hive-spawn-bob", "hive-agent-bob"} <= found, found


async def test_a_symlink_commit_is_refused_and_no_tool_for_non_managers(start_c0re, fake_model):
    fake_model.responder = hive_responder(lambda wake: Text("noted"))
    hive = await start_c0re(agents=[], create_manager="true")
    await _notice(hive, "hm1nd is up")
    async with uds_client(hive.run_dir / "agents" / "hm1nd" / "mcp.sock") as client:
        await client.call_tool("request_spawn", {"name": "bob", "purpose": "p"})
    await _notice(hive, "asks to spawn bob")
    assert run_hive(hive.env, "approve", str(_approvals(hive)[0].id)).returncode == 0
    await _notice_agent(fake_model, "hm1nd", "bob is up")

    # A non-manager's socket does not have the manager's tools at all.
    async with uds_client(hive.run_dir / "agents" / "bob" / "mcp.sock") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {"send", "recv", "whoami", "set_status"}
        refused = await client.call_tool("request_spawn", {"name": "x", "purpose": "p"})
        assert refused.is_error

    proposed = hive.env.state_dir / "proposed" / "bob"
    (proposed / "agent.nix").unlink()
    (proposed / "agent.nix").symlink_to("/etc/passwd")
    _git(proposed, "add", "-A")
    _git(proposed, "commit", "-qm", "sneaky")
    sha = _git(proposed, "rev-parse", "HEAD")
    async with uds_client(hive.run_dir / "agents" / "hm1nd" / "mcp.sock") as client:
        refusal = await client.call_tool(
            "request_apply_commit", {"name": "bob", "sha": sha, "description": "trust me"}
        )
    # Refused at once, saying why; no ApplyCommitWorkflow was started, no approval asked for.
    assert refusal.is_error and "symlink" in text_of(refusal), text_of(refusal)
    assert all(a.kind == "spawn" for a in _approvals(hive)), "no approval was asked for"
    with pytest.raises(RPCError) as missing:
        await hive.client.get_workflow_handle(f"hive-apply-bob-{sha[:12]}").describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


async def _notice_agent(fake: FakeAnthropic, agent: str, containing: str, timeout: float = 120):
    """The wake of `agent`'s claude by a notice containing `containing` (it read the message)."""
    request = await fake.wait_for_async(
        lambda r: (w := wake_of(r)) is not None and w.agent == agent and containing in w.body,
        timeout,
    )
    wake = wake_of(request)
    assert wake is not None
    return wake


async def test_auto_update_at_start_up_updates_only_stale_agents(
    tmp_path, start_c0re, fake_model, dev_server
):
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleIntervalSpec,
        ScheduleSpec,
    )

    from activities.backends import ContainerSpec, ProcessBackend
    from hyperhive import agent_flake, config_repo
    from hyperhive.models import AutoUpdateRequest
    from hyperhive.settings import HiveSettings
    from hyperhive.store.db import make_engine, migrate
    from workflows.auto_update import AutoUpdateWorkflow

    state = tmp_path / "state"
    current = agent_flake.hyperhive_revision()
    checkout = agent_flake.hyperhive_checkout()
    engine = make_engine(f"sqlite:///{state / 'hive.db'}")
    migrate(engine)
    backend = ProcessBackend(HiveSettings(state_dir=state))
    host = f"h{uuid.uuid4().hex[:8]}"
    for name, rev in (("fresh", current), ("stale", "0" * 40)):
        config_repo.init_agent_repos(
            state, name, purpose="x", hyperhive_rev=rev, hyperhive_flake_url=str(checkout)
        )
        agent_store.register_agent(engine, name, host)
        await backend.create(ContainerSpec(agent=name, flake_dir=state / "applied" / name))
        await backend.start(name)
        agent_store.set_container_status(engine, name, "up")
        agent_store.set_deployed(engine, name, hyperhive_rev=rev)

    # One on another host is not this host's to update.
    config_repo.init_agent_repos(
        state, "elsewhere", purpose="x", hyperhive_rev="0" * 40, hyperhive_flake_url=str(checkout)
    )
    agent_store.register_agent(engine, "elsewhere", "other-host")
    agent_store.set_container_status(engine, "elsewhere", "up")
    engine.dispose()

    # The one schedule of an older hive, which would update this host's agents a second time.
    legacy = await dev_server.client.create_schedule(
        "hive-auto-update",
        Schedule(
            action=ScheduleActionStartWorkflow(
                AutoUpdateWorkflow.run,
                AutoUpdateRequest(host_task_queue="hive-host-local"),
                id="hive-auto-update",
                task_queue="hive-core",
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
        ),
    )

    hive = await start_c0re(agents=[], host_id=host)
    with pytest.raises(RPCError) as gone:
        await legacy.describe()
    assert gone.value.status == RPCStatusCode.NOT_FOUND
    # Start-up triggers this host's auto-update schedule once; the schedule starts its workflow
    # asynchronously and has no push form: look at its description until the run shows up.
    schedule = hive.client.get_schedule_handle(auto_update_schedule_id(host))

    async def first_run():
        described = await schedule.describe()
        started = [r.action for r in described.info.recent_actions]
        started += described.info.running_actions
        if not started:
            return None
        return hive.client.get_workflow_handle(
            started[0].workflow_id, run_id=started[0].first_execution_run_id
        )

    run = await eventually(
        first_run,
        what="the schedule to have started an AutoUpdateWorkflow",
        timeout=30,
        interval=0.1,
    )
    result = await run.result()
    assert result["updated"] == ["stale"] and result["failed"] == {}
    assert _agent(hive, "stale").hyperhive_rev == current
    assert _agent(hive, "fresh").hyperhive_rev == current
    assert _agent(hive, "elsewhere").hyperhive_rev is None
    assert config_repo.recorded_rev(state, "stale") == current
    assert (await schedule.describe()).schedule.policy.overlap.name == "SKIP"


async def test_kill_keeps_messages_and_start_delivers_them(start_c0re, fake_model):
    fake_model.responder = hive_responder(lambda wake: send("operator", f"got {wake.body}"))
    hive = await start_c0re(agents=[], create_manager="true")
    await _notice(hive, "hm1nd is up")
    assert run_hive(hive.env, "spawn", "bob", "--purpose", "p").returncode == 0
    await _notice(hive, "asks to spawn bob")
    assert run_hive(hive.env, "approve", str(_approvals(hive)[0].id)).returncode == 0
    await _notice(hive, "bob is up")

    killed = run_hive(hive.env, "kill", "bob")
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert "bob stopped" in killed.stdout
    bob = _agent(hive, "bob")
    assert bob.state == "stopped" and bob.container_status == "down"
    await hive.send("bob", "are you there")
    assert _agent(hive, "bob").pending == 1, "a stopped agent keeps its mail"

    refused = run_hive(hive.env, "destroy", "bob")
    assert refused.returncode == 2 and "--yes" in refused.stderr

    started = run_hive(hive.env, "start", "bob")
    assert started.returncode == 0, started.stdout + started.stderr
    reply = await _notice(hive, "got are you there")
    assert reply.sender == "bob"

    # stop is kill's other name; restart brings it back with its mail; list shows both.
    assert run_hive(hive.env, "stop", "bob").returncode == 0
    listed = {a["name"]: a for a in json.loads(run_hive(hive.env, "list", "--json").stdout)}
    assert listed["bob"]["state"] == "stopped" and listed["bob"]["container_status"] == "down"
    await hive.send("bob", "still there")
    restarted = run_hive(hive.env, "restart", "bob")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert (await _notice(hive, "got still there")).sender == "bob"

    destroyed = run_hive(hive.env, "destroy", "bob", "--yes")
    assert destroyed.returncode == 0
    bob = _agent(hive, "bob")
    assert bob.container_status == "absent" and bob.state == "stopped"
    assert (hive.env.state_dir / "applied" / "bob" / "agent.nix").exists(), "repos are kept"

    # Starting a destroyed agent is refused at once, saying why (no retries for minutes).
    again = run_hive(hive.env, "start", "bob")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "bob has no container" in again.stderr
    assert '`hive spawn bob --purpose "…"`' in again.stderr and "--fresh" in again.stderr
    assert _agent(hive, "bob").state == "stopped"


async def _notices(hive, *containing: str, timeout: float = 120) -> dict[str, object]:
    """The operator's notices containing each of `containing`, in whatever order they come
    (a reply can overtake "… is up"); others are skipped."""
    found: dict[str, object] = {}
    while len(found) < len(containing):
        message = await hive.operator_recv(wait_seconds=timeout)
        missing = [c for c in containing if c not in found]
        assert message is not None, f"no operator notice containing {missing}"
        for text in missing:
            if text in message.body:
                found[text] = message
    return found


def _wake_request(fake: FakeAnthropic, agent: str, body: str):
    return fake.wait_for(
        lambda r: (w := wake_of(r)) is not None and w.agent == agent and w.body == body, 120
    )


def _pending_approval(hive) -> approval_store.Approval:
    [approval] = [a for a in _approvals(hive) if a.status == "pending"]
    return approval


def _last_session(hive, agent: str) -> str:
    engine = hive.engine()
    try:
        return agent_store.last_session_id(engine, agent)
    finally:
        engine.dispose()


async def test_a_destroyed_agent_comes_back_with_its_history_or_afresh(start_c0re, fake_model):
    fake_model.responder = hive_responder(lambda wake: send("operator", f"got {wake.body}"))
    hive = await start_c0re(agents=[])
    state = hive.env.state_dir
    proposed, applied = state / "proposed" / "bob", state / "applied" / "bob"
    assert run_hive(hive.env, "spawn", "bob", "--purpose", "first purpose").returncode == 0
    await _notice(hive, "asks to spawn bob")
    assert run_hive(hive.env, "approve", str(_pending_approval(hive).id)).returncode == 0
    await _notices(hive, "bob is up")
    await hive.send("bob", "the word is PINEAPPLE")
    await _notices(hive, "got the word is PINEAPPLE")
    status = await hive.wait_status("bob", lambda s: s.turns_total == 1 and s.state == "idle")
    session, deployed = status.session_id, _agent(hive, "bob").deployed_sha
    assert _last_session(hive, "bob") == session and deployed
    # hm1nd commits a config change that is never approved.
    (proposed / "CLAUDE.md").write_text((proposed / "CLAUDE.md").read_text() + "\nunapproved\n")
    _git(proposed, "commit", "-qam", "not approved")
    unapproved = _git(proposed, "rev-parse", "HEAD")
    (state / "agents" / "bob" / "work" / "notes.txt").write_text("mine")

    destroyed = run_hive(hive.env, "destroy", "bob", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    await hive.send("bob", "while you were away")
    refused = run_hive(hive.env, "start", "bob")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert '`hive spawn bob --purpose "…"`' in refused.stderr, refused.stderr
    assert "config, inbox and history are kept (add --fresh" in refused.stderr
    assert _agent(hive, "bob").pending == 1

    # Spawned again: approved like a new agent, it keeps everything.
    respawn = run_hive(hive.env, "spawn", "bob", "--purpose", "second purpose")
    assert respawn.returncode == 0, respawn.stdout + respawn.stderr
    await _notice(hive, "asks to re-spawn bob")
    approval = _pending_approval(hive)
    assert approval.description.startswith("re-spawn bob, keeping its config, inbox and history")
    assert run_hive(hive.env, "approve", str(approval.id)).returncode == 0
    await _notices(hive, "bob is up", "got while you were away")
    resumed = await asyncio.to_thread(_wake_request, fake_model, "bob", "while you were away")
    assert "PINEAPPLE" in resumed.messages_text, "the earlier conversation is resumed"
    assert resumed.headers.get("x-claude-code-session-id") == session
    status = await hive.wait_status("bob", lambda s: s.turns_total == 1 and s.state == "idle")
    assert status.session_id == session == _last_session(hive, "bob")
    bob = _agent(hive, "bob")
    assert bob.container_status == "up" and bob.pending == 0
    assert bob.deployed_sha == deployed, "the unapproved proposed HEAD is not 'deployed'"
    assert _git(proposed, "rev-parse", "HEAD") == unapproved, "the proposed repo is kept"

    # Its container vanishes behind hive's back (the store says "down"): the failed start
    # records that it is gone, so the spawn is accepted.
    assert run_hive(hive.env, "kill", "bob").returncode == 0
    (state / "containers" / "h-bob.process").unlink()
    dropped = await hive.send("bob", "you will never see this")
    vanished = run_hive(hive.env, "start", "bob")
    assert vanished.returncode == 1 and "bob has no container" in vanished.stderr
    assert '`hive spawn bob --purpose "…"`' in vanished.stderr, vanished.stderr
    assert _agent(hive, "bob").container_status == "absent"

    # --fresh: config, inbox and conversation are discarded; credentials and work dir stay.
    fresh = run_hive(hive.env, "spawn", "bob", "--purpose", "third purpose", "--fresh")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    await _notice(hive, "asks to re-spawn bob afresh")
    approval = _pending_approval(hive)
    assert approval.description.startswith("re-spawn bob afresh, discarding its config")
    assert run_hive(hive.env, "approve", str(approval.id)).returncode == 0
    await _notices(hive, "bob is up")
    await hive.send("bob", "who are you")
    await _notices(hive, "got who are you")
    anew = await asyncio.to_thread(_wake_request, fake_model, "bob", "who are you")
    assert "PINEAPPLE" not in anew.messages_text and "while you were away" not in anew.messages_text
    new_session = anew.headers.get("x-claude-code-session-id")
    status = await hive.wait_status("bob", lambda s: s.turns_total == 1 and s.state == "idle")
    assert status.session_id == new_session != session
    assert _last_session(hive, "bob") == new_session
    assert not any(
        (w := wake_of(r)) is not None and w.body == "you will never see this"
        for r in fake_model.requests
    ), "the dropped message never reached the agent"
    kept = {m.id: m for m in hive.messages("bob")}
    assert kept[dropped["id"]].delivered_at is not None, "dropped, but kept as a record"
    assert _git(proposed, "rev-list", "--count", "HEAD") == "1", "a new proposed repo"
    assert "third purpose" in (proposed / "CLAUDE.md").read_text()
    assert "third purpose" in (applied / "CLAUDE.md").read_text()
    assert _agent(hive, "bob").deployed_sha == _git(proposed, "rev-parse", "HEAD")
    assert (state / "agents" / "bob" / "work" / "notes.txt").read_text() == "mine"


async def test_hm1nd_comes_back_at_start_up_when_its_container_is_gone(start_c0re, fake_model):
    def behaviour(wake: Wake):
        if wake.agent == "hm1nd" and wake.sender == "operator":
            return send("operator", f"hm1nd got {wake.body}")
        return Text("noted")

    fake_model.responder = hive_responder(behaviour)
    hive = await start_c0re(agents=[], create_manager="true")
    await _notices(hive, "hm1nd is up")
    await hive.send("hm1nd", "the word is MANGO")
    await _notices(hive, "hm1nd got the word is MANGO")
    deployed = _agent(hive, "hm1nd").deployed_sha

    assert hive.process.interrupt() == 0
    container = hive.env.state_dir / "containers" / "h-hm1nd.process"
    container.unlink()  # gone, while the store still says "up"
    assert _agent(hive, "hm1nd").container_status == "up"
    hive.restart()

    await _notices(hive, "hm1nd is up")
    assert container.exists()
    hm1nd = _agent(hive, "hm1nd")
    assert hm1nd.container_status == "up" and hm1nd.deployed_sha == deployed
    await hive.send("hm1nd", "are you back")
    await _notices(hive, "hm1nd got are you back")
    back = await asyncio.to_thread(_wake_request, fake_model, "hm1nd", "are you back")
    assert "MANGO" in back.messages_text, "its conversation goes on"
