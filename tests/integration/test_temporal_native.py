"""hyperhive as an operator scripts it with the real `temporal` CLI: the `decide` update and
signal, every workflow of an agent found by `HiveAgent`, an approval workflow cancelled or
terminated from Temporal, and settings followed by what already runs in Temporal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.anthropic_api import FakeAnthropic, Text
from tests.rig.agent_scripts import Wake, hive_responder, send
from tests.rig.c0re import RunningC0re

pytestmark = pytest.mark.integration

TEMPORAL = str(Path(sys.executable).parent / "temporal")


def temporal(hive: RunningC0re, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TEMPORAL, *args, "--address", hive.env.extra["HIVE_TEMPORAL_ADDRESS"]],
        capture_output=True,
        text=True,
        timeout=60,
    )


def decide_update(
    hive: RunningC0re, workflow_id: str, payload: str
) -> subprocess.CompletedProcess[str]:
    return temporal(
        hive,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        workflow_id,
        "--name",
        "decide",
        "--input",
        payload,
        "--output",
        "json",
    )


async def test_decide_update_refuses_bad_decisions_and_answers_good_ones(start_c0re):
    hive = await start_c0re(agents=[])
    assert hive.hive("spawn", "bob", "--purpose", "reviews").returncode == 0
    await hive.notice("asks to spawn bob")
    approval = hive.pending_approval("spawn")

    for payload, reason in [
        ("{}", "not a decision (approved: Field required)"),
        ('{"approved": "yes"}', "not a decision (approved: Input should be a valid boolean)"),
        ('{"approved": true, "by": "ops", "aproved": true}', "aproved: Extra inputs"),
    ]:
        refused = decide_update(hive, "hive-spawn-bob", payload)
        assert refused.returncode != 0, refused.stdout
        assert reason in refused.stderr, refused.stderr
    assert hive.pending_approval("spawn").id == approval.id  # nothing changed

    accepted = decide_update(hive, "hive-spawn-bob", '{"approved": true, "by": "ops"}')
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["result"] == {
        "approval_id": approval.id,
        "status": "approved",
        "by": "ops",
        "note": "",
    }
    await hive.notice("bob is up", timeout=180)
    [decided] = hive.approvals()
    assert decided.status == "approved" and decided.decided_by == "ops"

    # The workflow has ended: a late decision is refused by hive and Temporal alike.
    late = hive.hive("deny", str(approval.id))
    assert late.returncode == 1 and "already approved by ops" in late.stderr


async def test_the_decide_signal_still_works_and_ignores_a_bad_one(start_c0re):
    hive = await start_c0re(agents=[])
    assert hive.hive("spawn", "eve", "--purpose", "x").returncode == 0
    await hive.notice("asks to spawn eve")

    def signal(payload: str) -> None:
        sent = temporal(
            hive,
            "workflow",
            "signal",
            "--workflow-id",
            "hive-spawn-eve",
            "--name",
            "decide",
            "--input",
            payload,
        )
        assert sent.returncode == 0, sent.stderr  # a signal cannot answer

    signal('{"approved": "yes"}')  # malformed: logged by the worker and ignored
    signal('{"approved": false, "by": "ops", "note": "not today"}')
    await hive.notice("denied by ops: not today")
    [approval] = hive.approvals()
    assert approval.status == "denied" and approval.decided_by == "ops"


async def test_every_workflow_of_an_agent_is_found_by_hive_agent(
    start_c0re, fake_model: FakeAnthropic
):
    fake_model.responder = hive_responder(lambda wake: Text("ok"))
    # The test's Temporal runs apart from hive-c0re: its UI is named, as the NixOS module does.
    hive = await start_c0re(agents=[], temporal_ui_url="http://temporal.example:8233/")
    await hive.spawn_approved("bob", "reviews")
    assert hive.hive("stop", "bob").returncode == 0
    assert hive.hive("start", "bob").returncode == 0

    listed = temporal(hive, "workflow", "list", "--query", "HiveAgent='bob'", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    ids = {w["execution"]["workflowId"] for w in json.loads(listed.stdout)}
    assert {"hive-spawn-bob", "hive-agent-bob", "hive-kill-bob", "hive-start-bob"} <= ids, ids

    # The approval links to its workflow's history in the Web UI.
    [approval] = json.loads(hive.hive("approvals", "--json").stdout)
    assert approval["workflow_url"] == (
        "http://temporal.example:8233/namespaces/default/workflows?query="
        "WorkflowId%3D%22hive-spawn-bob%22"
    )


@pytest.mark.parametrize(("verb", "ended"), [("cancel", "cancelled"), ("terminate", "terminated")])
async def test_an_approval_whose_workflow_is_stopped_in_temporal_is_cancelled(
    start_c0re, verb: str, ended: str
):
    hive = await start_c0re(agents=[])
    assert hive.hive("spawn", "eve", "--purpose", "x").returncode == 0
    await hive.notice("asks to spawn eve")
    approval = hive.pending_approval("spawn")

    stopped = temporal(hive, "workflow", verb, "--workflow-id", "hive-spawn-eve")
    assert stopped.returncode == 0, stopped.stderr
    told = await hive.notice(f"approval #{approval.id} (spawn eve) was cancelled", timeout=60)
    assert told.sender == "hive-c0re"
    assert f"its workflow hive-spawn-eve was {ended} in Temporal" in told.body
    [closed] = hive.approvals()
    assert closed.status == "cancelled"
    # And it cannot be decided any more.
    late = hive.hive("approve", str(approval.id))
    assert late.returncode == 1 and "already cancelled" in late.stderr


async def test_the_schedule_and_the_agents_limits_follow_the_settings_after_a_restart(
    start_c0re, fake_model: FakeAnthropic
):
    def behaviour(wake: Wake):
        if wake.sender == "operator":
            return send("operator", f"done: {wake.body}")
        return Text("ok")

    fake_model.responder = hive_responder(behaviour)
    hive = await start_c0re(agents=["alice"])
    await hive.send("alice", "first")
    await hive.notice("done: first")

    assert hive.process.interrupt() == 0
    hive.env.extra["HIVE_AUTO_UPDATE_INTERVAL_S"] = "600"
    hive.env.extra["HIVE_MAX_TURNS_PER_HOUR"] = "1"
    hive.restart()

    described = temporal(
        hive,
        "schedule",
        "describe",
        "--schedule-id",
        f"hive-auto-update-{hive.host_id}",
        "--output",
        "json",
    )
    assert described.returncode == 0, described.stderr
    [interval] = json.loads(described.stdout)["schedule"]["spec"]["interval"]
    assert interval["interval"] == "600s", interval

    # alice's loop has run since before the restart: it now counts against the new budget.
    await hive.send("alice", "second")
    told = await hive.notice("alice ran 1 turns in the last hour (budget 1/h)")
    assert told.sender == "hive-c0re"
