"""Every entry of the bad-input corpus, sent to its surface: a clear coded error whose message
names the problem, and nothing changed — no row in the store, no file or ref under the state dir
(config repos, credentials), no workflow started."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from mcp import Client

from api.admin_socket import AdminSocket
from hyperhive import config_repo
from hyperhive.admin_protocol import ProtocolError, parse_request
from hyperhive.broker import BrokerError
from hyperhive.credentials import CredentialKind
from hyperhive.errors import HiveError
from hyperhive.models import Decision
from hyperhive.repo_git import RepoError
from tests.hostile.conftest import World
from tests.hostile.corpus import CORPUS, GROUPS, Bad, counts

pytestmark = pytest.mark.integration  # the real Temporal dev server


def _params() -> list[Any]:
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [],
        )
        for case in CORPUS
    ]


def fill(world: World, value: Any) -> Any:
    if isinstance(value, str):
        return world.placeholders.get(value, value)
    return value


def says(text: str, case: Bad) -> None:
    """The message names the problem: every word of `case.says` is in it (case-insensitive)."""
    assert text.strip(), f"{case.id}: empty message"
    lowered = text.lower()
    missing = [w for w in case.says if w.lower() not in lowered]
    assert not missing, f"{case.id}: message lacks {missing}: {text!r}"


# -- one runner per surface ------------------------------------------------------------------------


async def run_broker(world: World, case: Bad) -> None:
    a = case.args
    with pytest.raises(BrokerError) as info:
        if case.surface == "send":
            await world.broker.send(
                a.get("sender", "alice"), a.get("to", "bob"), a.get("body", "hi")
            )
        elif case.surface == "recv":
            await world.broker.recv(a.get("agent", "alice"), a.get("wait", 0))
        else:
            await world.broker.set_status(a.get("agent", "alice"), a.get("text", "x"))
    assert info.value.code == case.code, (info.value.code, info.value.what)
    assert info.value.hint, f"{case.id}: no hint on what to do"
    says(info.value.what, case)


async def run_http(world: World, case: Bad) -> None:
    a = case.args
    kwargs: dict[str, Any] = {"params": a.get("params")}
    if "json" in a:
        kwargs["content"] = json.dumps(a["json"]).encode()
        kwargs["headers"] = {"content-type": "application/json"}
    elif "content" in a:
        kwargs["content"] = a["content"]
        kwargs["headers"] = {"content-type": "application/json"}
    elif "form" in a:
        kwargs["content"] = a["form"]
        kwargs["headers"] = {"content-type": "application/x-www-form-urlencoded"}
    response = await world.http.request(a["method"], a["path"], **kwargs)
    if case.status == -4:
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    else:
        assert response.status_code == case.status, (response.status_code, response.text[:300])
    if a["path"].startswith("/static"):
        assert "create_app" not in response.text and "root:" not in response.text
        return
    body = response.json()
    assert isinstance(body, dict), body
    if body == {"detail": "Not Found"} and response.status_code == 404:
        return  # no such route: the path does not name an agent's page or action at all
    if response.status_code == 422 and "detail" in body:
        # FastAPI's validation answer: `detail` lists each problem with where it is.
        assert case.code in ("validation", ""), body
        assert isinstance(body.get("detail"), list) and body["detail"], body
        if (a["method"], a["path"]) == ("POST", "/api/messages"):
            # Not echoed back: the input may hold bytes or floats that JSON cannot carry.
            assert all("input" not in d for d in body["detail"]), body
        says(json.dumps(body["detail"]), case)
        return
    assert body.get("ok") is False, body
    if case.code:
        assert body["error"] == case.code, body
    assert body.get("message"), body
    assert body.get("hint"), f"{case.id}: no hint on what to do: {body}"
    says(body["message"], case)


MCP_DEFAULTS: dict[str, dict[str, Any]] = {
    "send": {"to": "bob", "body": "hi"},
    "recv": {},
    "set_status": {"text": "x"},
    "request_spawn": {"name": "newbie", "purpose": "x"},
    "request_apply_commit": {"name": "alice", "sha": "{head}", "description": "d"},
}


async def run_mcp(world: World, case: Bad) -> None:
    a = dict(case.args)
    agent = a.pop("agent", "alice")
    tool = a.pop("tool")
    arguments = {**MCP_DEFAULTS.get(tool, {}), **a}
    arguments = {k: fill(world, v) for k, v in arguments.items()}
    async with Client(world.mcp[agent]) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{case.id}: accepted: {result.content}"
    text = result.content[0].text  # type: ignore[union-attr]
    says(text, case)
    assert "internal error" not in text, text


def apply_sha(world: World, case: Bad) -> Any:
    if "tree" in case.args:
        return world.crafted[case.name.removeprefix("tree-")]
    return fill(world, case.args.get("sha"))


def workflow_ids(world: World, case: Bad) -> set[str]:
    """The workflows the call would start if it were (wrongly) accepted: described before and
    after, since listing workflows is only eventually consistent."""
    a = case.args
    name = a.get("name")
    if not isinstance(name, str):
        return set()
    if case.surface == "apply" or a.get("tool") == "request_apply_commit":
        sha = apply_sha(world, case)
        return (
            {f"hive-apply-{name}-{sha[:12]}"} if isinstance(sha, str) and len(sha) == 40 else set()
        )
    if case.surface in ("spawn", "operator") or a.get("tool") == "request_spawn":
        return {f"hive-spawn-{name}"}
    return set()


async def run_lifecycle(world: World, case: Bad) -> None:
    a = case.args
    with pytest.raises(HiveError) as info:
        if case.surface == "spawn":
            await world.lifecycle.request_spawn(a["name"], a["purpose"], requester="hm1nd")
        elif case.surface == "apply":
            sha = apply_sha(world, case)
            await world.lifecycle.request_apply_commit(
                a["name"], sha, a.get("description", "d"), requester="hm1nd"
            )
        elif case.surface == "kill":
            await world.lifecycle.kill(a["name"], by=a.get("by", "operator"))
        else:
            await world.lifecycle.decide(a["id"], Decision(approved=True, by="operator"))
    says(str(info.value), case)


async def run_operator(world: World, case: Bad) -> None:
    a = case.args
    with pytest.raises(HiveError) as info:
        if a["op"] == "spawn":
            await world.operator.spawn(a["name"], a["purpose"])
        elif a["op"] == "decide":
            await world.operator.decide(
                a["id"], approved=True, by=a.get("by", ""), note=a.get("note", "")
            )
        else:
            await world.operator.login(a["name"], CredentialKind(a["kind"]), a["secret"])
    assert info.value.hint, f"{case.id}: no hint"
    says(str(info.value), case)


async def run_repo(world: World, case: Bad) -> None:
    def attempt() -> None:
        if case.surface == "commit":
            sha = world.crafted[case.name]
            config_repo.apply_commit(world.state, "alice", sha, approver="operator")
        else:
            agent = case.args.get("agent", "alice")
            config_repo.resolve_sha(world.state, agent, fill(world, case.args["sha"]))

    with pytest.raises(RepoError) as info:
        await asyncio.to_thread(attempt)
    assert info.value.code == case.code, (info.value.code, info.value.what)
    says(info.value.what, case)


async def run_admin(world: World, case: Bad) -> None:
    """The line through the protocol parser, then through the admin socket's handler (what
    host.sock answers, without the socket): the same coded error either way."""
    line = case.args["line"] if "line" in case.args else json.dumps(case.args["obj"]).encode()
    parsed = parse_request(line)
    if case.code == "refused":
        assert not isinstance(parsed, ProtocolError), parsed
    else:
        assert isinstance(parsed, ProtocolError), parsed
        assert parsed.code.value == case.code, parsed
        assert parsed.hint, parsed
        says(parsed.message, case)
    answer = await AdminSocket(world.operator, world.settings).answer(line, "tester")
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1, answer[:200]
    response = json.loads(answer)
    assert response["version"] == 1 and response["ok"] is False, response
    assert response["error"] == case.code, response
    assert response["hint"], response
    says(response["message"], case)


RUNNERS = {
    "send": run_broker,
    "recv": run_broker,
    "status": run_broker,
    "http": run_http,
    "mcp": run_mcp,
    "spawn": run_lifecycle,
    "apply": run_lifecycle,
    "kill": run_lifecycle,
    "decide": run_lifecycle,
    "operator": run_operator,
    "commit": run_repo,
    "resolve": run_repo,
    "admin": run_admin,
}


@pytest.mark.parametrize("case", _params())
async def test_bad_input_is_refused_and_changes_nothing(hostile_world: World, case: Bad) -> None:
    world = hostile_world
    world.watched_ids = workflow_ids(world, case)
    before = await world.snapshot()
    woken = list(world.waker.woken)
    try:
        await RUNNERS[case.surface](world, case)
    finally:
        after = await world.snapshot()
        await world.terminate_new(before.workflows, after.workflows)
    assert before.diff(after) == [], f"{case.id} changed the world"
    assert world.waker.woken == woken, "a refused call woke an agent"


def test_the_corpus_is_large_and_covers_every_group() -> None:
    sizes = counts()
    assert sum(sizes.values()) >= 200, sizes
    assert all(sizes[g] >= 20 for g in GROUPS), sizes
    surfaces = {c.surface for c in CORPUS}
    assert surfaces == set(RUNNERS), surfaces ^ set(RUNNERS)
