"""The `hive` CLI as an operator runs it, against a real hive-c0re over `<run>/host.sock`."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess

import pytest

from tests.fakes.anthropic_api import FakeAnthropic
from tests.rig.agent_scripts import Wake, hive_responder, send
from tests.rig.hive_process import HIVE, HiveEnv, run_hive

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
    spawned = json.loads(spawn.stdout)
    assert spawned["workflow_id"] == "hive-spawn-bob" and isinstance(spawned["approval_id"], int)
    listed = run_hive(hive.env, "approvals")
    assert "pending" in listed.stdout and "spawn" in listed.stdout and "bob" in listed.stdout
    assert f"#{spawned['approval_id']} " in listed.stdout

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
    # Not a usage error (2): its own code, so a script knows to start hive-c0re.
    gone = run_hive(hive.env, "status")
    assert gone.returncode == 3 and gone.stdout == ""
    assert gone.stderr == (
        f"hive: hive-c0re is not running (no {hive.run_dir}/host.sock)\n"
        "  → start it with `hive up` (or check HIVE_RUN_DIR / HIVE_STATE_DIR)\n"
    )
    assert run_hive(hive.env, "spawn", "bob", "--purpose", "p").returncode == 3
    assert run_hive(hive.env, "frobnicate").returncode == 2  # usage stays 2


async def test_spawn_prints_the_approval_to_approve(start_c0re, fake_model):
    """What an operator reads after `hive spawn`: the approval's number, which `hive approvals`
    lists and `hive approve` takes; the same for a re-spawn of a destroyed agent."""
    hive = await start_c0re(agents=["alice"])
    spawn = run_hive(hive.env, "spawn", "bob", "--purpose", "answers questions")
    assert spawn.returncode == 0, spawn.stdout + spawn.stderr
    said = re.fullmatch(
        r"spawn of bob requested: approval #(\d+) — approve it with `hive approve (\d+)` "
        r"\(or deny it with `hive deny (\d+)`\)\n",
        spawn.stdout,
    )
    assert said is not None, spawn.stdout
    approval_id = int(said[1])
    assert said[2] == said[3] == str(approval_id)
    [stored] = [a for a in hive.approvals() if a.workflow_id == "hive-spawn-bob"]
    assert stored.id == approval_id and stored.status == "pending"

    listed = run_hive(hive.env, "approvals", "--pending")
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(f"#{approval_id} ")]
    assert row.split()[1:2] == ["pending"] and " spawn " in row and " bob " in row
    as_json = json.loads(run_hive(hive.env, "approvals", "--pending", "--json").stdout)
    assert [(a["id"], a["workflow_id"]) for a in as_json] == [(approval_id, "hive-spawn-bob")]

    denied = run_hive(hive.env, "deny", str(approval_id), "--note", "not now")
    assert denied.returncode == 0 and denied.stdout.startswith(f"#{approval_id} denied")

    # alice's container gone (destroyed): `hive spawn alice` brings it back, by approval too.
    assert run_hive(hive.env, "destroy", "alice", "--yes").returncode == 0
    again = run_hive(hive.env, "spawn", "alice", "--purpose", "back again")
    assert again.returncode == 0, again.stdout + again.stderr
    [respawn] = [
        a for a in hive.approvals() if a.workflow_id == "hive-spawn-alice" and a.status == "pending"
    ]
    assert f"approval #{respawn.id} — approve it with `hive approve {respawn.id}`" in again.stdout


def hive_login(env: HiveEnv, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    """`hive login …` with the secret on stdin, the way `hive login bob < token.txt` runs."""
    return subprocess.run(
        [HIVE, "login", *args],
        env=env.environ(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def socket_call(path: os.PathLike[str], request: dict[str, object]) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(os.fspath(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer: dict[str, object] = json.loads(sock.makefile("rb").readline())
        return answer


async def test_hive_login_stores_the_token_0600_and_the_secret_shows_nowhere(
    start_c0re, fake_model
):
    token = "sk-ant-oat01-" + "s3cr3t" * 14 + "WXYZ"
    api_key = "sk-ant-api03-" + "k3y" * 28 + "KKEY"
    leaks = ("s3cr3ts3cr3t", "k3yk3yk3y")
    # At debug level hive-c0re logs everything it logs at all.
    hive = await start_c0re(agents=["alice", "bob"], log_level="debug")

    stored = hive_login(hive.env, "bob", stdin=token + "\n")
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert stored.stdout == "bob logged in with OAuth token sk-ant-oat…WXYZ\n"
    auth = hive.env.state_dir / "agents" / "bob" / "home" / ".claude" / "hive-auth.json"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert stat.S_IMODE(auth.parent.stat().st_mode) == 0o700
    assert json.loads(auth.read_text()) == {"kind": "oauth_token", "secret": token}

    as_json = hive_login(hive.env, "alice", "--json", stdin=api_key)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"kind": "api_key", "hint": "sk-ant-api…KKEY"}

    # A wrong credential is refused, says what to do, and leaves bob's token alone.
    wrong = hive_login(hive.env, "bob", "--kind", "oauth-token", stdin=api_key)
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert "not an OAuth token" in wrong.stderr and "\n  → " in wrong.stderr
    unknown = hive_login(hive.env, "bob", stdin="k3yk3yk3yk3y")
    assert unknown.returncode == 1 and "--kind" in unknown.stderr
    ghost = hive_login(hive.env, "ghost", stdin=token)
    assert ghost.returncode == 1 and "ghost" in ghost.stderr
    assert json.loads(auth.read_text())["secret"] == token

    # A malformed request straight on the socket echoes no secret either.
    answer = socket_call(
        hive.run_dir / "host.sock",
        {"version": 1, "cmd": "login", "name": "bob", "kind": "api_key", "secret": [api_key]},
    )
    assert answer["ok"] is False and answer["error"] == "bad_request"

    hive.process.interrupt()  # then its output is complete
    for text in (
        hive.process.output(),
        json.dumps(answer),
        *(p.stdout + p.stderr for p in (stored, as_json, wrong, unknown, ghost)),
    ):
        for piece in leaks:
            assert piece not in text, text[-4000:]
    assert "admin: " in hive.process.output()  # it did log the logins, without the secrets
