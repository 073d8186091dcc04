"""The `hive` CLI as an operator runs it, against a real hive-c0re over `<run>/host.sock`."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.fakes.anthropic_api import FakeAnthropic
from tests.rig.agent_scripts import Wake, hive_responder, send
from tests.rig.hive_process import run_hive

pytestmark = pytest.mark.integration


async def test_status_send_logs_and_approvals_over_the_admin_socket(
    start_c0re, fake_model: FakeAnthropic
):
    def behaviour(wake: Wake):
        if wake.sender == "operator":
            return send("operator", f"alice got: {wake.body}")
        return None

    fake_model.responder = hive_responder(behaviour)
    hive = await start_c0re(agents=["alice"])
    sock = hive.run_dir / "host.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660

    status = run_hive(hive.env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "NAME" in status.stdout and "\nalice " in status.stdout
    assert "0 approvals pending" in status.stdout
    assert hive.env.dashboard + "/" in status.stdout

    as_json = json.loads(run_hive(hive.env, "status", "--json").stdout)
    assert [a["name"] for a in as_json["agents"]] == ["alice"]
    assert as_json["urls"]["dashboard"] == hive.env.dashboard + "/"

    sent = run_hive(hive.env, "send", "alice", "hello over the socket")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sent.stdout.startswith("sent #") and "to alice" in sent.stdout
    reply = await hive.operator_recv()
    assert reply is not None and reply.body == "alice got: hello over the socket"

    # The turn's events, as claude printed them, rendered readably.
    logs = run_hive(hive.env, "logs", "alice")
    assert logs.returncode == 0, logs.stderr
    assert "[init] session start" in logs.stdout
    assert '[tool_call] mcp__hive__send(to="operator"' in logs.stdout
    assert "[result] turn done" in logs.stdout
    raw = [
        json.loads(line)
        for line in run_hive(hive.env, "logs", "alice", "--json").stdout.splitlines()
    ]
    assert raw and all(event["agent"] == "alice" for event in raw)

    assert run_hive(hive.env, "approvals").stdout.strip() == "no approvals"
    assert json.loads(run_hive(hive.env, "approvals", "--json").stdout) == []
    spawn = run_hive(hive.env, "spawn", "bob", "--purpose", "answers questions", "--json")
    assert json.loads(spawn.stdout)["workflow_id"] == "hive-spawn-bob"
    listed = run_hive(hive.env, "approvals")
    assert "pending" in listed.stdout and "spawn" in listed.stdout and "bob" in listed.stdout

    urls = run_hive(hive.env, "urls", "--json")
    assert set(json.loads(urls.stdout)["agents"]) == {"alice"}


async def test_refusals_and_a_missing_daemon_have_their_exit_codes(start_c0re, fake_model):
    hive = await start_c0re(agents=["alice"])

    unknown = run_hive(hive.env, "send", "nobody", "hi")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.startswith("hive: ") and "nobody" in unknown.stderr
    assert "\n  → " in unknown.stderr
    assert not [m for m in hive.messages() if m.recipient == "nobody"]

    missing = run_hive(hive.env, "approve", "4242")
    assert missing.returncode == 1 and "there is no approval #4242" in missing.stderr

    hive.process.interrupt()
    gone = run_hive(hive.env, "status")
    assert gone.returncode == 2
    assert "hive-c0re is not running" in gone.stderr and "hive up" in gone.stderr
