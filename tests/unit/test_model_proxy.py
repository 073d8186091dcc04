"""The per-agent model proxy (api.model_proxy, its checks in api.model_target) over its real unix
socket, against real upstreams: a scripted ASGI app (to hold a stream open, fail, record headers)
and the fake Anthropic API. Also `hive-agent run`'s forwarder in front of it, as in a sandbox but
on the host's loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn

from api.model_proxy import ModelProxies, model_socket_path
from api.model_target import ModelProxyError, UpstreamURL, is_model_path, upstream_url
from hyperhive.settings import HiveSettings
from tests.fakes.anthropic_api import FakeAnthropic, Text
from tests.rig.ports import free_port

HIVE_AGENT = Path(sys.executable).with_name("hive-agent")
TIMEOUT = 10.0


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    """A scripted model API: records what reaches it; its SSE stream waits on `gate`."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    hung_up: bool = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        self.seen.append(Seen(scope["method"], path, scope["query_string"].decode(), headers, body))
        if path.endswith("/v1/messages"):
            await self._stream(receive, send)
        elif path.endswith("/v1/limited"):
            await _send(
                send,
                429,
                b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}',
                [(b"retry-after", b"30"), (b"anthropic-ratelimit-requests-reset", b"soon")],
            )
        elif path.endswith("/v1/overloaded"):
            await _send(send, 529, b'{"type":"error","error":{"type":"overloaded_error"}}')
        else:
            await _send(send, 200, json.dumps({"path": path}).encode())

    async def _stream(self, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"x-upstream", b"yes")],
            }
        )
        try:
            await send(
                {
                    "type": "http.response.body",
                    "body": b'event: message_start\ndata: {"n":1}\n\n',
                    "more_body": True,
                }
            )
            # Held open until the test opens the gate, or the proxy hangs up.
            gate = asyncio.ensure_future(self.gate.wait())
            hangup = asyncio.ensure_future(receive())
            await asyncio.wait({gate, hangup}, return_when=asyncio.FIRST_COMPLETED)
            gate.cancel()
            hangup.cancel()
            if not self.gate.is_set():
                self.hung_up = True
                return
            await send(
                {
                    "type": "http.response.body",
                    "body": b'event: message_stop\ndata: {"n":2}\n\n',
                    "more_body": False,
                }
            )
        finally:
            self.stream_closed.set()


