"""Agents that do real work: the real `hive c0re`, the bwrap backend, the real claude CLI, and a
fake model that does what a real one would (Write, Bash, Read, Edit, git, the hive MCP tools).

What is asserted is what a user notices: what reached each agent's model (its system prompt, its
model), the files and commits that result, the messages that arrive, and what the sandbox refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from hyperhive.domain import MANAGER_NAME
from tests.fakes.anthropic_api import (
    Bash,
    Edit,
    FakeAnthropic,
    Read,
    RecordedRequest,
    Text,
    ToolUse,
    Write,
)
from tests.rig.agent_scripts import for_agent, hive_responder, send, wake_of
from tests.rig.c0re import RunningC0re
from tests.rig.hive_process import HiveEnv, HiveProcess
from tests.rig.ports import free_ports

pytestmark = pytest.mark.integration

REVIEWER = "REVIEWER-9c1: review code."
PURPOSE = "PURPOSE-7f3a: keep the FizzBuzz module of this hive correct and fast."
FIZZ = """\
def fizz(n):
    return "Fizz" * (n % 3 == 0) + "Buzz" * (n % 5 == 0) or str(n)

print(" ".join(fizz(n) for n in range(1, 16)))
"""
FIZZ_OUT = "1 2 Fizz 4 Buzz Fizz 7 8 Fizz Buzz 11 Fizz 13 14 FizzBuzz"
# What bob runs to look around its sandbox (it prints one JSON object).
PROBE = Path(__file__).with_name("sandbox_probe.py")


def idle_reply(request: RecordedRequest) -> Text:
    """Any turn nobody scripted (hm1nd reading a notice, say) just ends."""
    return Text("noted")


async def hive_with_bob(start_c0re: Any, fake_model: FakeAnthropic, **settings: str) -> RunningC0re:
    """A hive with hm1nd, and bob spawned with PURPOSE and approved by the operator."""
    fake_model.responder = idle_reply
    hive: RunningC0re = await start_c0re(
        agents=[], container_backend="bwrap", create_manager="true", **settings
    )
    await hive.notice(f"{MANAGER_NAME} is up")
    await hive.spawn_approved("bob", PURPOSE)
    return hive


def bobs_turns(fake: FakeAnthropic) -> list[RecordedRequest]:
    return [r for r in fake.turn_requests() if for_agent("bob")(r)]


async def test_a_spawned_agent_knows_its_purpose_and_uses_its_tools(
    start_c0re: Any, fake_model: FakeAnthropic
) -> None:
    hive = await hive_with_bob(start_c0re, fake_model)
    fake_model.script_when(
        for_agent("bob"),
        Write("/work/fizz.py", FIZZ),
        Bash("python3 /work/fizz.py", "run it"),
        lambda request: send("operator", f"fizz says: {request.last_tool_result}"),
        Text("done"),
    )
    await hive.send("bob", "write fizz.py in your work dir, run it and tell me what it prints")
    reply = await hive.notice("fizz says")
    assert reply.sender == "bob" and FIZZ_OUT in reply.body

    first, *_ = bobs_turns(fake_model)
    # Its role reached the model: CLAUDE.md, written from the spawn purpose, is in the system
    # prompt (not only in some file the agent would have to find).
    assert PURPOSE in first.system_text
    assert "You are **bob**" in first.system_text
    assert {"Bash", "Write", "Read", "Edit", "mcp__hive__send"} <= set(first.tool_names)
    # The file it wrote is in its work dir on the host, and nothing refused the tools.
    work = hive.env.state_dir / "agents" / "bob" / "work"
    assert (work / "fizz.py").read_text() == FIZZ
    results = [text for r in bobs_turns(fake_model) for text in r.tool_result_texts]
    assert not [t for t in results if "permission" in t.lower() or "blocked" in t.lower()]


async def test_the_sandbox_keeps_an_agent_with_all_its_tools_in(
    start_c0re: Any, fake_model: FakeAnthropic
) -> None:
    """From inside bob's sandbox, with its full default tools: not root on the host, /proc/sys
    read-only, the model proxy reaches nothing but the model API, no other agent's files or
    socket, no Temporal, no dashboard, no host state dir."""
    hive = await hive_with_bob(start_c0re, fake_model)
    state = hive.env.state_dir
    temporal = hive.env.extra["HIVE_TEMPORAL_ADDRESS"]
    dashboard = f"127.0.0.1:{hive.env.dashboard_port}"
    args = " ".join((str(state), str(hive.run_dir), temporal, dashboard))
    fake_model.script_when(
        for_agent("bob"),
        Write("/work/probe.py", PROBE.read_text()),
        Bash(f"python3 /work/probe.py {args} > /work/probe.json; cat /work/probe.json", "probe"),
        Bash(
            f"echo pwned > {state}/hive.db; echo pwned > {state}/agents/{MANAGER_NAME}/work/x; "
            "echo 10 > /proc/sys/vm/swappiness; ls /agents",
            "try to leave",
        ),
        Text("done"),
    )
    swappiness = Path("/proc/sys/vm/swappiness").read_text()
    await hive.send("bob", "look around")
    await hive.wait_status("bob", lambda s: s.turns_total == 1 and s.state == "idle", 180)

    found = json.loads((state / "agents" / "bob" / "work" / "probe.json").read_text())
    assert found["uid_map"][1] != "0", f"bob is root on the host: {found['uid_map']}"
    owner = (state / "agents" / "bob" / "work" / "probe.json").stat().st_uid
    assert str(owner) == found["uid_map"][1], "what bob writes belongs to its sandbox uid"
    if os.geteuid() == 0:
        assert owner == 990000  # HIVE_SANDBOX_UID's default
    assert found["proc_sys"] == {
        "/proc/sys/vm/swappiness": "PermissionError",
        "/proc/sys/kernel/core_pattern": "PermissionError",
    }
    assert found["cap_eff"] == 0
    assert found["seen"] == {"state": False, "other_agent": False, "other_socket": False}
    assert found["tcp"] == {"temporal": "refused", "dashboard": "refused"}
    # Every trick target gets the proxy's own refusal; none reaches the dashboard.
    for target, answer in found["proxy"].items():
        assert answer.startswith(("HTTP/1.1 4",)), (target, answer)
        assert "hive model proxy" in answer or "Bad Request" in answer, (target, answer)
        assert "token" not in answer, (target, answer)
    assert found["proxy_api"].startswith("HTTP/1.1 200"), found["proxy_api"]

    # The attempts to leave failed, and nothing changed outside.
    last = next(r for r in reversed(bobs_turns(fake_model)) if r.tool_result_texts)
    assert "No such file or directory" in (last.last_tool_result or "")
    assert not (state / "agents" / MANAGER_NAME / "work" / "x").exists()
    assert (state / "hive.db").read_bytes().startswith(b"SQLite format 3")
    assert Path("/proc/sys/vm/swappiness").read_text() == swappiness
    # No approval was decided by anyone but the operator (the dashboard was out of reach).
    assert all(a.decided_by != "operator (dashboard)" for a in hive.approvals())


async def test_hm1nd_changes_bobs_config_and_only_an_approved_change_reaches_bob(
    start_c0re: Any, fake_model: FakeAnthropic
) -> None:
    hive = await hive_with_bob(start_c0re, fake_model)
    repo = "/agents/bob"

    def commit_and_request(message: str, description: str) -> list[Any]:
        return [
            Bash(f"cd {repo} && git add -A && git commit -qm '{message}' && git rev-parse HEAD"),
            lambda request: ToolUse(
                "mcp__hive__request_apply_commit",
                {
                    "name": "bob",
                    "sha": (request.last_tool_result or "").split()[-1],
                    "description": description,
                },
            ),
            Text("asked the operator"),
        ]

    fake_model.script_when(
        for_agent(MANAGER_NAME),
        Read(f"{repo}/CLAUDE.md"),
        Edit(
            f"{repo}/CLAUDE.md", "## Purpose", "## Role\n\nREVIEWER-9c1: review code.\n\n## Purpose"
        ),
        Read(f"{repo}/settings.json"),
        Write(
            f"{repo}/settings.json",
            json.dumps({"model": "claude-reviewer-1", "permissions": {"allow": [], "deny": []}}),
        ),
        *commit_and_request("bob: reviewer", "make bob a reviewer"),
    )
    await hive.send(MANAGER_NAME, "make bob a code reviewer, on claude-reviewer-1")
    await hive.notice("asks to apply commit")
    approval = hive.pending_approval("apply_commit")
    assert "+REVIEWER-9c1: review code." in approval.diff
    assert '"model": "claude-reviewer-1"' in approval.diff
    # The commit is hm1nd's, made with git in its sandbox.
    head = hive.env.state_dir / "proposed" / "bob" / ".git" / "refs" / "heads" / "main"
    assert approval.workflow_id.endswith(head.read_text().strip()[:12])

    # Pending: bob runs as before.
    before = await _bobs_next_request(hive, fake_model, "still yourself?")
    assert "REVIEWER-9c1" not in before.system_text and before.model != "claude-reviewer-1"

    assert hive.hive("approve", str(approval.id)).returncode == 0
    await _manager_told(fake_model, "is deployed")
    after = await _bobs_next_request(hive, fake_model, "who are you now?")
    assert "REVIEWER-9c1: review code." in after.system_text
    assert after.model == "claude-reviewer-1"
    listed = {a["name"]: a for a in json.loads(hive.hive("list", "--json").stdout)}
    assert listed["bob"]["model"] == "claude-reviewer-1"
    assert listed["bob"]["permission_mode"] == "bypassPermissions"

    # A denied change reaches nobody.
    fake_model.script_when(
        for_agent(MANAGER_NAME),
        Read(f"{repo}/CLAUDE.md"),
        Edit(f"{repo}/CLAUDE.md", "## Role", "## Role\n\nPOET-2b7: write only haiku."),
        *commit_and_request("bob: poet", "make bob a poet"),
    )
    await hive.send(MANAGER_NAME, "make bob a poet")
    await hive.notice("asks to apply commit")
    denied = hive.pending_approval("apply_commit")
    assert "POET-2b7" in denied.diff
    assert hive.hive("deny", str(denied.id), "--note", "no poetry").returncode == 0
    await _manager_told(fake_model, "no poetry")
    last = await _bobs_next_request(hive, fake_model, "and now?")
    assert "POET-2b7" not in last.system_text
    assert "REVIEWER-9c1" in last.system_text and last.model == "claude-reviewer-1"


async def _manager_told(fake: FakeAnthropic, containing: str) -> None:
    """hm1nd's claude was woken by a notice containing `containing`."""
    await fake.wait_for_async(
        lambda r: (w := wake_of(r)) is not None and w.agent == MANAGER_NAME and containing in w.body
    )


