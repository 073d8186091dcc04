"""The dashboard app fuzzed against its own OpenAPI schema (schemathesis, in process over ASGI),
on a real store, broker and Temporal dev server (no worker).

With the CSRF header every generated request reaches its handler: no 5xx, and every answer
conforms to the schema (status codes, content types, bodies). Without the header, every unsafe
operation is refused with 403 before it does anything.

Not fuzzed: the SSE streams (endless by design), `/health` (its `deep` check waits for a
worker that this test does not run, and answers 503 by design when there is none), and the
control actions on a registered agent (they wait for their workflow).

Not checked: `positive_data_acceptance` ("a schema-valid request must be accepted"): the schema
says `to` is a string, but only a registered agent's name is accepted.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.csrf import HEADER
from tests.hostile.conftest import World

pytestmark = pytest.mark.integration  # the real Temporal dev server

UNFUZZED = r"^/health$|/stream/|/api/events$"


EXAMPLES_PER_OPERATION = 25
# What the app must never do, whatever the input: a 5xx, a body that is not what its
# content type says, a documented status whose body does not match its schema.
NEVER = [not_a_server_error, content_type_conformance, response_schema_conformance]


def fuzz(world: World, operation: Any, checks: list[Any]) -> None:
    token = world.app.state.csrf.token

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, print_blob=True)
    def run(case: Any) -> None:
        case.call_and_validate(headers={HEADER: token}, checks=checks)

    run()


def fuzz_all(world: World, checks: list[Any]) -> tuple[list[str], dict[str, str]]:
    """Each operation in turn (schemathesis' lazy pytest fixture does not run on pytest 9: it
    reads `request.node._nodeid`); returns the operations and their failures."""
    loaded = schemathesis.openapi.from_asgi("/openapi.json", world.app)
    schema: Any = loaded.exclude(path_regex=UNFUZZED)
    failures: dict[str, str] = {}
    fuzzed = []
    for result in schema.get_all_operations():
        operation = result.ok()
        fuzzed.append(operation.label)
        try:
            fuzz(world, operation, checks)
        except (Exception, BaseExceptionGroup) as e:  # reported together below
            failures[operation.label] = f"{type(e).__name__}: {e}"[:3000]
    return fuzzed, failures


def report(failures: dict[str, str]) -> str:
    return "\n\n".join(f"== {k}\n{v}" for k, v in failures.items())


def test_no_input_makes_any_operation_fail_or_break_its_schema(hostile_world: World) -> None:
    fuzzed, failures = fuzz_all(hostile_world, NEVER)
    assert "POST /api/messages" in fuzzed and "POST /api/operator/recv" in fuzzed, fuzzed
    assert not failures, report(failures)


def test_every_status_code_is_documented(hostile_world: World) -> None:
    """Every refusal an operation answers (400, 403, 404, 409, 413, 422, 429, 503 as the
    operation has them) is in its OpenAPI `responses`, with the ErrorBody schema."""
    _, failures = fuzz_all(hostile_world, [status_code_conformance])
    assert not failures, report(failures)


UNSAFE = {"post", "put", "patch", "delete"}


def _concrete(path: str) -> str:
    """A path template filled in with a registered agent, an action and an approval id."""
    values = {"name": "alice", "action": "stop", "approval_id": "1"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


def unsafe_operations(world: World) -> list[tuple[str, str]]:
    paths = world.app.openapi()["paths"]
    return sorted(
        (method.upper(), _concrete(path))
        for path, operations in paths.items()
        for method in operations
        if method in UNSAFE
    )


async def test_without_the_csrf_token_every_unsafe_operation_is_refused(
    hostile_world: World,
) -> None:
    world = hostile_world
    operations = unsafe_operations(world)
    assert ("POST", "/api/messages") in operations
    woken = list(world.waker.woken)
    before = await world.snapshot()
    wrong = world.app.state.csrf.token[:-1] + "x"
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as bare:
        for token in (None, "", "0" * 64, wrong):
            headers = {"content-type": "application/json"}
            if token is not None:
                headers[HEADER] = token
            for method, path in operations:
                response = await bare.request(
                    method,
                    path,
                    content=b'{"to":"alice","body":"hi","confirm":"alice","kind":"api_key"}',
                    headers=headers,
                )
                assert response.status_code == 403, (method, path, token, response.text)
                assert response.json()["error"] == "csrf", response.text
        # A form post must carry the token as its csrf_token field.
        for data in ({"to": "alice", "body": "hi"}, {"to": "alice", "csrf_token": wrong}):
            response = await bare.post("/api/messages", data=data)
            assert response.status_code == 403, response.text
    after = await world.snapshot()
    assert before.diff(after) == []
    assert world.waker.woken == woken