async def _send(send: Any, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = Upstream()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    app.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(
            app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=1
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield app
    app.gate.set()
    server.should_exit = True
    await asyncio.wait_for(task, TIMEOUT)
    sock.close()


@pytest.fixture
async def proxies(hive_settings: HiveSettings, upstream: Upstream) -> AsyncIterator[ModelProxies]:
    # A path in the upstream URL is a prefix of every forwarded path.
    served = ModelProxies(hive_settings, upstream=upstream.url + "/anthropic/")
    yield served
    await served.stop_all()


def client_for(path: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(path)),
        base_url="http://model-proxy",
        timeout=TIMEOUT,
    )


async def raw_request(
    path: Path, method: str, target: str | bytes, headers: bytes = b"host: model-proxy\r\n"
) -> tuple[int, bytes]:
    """One request sent byte for byte (an HTTP client library would normalise the target)."""
    target_bytes = target if isinstance(target, bytes) else target.encode()
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(
        method.encode()
        + b" "
        + target_bytes
        + b" HTTP/1.1\r\n"
        + headers
        + b"content-length: 0\r\nconnection: close\r\n\r\n"
    )
    raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@dataclass
class Bystander:
    """Another service on the host's loopback (the dashboard, say): it answers like one, with a
    CSRF token, and counts who reached it. Nothing through the proxy may."""

    port: int = 0
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.received += await reader.read(65536)
        body = b'{"csrf": "leaked-token"}'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def dashboard() -> AsyncIterator[Bystander]:
    bystander = Bystander()
    server = await asyncio.start_server(bystander.serve, "127.0.0.1", 0)
    bystander.port = server.sockets[0].getsockname()[1]
    async with server:
        yield bystander


# -- forwarding ------------------------------------------------------------------------------------


async def test_sse_streams_through_unbuffered_with_the_agents_headers(
    proxies: ModelProxies, upstream: Upstream
):
    path = await proxies.start("alice")
    request_body = json.dumps({"model": "m", "stream": True, "messages": []}).encode()
    async with (
        client_for(path) as http,
        http.stream(
            "POST",
            "/v1/messages?beta=true",
            content=request_body,
            headers={
                "x-api-key": "sk-test",
                "authorization": "Bearer tok",
                "anthropic-version": "2023-06-01",
                "anthropic-beta": "b1",
                "user-agent": "claude-cli/2.1.197",
                "connection": "keep-alive, x-hop",
                "keep-alive": "timeout=5",
                "x-hop": "only to the proxy",
            },
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-upstream"] == "yes"
        chunks = response.aiter_raw()
        # The first event arrives while the upstream still holds the stream open.
        first = await asyncio.wait_for(anext(chunks), TIMEOUT)
        assert b"message_start" in first
        assert not upstream.gate.is_set()
        upstream.gate.set()
        rest = b"".join([chunk async for chunk in chunks])
        assert b"message_stop" in rest

    seen = upstream.seen[-1]
    assert (seen.method, seen.path, seen.query) == ("POST", "/anthropic/v1/messages", "beta=true")
    assert seen.body == request_body
    assert seen.headers["x-api-key"] == "sk-test"
    assert seen.headers["authorization"] == "Bearer tok"
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-beta"] == "b1"
    assert seen.headers["user-agent"] == "claude-cli/2.1.197"
    assert seen.headers["host"] == upstream.url.removeprefix("http://")
    assert seen.headers["content-length"] == str(len(request_body))
    assert seen.headers.get("keep-alive") is None
    assert "x-hop" not in seen.headers


async def test_a_client_going_away_closes_the_upstream_stream(
    proxies: ModelProxies, upstream: Upstream
):
    path = await proxies.start("alice")
    async with client_for(path) as http:
        async with http.stream("POST", "/v1/messages", content=b"{}") as response:
            await asyncio.wait_for(anext(response.aiter_raw()), TIMEOUT)
        # The client hung up mid-stream: the proxy drops its upstream request too.
        await asyncio.wait_for(upstream.stream_closed.wait(), TIMEOUT)
    assert upstream.hung_up


async def test_only_the_model_api_is_forwarded(proxies: ModelProxies, upstream: Upstream):
    path = await proxies.start("alice")
    async with client_for(path) as http:
        probe = await http.head("/")
        assert probe.status_code == 200 and probe.content == b""
        assert (await http.get("/")).json() == {"path": "/anthropic/"}
        assert (await http.get("/v1/models")).json() == {"path": "/anthropic/v1/models"}
        for method, url, status in [
            ("GET", "/api/messages", 404),
            ("POST", "/mcp", 404),
            ("GET", "/v2/messages", 404),
            ("GET", "/v1", 404),
            ("POST", "/", 405),
            ("TRACE", "/v1/messages", 405),
        ]:
            response = await http.request(method, url)
            assert response.status_code == status, (method, url)
            error = response.json()
            assert error["type"] == "error" and "hive model proxy" in error["error"]["message"]
    # A path climbing out of /v1/ (sent raw: HTTP clients would normalise it).
    status, _ = await raw_request(path, "GET", "/v1/../admin")
    assert status == 400
    assert [s.path for s in upstream.seen] == ["/anthropic/", "/anthropic/", "/anthropic/v1/models"]


def test_model_paths() -> None:
    assert is_model_path("/") and is_model_path("/v1/messages")
    assert is_model_path("/v1/messages/count_tokens")
    assert is_model_path("/v1/models/claude-sonnet-4-5_x.y~z")
    for path in (
        *("", "/v1", "/v1/", "/v10/x", "/v1/../x", "/v1/./x", "/health", "//v1/x", "/v1//x"),
        *("/v1/x/", "/v1/a%2Fb", "/v1/%2e%2e", "/v1/@h", "/v1/a:1", "/v1/a\\b", "/v1/é"),
        *("%2Fv1%2F@127.0.0.1:7000/api/csrf", "http://h/v1/x", "*", "h:443"),
    ):
        assert not is_model_path(path), path


async def test_upstream_errors_pass_through_as_statuses(proxies: ModelProxies, upstream: Upstream):
    path = await proxies.start("alice")
    async with client_for(path) as http:
        limited = await http.post("/v1/limited", content=b"{}")
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "30"
        assert limited.headers["anthropic-ratelimit-requests-reset"] == "soon"
        assert limited.json()["error"]["type"] == "rate_limit_error"
        overloaded = await http.post("/v1/overloaded", content=b"{}")
        assert overloaded.status_code == 529
        assert overloaded.json()["error"]["type"] == "overloaded_error"


async def test_an_unreachable_upstream_is_a_502(hive_settings: HiveSettings):
    proxies = ModelProxies(hive_settings, upstream=f"http://127.0.0.1:{free_port()}")
    try:
        path = await proxies.start("alice")
        async with client_for(path) as http:
            response = await http.post("/v1/messages", content=b"{}")
        assert response.status_code == 502
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
        assert "cannot reach the model API" in body["error"]["message"]
    finally:
        await proxies.stop_all()


async def test_the_fake_model_answers_through_the_proxy(
    hive_settings: HiveSettings, fake_model: FakeAnthropic
):
    fake_model.script(Text("hello through the proxy"))
    # The upstream is the agents' ANTHROPIC_BASE_URL setting.
    settings = hive_settings.model_copy(
        update={"agent_extra_env": {"ANTHROPIC_BASE_URL": fake_model.base_url}}
    )
    proxies = ModelProxies(settings)
    assert proxies.upstream == fake_model.base_url
    try:
        path = await proxies.start("alice")
        body = {
            "model": "m",
            "max_tokens": 10,
            "stream": True,
            "tools": [{"name": "t", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "hi"}],
        }
        async with client_for(path) as http:
            response = await http.post("/v1/messages", json=body, headers={"x-api-key": "k"})
        assert response.status_code == 200
        events = [
            json.loads(line.removeprefix("data: "))
            for line in response.text.splitlines()
            if line.startswith("data: ")
        ]
        deltas = [e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta"]
        assert "".join(deltas) == "hello through the proxy"
        assert events[-1]["type"] == "message_stop"
    finally:
        await proxies.stop_all()


# -- hostile targets -------------------------------------------------------------------------------

# (method, target, status) answered by the proxy itself, with an Anthropic-style error body.
# `{dash}` is the bystander's port. The first ones are the hostile run's: decided on the decoded
# path, forwarded raw, they made the bystander the upstream URL's authority.
REFUSED_BY_THE_PROXY: list[tuple[str, str, int]] = [
    ("GET", "%2Fv1%2F@127.0.0.1:{dash}/api/csrf", 400),
    ("POST", "%2Fv1%2F@127.0.0.1:{dash}/api/approvals/1/approve", 400),
    ("GET", "%2fv1%2f@127.0.0.1:{dash}/api/csrf", 400),
    ("GET", "%2Fv1%2F%40127.0.0.1:{dash}/api/csrf", 400),
    ("GET", "@127.0.0.1:{dash}/v1/messages", 400),
    ("GET", "/v1%2F@127.0.0.1:{dash}/api/csrf", 400),
    ("GET", "/v1/@127.0.0.1:{dash}/api/csrf", 400),
    ("GET", "/v1/%40127.0.0.1:{dash}/api/csrf", 400),
    ("GET", "//127.0.0.1:{dash}/api/csrf", 400),
    ("GET", "//127.0.0.1:{dash}/v1/messages", 400),
    ("GET", "/v1//127.0.0.1:{dash}/api/csrf", 400),
    ("GET", "/v1/%2F%2F127.0.0.1:{dash}/api/csrf", 400),
    ("GET", "/v1/..%2F..%2Fapi/csrf", 400),
    ("GET", "/v1/%2e%2e/%2e%2e/api/csrf", 400),
    ("GET", "/v1/%2E%2E/api/csrf", 400),
    ("GET", "/v1/../api/csrf", 400),
    ("GET", "/v1/./messages", 400),
    ("GET", "/v1/messages/..", 400),
    ("GET", "/v1/%5c%5c127.0.0.1:{dash}/api/csrf", 400),
    ("GET", "/v1/\\\\127.0.0.1:{dash}/api/csrf", 400),
    ("GET", "/v1/messages%00", 400),
    ("GET", "/v1/messages%0d%0ahost:127.0.0.1:{dash}", 400),
    ("GET", "/v1/messages%25", 400),
    ("GET", "/%76%31/messages", 400),
    ("GET", "/v1/messages;@127.0.0.1:{dash}", 400),
    ("GET", "/v1/messages:{dash}", 400),
    ("POST", "/v1/messages/", 400),
    ("GET", "/v1/", 400),
    ("POST", "http://127.0.0.1:{dash}/v1/messages", 400),
    ("POST", "http://evil/v1/messages", 400),
    ("POST", "https://evil.example/v1/messages?beta=true", 400),
    ("CONNECT", "127.0.0.1:{dash}", 400),
    ("OPTIONS", "*", 400),
    ("POST", "/v1/messages?beta=true#@127.0.0.1:{dash}", 400),
    ("POST", "/v1/messages?beta=true#frag", 400),
    ("POST", "/v1/messages?beta=true@127.0.0.1:{dash}", 400),
    ("POST", "/v1/messages?next=http://127.0.0.1:{dash}/api/csrf", 400),
    ("POST", "/v1/messages?x=%0d%0ahost:%20evil", 400),
    ("POST", "/v1/messages?x=%00", 400),
    ("POST", "/v1/messages?x=%zz", 400),
    ("POST", "/v1/messages?x=%ff", 400),
    ("POST", "/v1/messages?x='1'", 400),
    ("GET", "/v1/" + "a" * 5000, 414),
    ("GET", "/v1/messages?" + "a=b&" * 1500, 414),
    ("GET", "/api/csrf", 404),
    ("GET", "/v1?x=..%2F..%2Fapi%2Fcsrf", 404),
    ("GET", "/V1/messages", 404),
    ("TRACE", "/v1/messages", 405),
    ("POST", "/", 405),
]
# Targets h11 refuses before the proxy sees them (uvicorn answers a plain 400).
REFUSED_BY_THE_PARSER: list[bytes] = [
    b"/v1/messages?a b",
    b"/v1/mess ages",
    b"/v1/messages\t",
    b"/v1/\xff",
    b"/v1/messages\x00",
    b"/v1/" + b"a" * 20000,
]


@pytest.mark.parametrize("prefix", ["", "/anthropic"])
async def test_hostile_targets_are_refused_and_reach_nothing(
    hive_settings: HiveSettings, upstream: Upstream, dashboard: Bystander, prefix: str
):
    # No prefix is the hostile run's set-up: `upstream + raw target` gave the bystander's port.
    proxies = ModelProxies(hive_settings, upstream=upstream.url + prefix)
    try:
        path = await proxies.start("alice")
        for method, template, expected in REFUSED_BY_THE_PROXY:
            target = template.format(dash=dashboard.port)
            status, body = await raw_request(path, method, target)
            assert status == expected, (method, target, body)
            error = json.loads(body)
            assert error["type"] == "error", target
            assert error["error"]["message"].startswith("hive model proxy: "), target
        for target_bytes in REFUSED_BY_THE_PARSER:
            status, body = await raw_request(path, "GET", target_bytes)
            assert 400 <= status < 500, (target_bytes, body)
        # The agent's own Host or forwarding headers name no destination either.
        upstream.gate.set()
        host = f"127.0.0.1:{dashboard.port}".encode()
        status, _ = await raw_request(
            path,
            "POST",
            "/v1/messages?beta=true",
            b"host: " + host + b"\r\nx-forwarded-host: " + host + b"\r\n"
            b"forwarded: host=" + host + b"\r\nx-forwarded-for: 10.0.0.1\r\n",
        )
        assert status == 200
    finally:
        await proxies.stop_all()
    assert dashboard.connections == 0 and dashboard.received == b""
    # Only the last, legitimate request reached the model API, with the upstream's own Host.
    assert [(s.method, s.path, s.query) for s in upstream.seen] == [
        ("POST", f"{prefix}/v1/messages", "beta=true")
    ]
    seen = upstream.seen[0].headers
    assert seen["host"] == upstream.url.removeprefix("http://")
    assert not {"x-forwarded-host", "forwarded", "x-forwarded-for"} & set(seen)


# What claude 2.1.197 sends (tests/fakes/anthropic_api.py), and API paths its binary names.
CLAUDE_REQUESTS: list[tuple[str, str, str]] = [
    ("HEAD", "/", ""),
    ("GET", "/", ""),
    ("POST", "/v1/messages", "beta=true"),
    ("POST", "/v1/messages/count_tokens", "beta=true"),
    ("GET", "/v1/models", "limit=1000"),
    ("GET", "/v1/models", "beta=true&limit=20&after_id=claude-sonnet-4-5-20250929"),
    ("GET", "/v1/models/claude-sonnet-4-5-20250929", ""),
    ("GET", "/v1/files", "beta=true&after_id=file_011CNha8iCJcU1wXNR6q4V8w"),
    ("GET", "/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d", "beta=true"),
    ("DELETE", "/v1/files/file_011CNha8iCJcU1wXNR6q4V8w", "beta=true"),
    # Form-encoded values survive re-encoding as they were: `+` a space, `%2B` a plus, …
    ("GET", "/v1/models", "q=a+b%2Bc%26d%3De%23f&flag&empty=&x=*,~"),
]


@pytest.mark.parametrize("prefix", ["", "/anthropic"])
async def test_claudes_requests_pass_unchanged(
    hive_settings: HiveSettings, upstream: Upstream, dashboard: Bystander, prefix: str
):
    upstream.gate.set()
    proxies = ModelProxies(hive_settings, upstream=upstream.url + prefix + "/")
    try:
        path = await proxies.start("alice")
        for method, target_path, query in CLAUDE_REQUESTS:
            target = target_path + (f"?{query}" if query else "")
            status, _ = await raw_request(path, method, target)
            assert status == 200, (method, target)
    finally:
        await proxies.stop_all()
    assert [(s.method, s.path, s.query) for s in upstream.seen] == [
        (method, prefix + target_path, query) for method, target_path, query in CLAUDE_REQUESTS
    ]
    assert dashboard.connections == 0


async def test_a_bug_in_the_proxy_is_a_502_logged_without_secrets(
    proxies: ModelProxies,
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    async def broken_send(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a message quoting x-api-key: sk-secret-123")

    monkeypatch.setattr(httpx2.AsyncClient, "send", broken_send)
    path = await proxies.start("alice")
    async with client_for(path) as http:
        response = await http.post(
            "/v1/messages", content=b'{"prompt": "private"}', headers={"x-api-key": "sk-secret-123"}
        )
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "api_error"
    assert error["message"].startswith("hive model proxy: internal error (RuntimeError)")
    assert "unexpected RuntimeError" in caplog.text
    assert "sk-secret" not in caplog.text + response.text
    assert "private" not in caplog.text
    assert upstream.seen == []


# -- the upstream ----------------------------------------------------------------------------------


def test_the_upstream_setting_wins_over_the_agents_env(hive_settings: HiveSettings) -> None:
    env = {"ANTHROPIC_BASE_URL": "http://from-extra-env:1"}
    both = hive_settings.model_copy(
        update={"model_base_url": "https://gw.example/anthropic", "agent_extra_env": env}
    )
    assert upstream_url(both) == "https://gw.example/anthropic"
    assert ModelProxies(both).upstream == "https://gw.example/anthropic"
    env_only = hive_settings.model_copy(update={"model_base_url": "", "agent_extra_env": env})
    assert upstream_url(env_only) == "http://from-extra-env:1"
    neither = hive_settings.model_copy(update={"model_base_url": "", "agent_extra_env": {}})
    assert upstream_url(neither) == "https://api.anthropic.com"


async def test_the_upstreams_path_is_kept_as_a_prefix(
    hive_settings: HiveSettings, upstream: Upstream
):
    settings = hive_settings.model_copy(
        update={
            "model_base_url": upstream.url + "/gw/anthropic/",
            "agent_extra_env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:1"},
        }
    )
    proxies = ModelProxies(settings)
    try:
        path = await proxies.start("alice")
        async with client_for(path) as http:
            assert (await http.get("/v1/models?limit=5")).status_code == 200
    finally:
        await proxies.stop_all()
    assert [(s.path, s.query) for s in upstream.seen] == [("/gw/anthropic/v1/models", "limit=5")]


def test_upstream_urls_are_parsed_once() -> None:
    gateway = UpstreamURL.parse("HTTPS://GW.example:8443/anthropic/")
    assert str(gateway) == "https://gw.example:8443/anthropic"
    assert str(UpstreamURL.parse("http://[::1]:8080")) == "http://[::1]:8080"
    assert str(UpstreamURL.parse("https://api.anthropic.com")) == "https://api.anthropic.com"
    with pytest.raises(ModelProxyError, match="is empty"):
        UpstreamURL.parse("")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://user:pw@gw.example/", "user name or password"),
        ("https://key@gw.example/", "user name or password"),
        ("https://gw.example/?key=1", "query or a fragment"),
        ("https://gw.example/anthropic#x", "query or a fragment"),
        ("ftp://gw.example/", "not an http"),
        ("gw.example", "not an http"),
        ("http://", "no host"),
        ("http://gw%2eexample/", "no host, or an escaped one"),
        ("http://gw.example:99999/", "not a valid URL"),
        ("http://gw.example:port/", "not a valid URL"),
        ("http://gw example/", "whitespace"),
        ("http://gw.example\\@evil/", "backslash"),
    ],
)
def test_a_bad_upstream_is_refused_when_built(
    hive_settings: HiveSettings, url: str, says: str
) -> None:
    settings = hive_settings.model_copy(update={"model_base_url": url})
    with pytest.raises(ModelProxyError, match=says) as refused:
        ModelProxies(settings)
    assert "HIVE_MODEL_BASE_URL" in str(refused.value)
    with pytest.raises(ModelProxyError, match=says):
        UpstreamURL.parse(url)


# -- the socket ------------------------------------------------------------------------------------


async def test_socket_modes_idempotent_start_and_stop(
    hive_settings: HiveSettings, upstream: Upstream
):
    proxies = ModelProxies(hive_settings, upstream=upstream.url)
    try:
        path = await proxies.start("alice")
        assert (
            path
            == model_socket_path(hive_settings, "alice")
            == (hive_settings.agent_run_dir("alice") / "model.sock")
        )
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert await proxies.start("alice") == path
        assert proxies.running() == {"alice"}
        # A second hive-c0re on the same run dir is refused while this one serves.
        other = ModelProxies(hive_settings, upstream=upstream.url)
        with pytest.raises(ModelProxyError, match="another process is serving"):
            await other.start("alice")
        await proxies.stop("alice")
        assert not path.exists() and proxies.running() == set()
        await proxies.stop("alice")  # a no-op
    finally:
        await proxies.stop_all()


async def test_a_stale_socket_is_replaced_and_a_file_refused(
    hive_settings: HiveSettings, upstream: Upstream
):
    path = model_socket_path(hive_settings, "alice")
    path.parent.mkdir(parents=True, mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # bound, never listening: what a killed process leaves
    proxies = ModelProxies(hive_settings, upstream=upstream.url)
    try:
        await proxies.start("alice")
        async with client_for(path) as http:
            assert (await http.get("/")).status_code == 200
        await proxies.stop_all()
        path.write_text("not a socket")
        with pytest.raises(ModelProxyError, match="is not a socket"):
            await proxies.start("alice")
    finally:
        await proxies.stop_all()


# -- hive-agent run in front of it -----------------------------------------------------------------


async def test_hive_agent_run_forwards_a_loopback_port_to_the_socket(
    proxies: ModelProxies, upstream: Upstream
):
    path = await proxies.start("alice")
    port = free_port()
    code = (
        "import json, sys, urllib.request\n"
        "data = sys.stdin.read()\n"
        f"r = urllib.request.urlopen('http://127.0.0.1:{port}/v1/models?x=' + data, timeout=10)\n"
        "print(json.load(r)['path'], r.status)\n"
        "sys.exit(7)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        str(HIVE_AGENT),
        "run",
        "--model-socket",
        str(path),
        "--port",
        str(port),
        "--",
        sys.executable,
        "-c",
        code,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_PROXY": "*"},
    )
    out, err = await asyncio.wait_for(proc.communicate(b"fromstdin"), 30)
    # stdin reached the child, its stdout came back untouched, and its exit code is ours.
    assert proc.returncode == 7, err.decode()
    assert out.decode() == "/anthropic/v1/models 200\n"
    assert upstream.seen[-1].query == "x=fromstdin"


async def test_hive_agent_run_without_the_socket_still_runs_the_command(tmp_path: Path):
    port = free_port()
    code = (
        "import urllib.request, urllib.error\n"
        "try:\n"
        f"    urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=10)\n"
        "except (urllib.error.URLError, ConnectionError) as e:\n"
        "    print('failed')\n"
    )
    proc = await asyncio.create_subprocess_exec(
        str(HIVE_AGENT),
        "run",
        "--model-socket",
        str(tmp_path / "missing.sock"),
        "--port",
        str(port),
        "--",
        sys.executable,
        "-c",
        code,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_PROXY": "*"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert out.decode() == "failed\n"
    assert "cannot reach the model proxy" in err.decode()


def test_sandbox_run_imports_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import agent_harness.sandbox_run, agent_harness.cli\n"
        "heavy = ('temporalio', 'sqlalchemy', 'sqlmodel', 'fastapi', 'httpx', 'httpx2', 'mcp',"
        " 'uvicorn', 'starlette', 'anyio', 'pydantic')\n"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_a_request_that_never_finishes_is_closed_at_the_deadline(tmp_path: Path) -> None:
    # The model socket is inside the agent's sandbox: a slowloris from there is cut off too.
    run_dir = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        settings = HiveSettings(state_dir=tmp_path, run_dir=run_dir, http_header_timeout_s=0.5)
        proxies = ModelProxies(settings, upstream="http://127.0.0.1:9")
        path = await proxies.start("alice")
        try:
            for partial in (
                b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n",
                b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9\r\n\r\n{",
            ):
                reader, writer = await asyncio.open_unix_connection(str(path))
                writer.write(partial)
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(), 5)
                assert not answer.startswith(b"HTTP/1.1 2"), answer
                writer.close()
        finally:
            await proxies.stop_all()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