async def _bobs_next_request(hive: RunningC0re, fake: FakeAnthropic, body: str) -> RecordedRequest:
    """Send bob `body`; the first model request of the turn it wakes."""
    await hive.send("bob", body)
    return await fake.wait_for_async(
        lambda r: (w := wake_of(r)) is not None and w.agent == "bob" and w.body == body
    )


async def test_with_hive_up_destroyed_agents_come_back_and_hm1nd_after_a_restart(
    tmp_path: Path, fake_model: FakeAnthropic, claude_bin: Path
) -> None:
    """As a user runs it: `hive up` (embedded Temporal, bwrap), one host-wide key for every agent
    and a model URL. bob, destroyed, is spawned again by name and answers; hm1nd, its container
    removed, is back after `hive up` is restarted."""

    def echo(wake: Any) -> Any:
        return (
            send("operator", f"{wake.agent} heard: {wake.body}")
            if wake.sender == "operator"
            else None
        )

    fake_model.responder = hive_responder(echo)
    env = HiveEnv.fresh(tmp_path / "state")
    [manager_port] = free_ports(1)
    run_dir = Path(tempfile.mkdtemp(prefix="hive-run-", dir="/tmp"))
    env.extra.update(
        HIVE_RUN_DIR=str(run_dir),
        HIVE_CLAUDE_BIN=str(claude_bin),
        HIVE_CONTAINER_BACKEND="bwrap",
        HIVE_MANAGER_PORT=str(manager_port),
        HIVE_MODEL_BASE_URL=fake_model.base_url,
        HIVE_API_KEY="sk-ant-api03-host-wide-test-key",
    )

    async def up() -> RunningC0re:
        process = HiveProcess(env, "up")
        process.wait_ready()
        client = await Client.connect(env.temporal_target, data_converter=pydantic_data_converter)
        return RunningC0re(env, process, client, [], run_dir)

    hive = await up()
    try:
        await hive.notice(f"{MANAGER_NAME} is up")
        await hive.spawn_approved("bob", PURPOSE)
        await hive.send("bob", "one")
        assert (await hive.notice("bob heard: one")).sender == "bob"
        # The host-wide key reached the model (bob has no login of its own).
        assert fake_model.turn_requests()[-1].headers["x-api-key"] == env.extra["HIVE_API_KEY"]

        assert hive.hive("destroy", "bob", "--yes").returncode == 0
        refused = hive.hive("start", "bob")
        assert refused.returncode == 1 and 'hive spawn bob --purpose "' in refused.stderr
        await hive.send("bob", "two")  # waits in its inbox
        await hive.spawn_approved("bob", "back again")
        assert (await hive.notice("bob heard: two")).sender == "bob"
        assert PURPOSE in bobs_turns(fake_model)[-1].system_text, "its config was kept"

        assert hive.hive("destroy", MANAGER_NAME, "--yes").returncode == 0
        assert hive.process.interrupt() == 0, hive.process.output()
        assert not list((env.state_dir / "containers").glob("h-hm1nd.*"))
        hive = await up()
        await hive.notice(f"{MANAGER_NAME} is up")
        await hive.send(MANAGER_NAME, "still there?")
        assert (await hive.notice("hm1nd heard: still there?")).sender == MANAGER_NAME
    finally:
        if hive.process.proc.poll() is None:
            hive.process.interrupt()
        print(f"--- hive up output ---\n{hive.process.output()[-8000:]}")
        shutil.rmtree(run_dir, ignore_errors=True)
