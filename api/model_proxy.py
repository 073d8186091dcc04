"""Each sandboxed agent's only way out: a reverse proxy to the model API on a unix socket.

A bwrap sandbox shares no network with the host (`--unshare-all`: only its own loopback), so
claude inside cannot reach the model API, and nothing else on the host either (DESIGN §1). For
each agent hive-c0re serves this proxy on `<run>/agents/<name>/model.sock`, which the sandbox sees
at /run/hive/model.sock; inside, `hive-agent run` (agent_harness.sandbox_run) forwards
127.0.0.1:PORT to it and claude runs with `ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`.

The upstream and which requests may reach it are api.model_target's: the upstream URL is
parsed once, and a request's target (its raw path and query) is checked and re-encoded before
anything is forwarded, so the agent, untrusted, can never name another host or port. Origin-form
`/` and `/v1/…` pass; everything else gets a 4xx with an Anthropic-style error body saying what
was refused (413 for a body too large, the rest as model_target decides). The socket is not a
way to the host's other services.

Request headers go through as sent (x-api-key, authorization, anthropic-*) minus hop-by-hop
ones and Host (the HTTP client sets the upstream's own); redirects are not followed. The
response's status, headers and body come back unchanged and unbuffered (SSE streams chunk by
chunk, compressed bodies as they are). Upstream errors are the upstream's statuses and bodies;
when the upstream cannot be reached the proxy answers 502 (504 on a timeout), and a bug of its
own is a 502 too, logged without the request's headers or body (they carry API keys).

The HTTP client honours hive-c0re's HTTPS_PROXY/NO_PROXY environment (trust_env) and the system's
trust store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

import httpx2

from api.asgi_body import send_json
from api.http_protocol import header_deadline_protocol
from api.model_target import (
    ModelProxyError,
    RefusedTarget,
    UpstreamURL,
    check_method,
    parse_target,
    shown_target,
    upstream_url,
)
from api.unix_socket import AgentApp, PerAgentServers
from hyperhive.settings import HiveSettings

log = logging.getLogger(__name__)

MODEL_SOCKET_NAME = "model.sock"
# claude bounds one API request itself (API_TIMEOUT_MS, 10 min by default); stay above it.
UPSTREAM_TIMEOUT = httpx2.Timeout(connect=15.0, read=900.0, write=120.0, pool=30.0)
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# RFC 9110 §7.6.1 plus the usual non-standard ones; never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Host and content-length are set again by the client for the upstream request. The agent is
# not forwarded from anywhere: a gateway upstream may route or trust on these, so none pass.
REQUEST_DROPPED = HOP_BY_HOP | {
    "host",
    "content-length",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-real-ip",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def model_socket_path(settings: HiveSettings, agent: str) -> Path:
    return settings.agent_run_dir(agent) / MODEL_SOCKET_NAME


def _error_body(status: int, kind: str, message: str) -> tuple[int, bytes]:
    body = {"type": "error", "error": {"type": kind, "message": f"hive model proxy: {message}"}}
    return status, json.dumps(body).encode()


def _where(e: BaseException) -> str:
    """An exception's type and where it was raised, never its message: that may quote a header
    (an API key) or the request body."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return type(e).__name__
    last = frames[-1]
    return f"{type(e).__name__} at {Path(last.filename).name}:{last.lineno} in {last.name}"


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class _TrackedSend:
    """`send`, remembering whether the response has started (after that, no error answer)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class ModelProxyApp:
    """The ASGI app of one agent's proxy (a raw ASGI app: nothing may buffer the stream)."""

    def __init__(self, agent: str, upstream: UpstreamURL | str, client: httpx2.AsyncClient) -> None:
        self.agent = agent
        self.upstream = (
            upstream if isinstance(upstream, UpstreamURL) else UpstreamURL.parse(upstream)
        )
        self.client = client
        self.started = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.started.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracked = _TrackedSend(send)
        try:
            await self._forward(scope, receive, tracked)
        except Exception as e:
            # httpx's messages name no header; anything else may quote one, so only its place.
            what = repr(e) if isinstance(e, httpx2.HTTPError) else _where(e)
            if tracked.started:
                # Typically the upstream's stream broke after its headers went out. Returning
                # without ending the body makes the server drop the connection, so the client
                # sees a truncated response, never a falsely complete one.
                log.warning("model proxy for %s: the response broke off: %s", self.agent, what)
                return
            log.error("model proxy for %s: unexpected %s", self.agent, what)
            await send_json(
                send,
                *_error_body(
                    502,
                    "api_error",
                    f"internal error ({type(e).__name__}); hive-c0re's log has where",
                ),
            )

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        # The raw target, as sent: deciding on the decoded path and forwarding something else
        # is how `%2Fv1%2F@host:port/…` once reached another host.
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string") or b""
        try:
            target = parse_target(raw_path, query)
            if scope["path"] != target.path:
                raise RefusedTarget("the path decodes differently from how it was sent")
            check_method(method, target)
        except RefusedTarget as refused:
            shown = shown_target(raw_path, query)
            log.warning(
                "model proxy for %s refused %s %r: %s", self.agent, method, shown, refused.message
            )
            await send_json(
                send,
                *_error_body(refused.status, refused.kind, f"{method} {shown}: {refused.message}"),
            )
            return
        try:
            body = await _read_body(receive)
        except _TooLarge:
            await send_json(
                send,
                *_error_body(413, "request_too_large", f"request over {MAX_REQUEST_BYTES} bytes"),
            )
            return
        except _Disconnected:
            return
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        dropped = REQUEST_DROPPED | _connection_tokens(raw_headers)
        headers = [
            (name, value)
            for name, value in raw_headers
            if name.decode("latin-1").lower() not in dropped
        ]
        url = self.upstream.url_for(target)
        request = self.client.build_request(method, url, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx2.TimeoutException as e:
            log.warning(
                "model proxy for %s: %s %s timed out: %r", self.agent, method, target.path, e
            )
            await send_json(
                send, *_error_body(504, "api_error", f"the model API timed out ({self.upstream})")
            )
            return
        except httpx2.HTTPError as e:
            log.warning("model proxy for %s: %s %s failed: %r", self.agent, method, target.path, e)
            await send_json(
                send,
                *_error_body(
                    502, "api_error", f"cannot reach the model API at {self.upstream}: {e}"
                ),
            )
            return
        try:
            await _until_disconnected(receive, _relay(response, send, head=method == "HEAD"))
        finally:
            await response.aclose()


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[str]:
    """Header names a `Connection` header declares hop-by-hop (RFC 9110 §7.6.1)."""
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
        if token.strip()
    }


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _relay(response: httpx2.Response, send: Send, *, head: bool) -> None:
    """The upstream's status, headers and raw body, each chunk sent as soon as it arrives."""
    dropped = HOP_BY_HOP | _connection_tokens(response.headers.raw)
    headers = [
        (name, value)
        for name, value in response.headers.raw
        if name.decode("latin-1").lower() not in dropped
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    if not head:
        # A broken upstream stream raises here, after the headers (see ModelProxyApp._http).
        async for chunk in response.aiter_raw():
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnected(receive: Receive, work: Awaitable[None]) -> None:
    """Run `work`, cancelling it if the client goes away (then the upstream request is closed)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if not task.cancelled():
        task.result()  # the relay's own failure, if any


class ModelProxies(PerAgentServers):
    """One model proxy per agent, each on `<settings.agent_run_dir(agent)>/model.sock`.

    Started for the agents of a backend whose sandboxes have no network (`needs_model_proxy`);
    `start` is idempotent, `stop`/`stop_all` remove the sockets. A bad upstream URL is refused
    here, when hive-c0re starts, rather than at an agent's first request.
    """

    label = "model proxy"
    error = ModelProxyError

    def __init__(self, settings: HiveSettings, *, upstream: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.upstream = upstream or upstream_url(settings)
        self._upstream = UpstreamURL.parse(self.upstream)

    def socket_path(self, agent: str) -> Path:
        return model_socket_path(self.settings, agent)

    def build(self, agent: str) -> AgentApp:
        client = httpx2.AsyncClient(timeout=UPSTREAM_TIMEOUT, follow_redirects=False)
        # Only the agent's own headers go upstream: no user-agent/accept-encoding of ours.
        client.headers.clear()
        app = ModelProxyApp(agent, self._upstream, client)
        return AgentApp(
            app,
            app.started,
            after_stop=client.aclose,
            uvicorn_options={
                "server_header": False,
                "date_header": False,
                # h11 hands the app the target exactly as sent; httptools would silently drop
                # the host of an absolute-form target and any fragment before the app sees them.
                # With a deadline for the request: the socket is in the agent's sandbox.
                "http": header_deadline_protocol(self.settings.http_header_timeout_s),
                "ws": "none",
            },
        )
